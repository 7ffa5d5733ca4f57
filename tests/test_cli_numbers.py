"""``otpguard numbers explain`` and ``GET /v1/phone-numbers/{number}``: one answer."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from otpguard.cli import main
from otpguard.config import Settings

from .conftest import ApiClient


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The CLI reads the environment and ./otpguard.toml: start from neither."""
    for name in list(os.environ):
        if name.startswith("OTPGUARD_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def explain(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = main(["numbers", "explain", *args])
    out, err = capsys.readouterr()
    return rc, out, err


def test_explain_a_mobile(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = explain(capsys, "07400 123456")
    assert rc == 0
    assert out.splitlines() == [
        "number   +447400123456",
        "country  GB",
        "type     mobile",
        "sms      allowed",
        "whatsapp allowed",
        "voice    allowed",
    ]


@pytest.mark.parametrize(
    ("number", "type_", "sms", "voice"),
    [
        ("+449012345678", "premium_rate", "refused (premium_rate)", "refused (premium_rate)"),
        ("+448712345678", "premium_rate", "refused (premium_rate)", "refused (premium_rate)"),
        ("+441212345678", "fixed_line", "refused (number_type:fixed_line)", "allowed"),
        ("+447640123456", "pager", "refused (number_type:pager)", "refused (number_type:pager)"),
        ("+445612345678", "voip", "refused (number_type:voip)", "refused (number_type:voip)"),
    ],
)
def test_explain_refusals(
    capsys: pytest.CaptureFixture[str], number: str, type_: str, sms: str, voice: str
) -> None:
    rc, out, _ = explain(capsys, number)
    lines = out.splitlines()
    assert rc == 0
    assert lines[2] == f"type     {type_}"
    assert lines[3] == f"sms      {sms}"
    assert lines[5] == f"voice    {voice}"


def test_explain_follows_the_settings(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    rc, out, _ = explain(capsys, "+447781123456")
    assert rc == 0 and "country  GG" in out
    assert out.count("refused (country_not_allowed)") == 3
    monkeypatch.setenv("OTPGUARD_ALLOWED_COUNTRIES", "GB,GG")
    monkeypatch.setenv("OTPGUARD_BLOCKLIST", "07400")
    rc, out, _ = explain(capsys, "+447781123456")
    assert rc == 0 and out.count("allowed") == 3 and "refused" not in out
    rc, out, _ = explain(capsys, "+447400123456")
    assert rc == 0 and out.count("refused (blocklisted)") == 3


def test_explain_json(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = explain(capsys, "+441212345678", "--json")
    assert rc == 0
    assert json.loads(out) == {
        "number": "+441212345678",
        "country": "GB",
        "type": "fixed_line",
        "allowlisted": False,
        "channels": {
            "sms": {"allowed": False, "reason": "number_type:fixed_line"},
            "whatsapp": {"allowed": False, "reason": "number_type:fixed_line"},
            "voice": {"allowed": True, "reason": None},
        },
    }


def test_explain_an_invalid_number(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = explain(capsys, "+44 7400")
    assert rc == 1 and out == ""
    assert err.startswith("otpguard: invalid_phone_number:")


@pytest.mark.parametrize(
    "number", ["+447400123456", "+449012345678", "+441212345678", "+447781123456"]
)
async def test_api_gives_the_same_answer(
    api_factory: Callable[..., Any],
    settings_factory: Callable[..., Settings],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    number: str,
) -> None:
    settings = settings_factory(allowlist=["+447400"])
    monkeypatch.setenv("OTPGUARD_ALLOWLIST", "+447400")
    rc, out, _ = explain(capsys, number, "--json")
    monkeypatch.delenv("OTPGUARD_ALLOWLIST")
    assert rc == 0
    async with api_factory(settings) as api:
        client: ApiClient = api
        r = await client.get(f"/v1/phone-numbers/{quote(number)}")
    assert r.status_code == 200
    assert r.json() == json.loads(out)
    assert r.json()["allowlisted"] is number.startswith("+447400")


async def test_api_invalid_number_and_auth(api: ApiClient) -> None:
    r = await api.get("/v1/phone-numbers/12")
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_phone_number"
    r = await api.http.get("/v1/phone-numbers/%2B447400123456")
    assert r.status_code == 401
