"""The challenge step's samples in docs/abuse-defenses.md, run exactly as written: the
428 body is what the server answers, and the backend function works against a real
``otpguard serve`` that checks tokens with the fake siteverify challenge_server."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from otpguard.client import Client

from .fake_siteverify import FakeSiteverify, challenge_server, siteverify
from .serverproc import Server, fresh_number

__all__ = ["challenge_server", "siteverify"]  # fixtures, for pytest

pytestmark = pytest.mark.slow

DOC = Path(__file__).resolve().parent.parent / "docs" / "abuse-defenses.md"


def section_blocks(lang: str) -> list[str]:
    text = DOC.read_text()
    start = text.index("## Challenge step")
    end = text.find("\n## ", start + 1)
    section = text[start : end if end != -1 else len(text)]
    return re.findall(rf"```{lang}\n(.*?)```", section, flags=re.S)


def test_the_documented_428_body_is_the_servers(challenge_server: Server) -> None:
    [documented] = section_blocks("json")
    r = httpx.post(
        f"{challenge_server.base_url}/v1/verifications",
        headers={"Authorization": f"Bearer {challenge_server.api_key}"},
        json={"to": fresh_number()},
    )
    assert r.status_code == 428
    assert r.json() == json.loads(documented)


def test_the_documented_backend_function(
    challenge_server: Server, siteverify: FakeSiteverify
) -> None:
    [sample] = section_blocks("python")
    namespace: dict[str, Any] = {}
    exec(compile(sample, str(DOC), "exec"), namespace)  # noqa: S102 - our own docs
    send_code = namespace["send_code"]
    to = fresh_number()
    with Client(challenge_server.base_url, challenge_server.api_key) as otp:
        first = send_code(otp, to, "203.0.113.7")
        assert first == {
            "captcha": "turnstile",
            "site_key": challenge_server.env["OTPGUARD_CHALLENGE_SITE_KEY"],
            "failed": False,
        }
        forged = send_code(otp, to, "203.0.113.7", "XXXX.FAKE.forged")
        assert forged["failed"] is True
        with pytest.raises(LookupError):
            challenge_server.last_code_to(to)
        sent = send_code(otp, to, "203.0.113.7", siteverify.issue())
        assert set(sent) == {"verification_id"}
        code = challenge_server.last_code(sent["verification_id"])
        assert otp.check(
            code, verification_id=sent["verification_id"], client_ip="203.0.113.7"
        ).valid
    assert siteverify.requests[-1].form["remoteip"] == "203.0.113.7"
