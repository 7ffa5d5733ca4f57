"""docs/webhooks.md's blocks, run as written (listed in test_documented_path.ELSEWHERE)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from otpguard.events import Event, EventType
from otpguard.webhook_signature import sign_webhook
from otpguard.webhooks import encode, payload

from .conftest import TEST_KEY
from .test_documented_path import bash, clean_env, doc_block

DOC = "docs/webhooks.md"
SIGNATURE_LINE = (
    "Otpguard-Signature: t=1800000000,"
    "v1=17a2f71e47fce010af64e793e2cb93c6b6992012ae55d19dbde81ee66390ca99"
)
SAMPLE = "from otpguard.client import WebhookSignatureError, verify_webhook"
SETUP = "KEY_ID=$(otpguard api-keys create --name shop | tail -n 1 | cut -d_ -f2)"


def documented_payload() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(doc_block(DOC, "{").text)
    return data


@pytest.mark.slow  # runs the documented CLI session
def test_setup_commands(tmp_path: Path) -> None:
    block = doc_block(DOC, SETUP)
    env = clean_env(
        OTPGUARD_STORE=f"sqlite:///{tmp_path / 'otp.db'}",
        OTPGUARD_SECRET_KEYS=TEST_KEY,
        OTPGUARD_DATA_DIR=str(tmp_path / "data"),
    )
    done = bash(block.text, env, tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    secret = next(line for line in lines if line.startswith("whsec_"))
    assert len(secret) == len("whsec_") + 64
    assert any("https://app.example.com/otpguard/webhooks" in line for line in lines)
    assert lines[-1].split()[:3] == ["CREATED", "(UTC)", "TYPE"]  # the log: nothing failed


def test_the_documented_payload_is_what_otpguard_posts() -> None:
    doc = documented_payload()
    event = Event(
        type=EventType.CHECK_PASSED,
        ts=doc["created_at"],
        id=doc["id"],
        verification_id=doc["verification_id"],
        number_masked=doc["to"],
        country=doc["country"],
        channel=doc["channel"],
        owner=doc["api_key"],
    )
    assert payload(event, "approved", "approved") == doc


def test_the_documented_signature() -> None:
    header = doc_block(DOC, SIGNATURE_LINE).text
    body = encode(documented_payload()).encode()
    name, value = header.strip().split(": ")
    assert name == "Otpguard-Signature"
    assert value == sign_webhook(body, "whsec_" + "0" * 64, 1_800_000_000)


def test_the_python_receiver() -> None:
    seen: set[str] = set()
    verified: list[str] = []

    def already_seen(event_id: str) -> bool:
        if event_id in seen:
            return True
        seen.add(event_id)
        return False

    namespace: dict[str, Any] = {
        "already_seen": already_seen,
        "mark_phone_verified": verified.append,
    }
    exec(doc_block(DOC, SAMPLE).text, namespace)  # noqa: S102 - the documented sample
    handle = namespace["handle"]
    secret = "whsec_" + "ab" * 32
    body = encode(documented_payload()).encode()
    headers = {"Otpguard-Signature": sign_webhook(body, secret, int(time.time()))}
    assert handle(body, headers, secret) == 200
    assert handle(body, headers, secret) == 200  # a retry: handled once
    assert verified == [documented_payload()["verification_id"]]
    assert handle(body.replace(b"approved", b"canceled"), headers, secret) == 400
    old = {"Otpguard-Signature": sign_webhook(body, secret, int(time.time()) - 301)}
    assert handle(body, old, secret) == 400
