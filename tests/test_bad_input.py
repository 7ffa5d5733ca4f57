"""Bad input from the network gets a 4xx, never a 500 or a traceback in the log.

Digits are ASCII digits everywhere: ``str.isdigit()`` is true for superscript
one (which ``int()`` refuses: a 500) and for Arabic-Indic one-zero (which ``int()``
reads as 10), and ``re``'s ``\\d`` matches the latter.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from typing import Any

import pytest

from otpguard.config import Settings
from otpguard.errors import InvalidRequest
from otpguard.sinks import sign, verify_signature
from otpguard.stats import parse_window

from .conftest import UK_MOBILE, ApiClient
from .fake_twilio import twilio_signature

PUBLIC = "https://otp.example.com"
TOKEN = "fake-auth-token-0123456789abcdef"


def no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    bad = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert bad == [], [r.getMessage() for r in bad]


def basic(key: str) -> dict[str, str]:
    user = "og_" + key.split("_")[1]
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{key}".encode()).decode()}


async def test_dashboard_login_with_too_many_fields(
    api: ApiClient, caplog: pytest.LogCaptureFixture
) -> None:
    form = {f"f{i}": "x" for i in range(11)}
    r = await api.http.post("/dashboard/login", data=form)
    assert r.status_code == 400
    r = await api.http.post("/dashboard/logout", data=form)
    assert r.status_code == 303
    no_traceback(caplog)


@pytest.mark.parametrize("length", ["¹", "١٠", "６", "1٠", "+8", " 8", "0x8", "8" * 5000])
async def test_v2_code_length_is_ascii_digits(
    api: ApiClient, caplog: pytest.LogCaptureFixture, length: str
) -> None:
    form = {"FriendlyName": "Shop", "CodeLength": length}
    r = await api.http.post("/v2/Services", data=form, headers=basic(api.key))
    assert r.status_code == 400 and r.json()["code"] == 60200
    assert "CodeLength" in r.json()["message"]
    r = await api.http.post("/v2/Services", data={"FriendlyName": "Shop"}, headers=basic(api.key))
    sid = r.json()["sid"]
    r = await api.http.post(f"/v2/Services/{sid}", data=form, headers=basic(api.key))
    assert r.status_code == 400 and r.json()["code"] == 60200
    no_traceback(caplog)


async def test_v2_locale_is_ascii(api: ApiClient) -> None:
    r = await api.http.post("/v2/Services", data={"FriendlyName": "Shop"}, headers=basic(api.key))
    url = f"/v2/Services/{r.json()['sid']}/Verifications"
    form = {"To": UK_MOBILE, "Channel": "sms", "Locale": "ｆｒ"}
    r = await api.http.post(url, data=form, headers=basic(api.key))
    assert r.status_code == 400 and "Locale" in r.json()["message"]


@pytest.mark.parametrize("window", ["١h", "１h", "²d"])
def test_stats_windows_are_ascii(window: str) -> None:
    with pytest.raises(InvalidRequest):
        parse_window(window)


async def test_admin_event_times_are_finite(
    api_factory: Callable[..., Any], settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    async with api_factory(settings, scopes=("monitor",)) as api:
        for value in ("nan", "inf", "-inf", "1e400"):
            r = await api.get("/v1/admin/events", params={"since": value})
            assert r.status_code == 422, value
        r = await api.get("/v1/admin/stats", params={"window": "١h"})
        assert r.status_code == 400
    no_traceback(caplog)


async def test_twilio_callback_error_code_is_ascii(
    api_factory: Callable[..., Any],
    settings_factory: Callable[..., Settings],
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = settings_factory(public_url=PUBLIC, twilio_auth_token=TOKEN)
    async with api_factory(settings) as api:
        v = await api.verifier.start(UK_MOBILE, client_ip="192.0.2.1")
        sid = "MM00000001"  # the memory transport's id for its first message
        path = f"/webhooks/twilio/status?vid={v.id}"
        for code in ("¹", "١٢٣", "9" * 400):
            form = {"MessageSid": sid, "MessageStatus": "failed", "ErrorCode": code}
            headers = {"X-Twilio-Signature": twilio_signature(TOKEN, PUBLIC + path, form)}
            r = await api.http.post(path, data=form, headers=headers)
            assert r.status_code == 204, code
    no_traceback(caplog)


@pytest.mark.parametrize("timestamp", ["nan", "inf", "-inf"])
def test_webhook_signatures_need_a_finite_timestamp(timestamp: str) -> None:
    """A signed "nan" was never "too old", so it verified for ever."""
    body = b'{"alert": 1}'
    signature = sign("s3cret", timestamp, body)
    assert not verify_signature("s3cret", timestamp, body, signature, now=1e9)
