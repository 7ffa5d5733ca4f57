"""The email channel end to end through the HTTP API (/v1 and /v2), delivered by a
real SMTP session to a local relay (STARTTLS or implicit TLS with a private CA,
authentication) and by SendGrid's API to a local fake that checks the request.

Codes are read where a person would read them: from the mail the relay received,
or the Mail Send request SendGrid received. No response, log line or event holds
the code or the whole address."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from otpguard.apikeys import create_api_key
from otpguard.clock import ManualClock
from otpguard.config import Settings
from otpguard.errors import ConfigError
from otpguard.service import Verifier
from otpguard.startup import check_startup
from otpguard.stores import EventQuery, store_from_url
from otpguard.transports import email_transport_from_settings
from otpguard.transports.memory import MemoryTransport
from otpguard.web.app import create_app

from . import fake_sendgrid, fake_smtp
from .conftest import ApiClient, make_settings
from .fake_sendgrid import FakeSendGrid
from .fake_smtp import LocalRelay
from .needs import free_port

# Warnings of the local relay, not ours: aiosmtpd 1.4 itself sets its deprecated
# Session.login_data on every successful AUTH (smtp_AUTH), and warns about AUTH without
# required TLS for the implicit-TLS relay, whose TLS it does not count (fake_smtp.py).
pytestmark = [
    pytest.mark.filterwarnings("ignore:Session.login_data is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning"),
]

TO = "Jo.Smith@Example.com"
ADDRESS = "jo.smith@example.com"


@contextlib.asynccontextmanager
async def email_api(settings: Settings, clock: ManualClock) -> AsyncIterator[ApiClient]:
    """The app with the email transport the settings name (and a memory phone outbox)."""
    verifier = Verifier(
        settings,
        store_from_url(settings.store_url),
        MemoryTransport(),
        clock=clock,
        email_transport=email_transport_from_settings(settings),
    )
    app = create_app(settings, verifier, clock=clock, background=False)
    async with app.router.lifespan_context(app):
        _, key = await create_api_key(verifier.store, "tests", ("verify",), clock())
        transport = httpx.ASGITransport(app=app, client=("203.0.113.50", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield ApiClient(http, verifier, key)


def assert_nothing_leaks(api: ApiClient, caplog: pytest.LogCaptureFixture, code: str) -> None:
    """Every log line of this process (but the local relay's own, ``mail.log``: it is
    the mailbox side) and every response."""
    logged = "\n".join(
        f"{r.getMessage()} {r.args!r}" for r in caplog.records if not r.name.startswith("mail.")
    )
    assert "otpguard.events" in {r.name for r in caplog.records}, "the scan would prove nothing"
    for text in [logged, *(r.text for r in api.responses)]:
        assert code not in text
        assert ADDRESS not in text.lower() and "jo.smith" not in text.lower()


async def start(api: ApiClient, to: str = TO) -> httpx.Response:
    return await api.post("/v1/verifications", json={"to": to, "channel": "email"})


@pytest.mark.parametrize("tls", ["starttls", "implicit"])
async def test_smtp_end_to_end(
    tmp_path: Path, clock: ManualClock, caplog: pytest.LogCaptureFixture, tls: str
) -> None:
    caplog.set_level(logging.DEBUG)
    with LocalRelay(tmp_path, tls=tls) as relay:  # type: ignore[arg-type]
        settings = make_settings(tmp_path, **relay.settings(service_name="Acme"))
        async with email_api(settings, clock) as api:
            r = await start(api)
            assert r.status_code == 201, r.text
            body = r.json()
            assert body["to"] == "j***@e***.com" and body["channel"] == "email"
            [mail] = relay.inbox
            assert relay.envelopes == [("codes@example.com", [ADDRESS])]
            assert mail["To"] == ADDRESS and mail["From"] == "Acme <codes@example.com>"
            assert mail.get_content_type() == "multipart/alternative"
            code = fake_smtp.code_in(mail)
            html = mail.get_body(preferencelist=("html",))
            assert html is not None and code in html.get_content()
            r = await api.post("/v1/verifications/check", json={"id": body["id"], "code": code})
            assert r.status_code == 200 and r.json()["status"] == "approved", r.text
            events = await api.verifier.store.list_events(EventQuery(limit=50))
    assert {e.details.get("provider") for e in events if e.type == "verification.sent"} == {"smtp"}
    assert all(ADDRESS not in e.to_json() and code not in e.to_json() for e in events)
    assert_nothing_leaks(api, caplog, code)


async def test_check_by_address(tmp_path: Path, clock: ManualClock) -> None:
    with LocalRelay(tmp_path) as relay:
        settings = make_settings(tmp_path, **relay.settings())
        async with email_api(settings, clock) as api:
            assert (await start(api)).status_code == 201
            code = fake_smtp.code_in(relay.inbox[-1])
            r = await api.post("/v1/verifications/check", json={"to": "JO.SMITH@example.com",
                                                                "code": code})  # fmt: skip
            assert r.status_code == 200 and r.json()["status"] == "approved"


async def test_smtp_refused_recipient_is_remembered(tmp_path: Path, clock: ManualClock) -> None:
    with LocalRelay(tmp_path, refuse={ADDRESS}) as relay:
        settings = make_settings(tmp_path, **relay.settings())
        async with email_api(settings, clock) as api:
            r = await start(api)
            assert r.status_code == 502 and r.json()["error"]["reason"] == ("invalid_address")
            r = await start(api)  # known undeliverable: refused before any session
            assert r.status_code == 403 and r.json()["error"]["reason"] == ("undeliverable")
    assert relay.inbox == []


@pytest.mark.parametrize(
    ("relay_kw", "settings_kw", "reason"),
    [
        ({}, {"email_smtp_password": "wrong"}, "not_configured"),
        ({"tls": "none", "user": None}, {"email_smtp_user": ""}, "network_error"),  # no STARTTLS
        ({}, {"email_smtp_ca_file": None}, "network_error"),  # a certificate nobody trusts
    ],
    ids=["wrong-password", "relay-without-starttls", "untrusted-certificate"],
)
async def test_smtp_failures_send_nothing(
    tmp_path: Path,
    clock: ManualClock,
    relay_kw: dict[str, Any],
    settings_kw: dict[str, Any],
    reason: str,
) -> None:
    with LocalRelay(tmp_path, **relay_kw) as relay:
        overrides = {**relay.settings(), "email_smtp_tls": "starttls", **settings_kw}
        settings = make_settings(tmp_path, **overrides)
        async with email_api(settings, clock) as api:
            r = await start(api)
            assert r.status_code == 502, r.text
            assert r.json()["error"]["reason"] == reason
            assert fake_smtp.PASSWORD not in r.text and ADDRESS not in r.text
    assert relay.inbox == []


async def test_smtp_relay_down(tmp_path: Path, clock: ManualClock) -> None:
    settings = make_settings(
        tmp_path, email_transport="smtp", email_from="codes@example.com",
        email_smtp_host="127.0.0.1", email_smtp_port=free_port(),
    )  # fmt: skip
    async with email_api(settings, clock) as api:
        r = await start(api)
        assert r.status_code == 502 and r.json()["error"]["reason"] == "network_error"
        v = (await api.verifier.store.list_events(EventQuery(types=("verification.started",))))[0]
        assert (await api.verifier.get(str(v.verification_id))).status.value == "failed"


async def test_sendgrid_end_to_end(
    tmp_path: Path, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with FakeSendGrid() as fake:
        settings = make_settings(tmp_path, **fake.settings(service_name="Acme"))
        async with email_api(settings, clock) as api:
            r = await start(api)
            assert r.status_code == 201, r.text
            assert fake.rejected == []
            [sent] = fake.sent
            assert sent["personalizations"] == [{"to": [{"email": ADDRESS}]}]
            assert sent["from"] == {"email": "codes@example.com", "name": "Acme"}
            assert [c["type"] for c in sent["content"]] == ["text/plain", "text/html"]
            assert sent["tracking_settings"]["open_tracking"] == {"enable": False}
            assert sent["tracking_settings"]["click_tracking"]["enable"] is False
            code = fake_sendgrid.code_in(sent)
            assert code not in sent["subject"] and code in sent["content"][1]["value"]
            vid = r.json()["id"]
            r = await api.post("/v1/verifications/check", json={"id": vid, "code": code})
            assert r.json()["status"] == "approved"
            events = await api.verifier.store.list_events(EventQuery(types=("verification.sent",)))
    assert events[0].details["provider"] == "sendgrid" and events[0].details["provider_id"]
    assert_nothing_leaks(api, caplog, code)


async def test_sendgrid_answers(tmp_path: Path, clock: ManualClock) -> None:
    with FakeSendGrid() as fake:
        wrong_key = make_settings(tmp_path, **fake.settings(email_sendgrid_api_key="SG.wrong"))
        async with email_api(wrong_key, clock) as api:
            r = await start(api)
            assert r.status_code == 502
            error = r.json()["error"]
            assert (error["reason"], error["provider_code"]) == ("not_configured", 401)
        fake.mode = "error"
        async with email_api(make_settings(tmp_path, **fake.settings()), clock) as api:
            r = await start(api, "al@example.com")  # SendGrid failed after reading it
            assert r.status_code == 201 and r.json()["delivery"] == "unknown", r.text
        fake.mode = "slow"
        slow = make_settings(tmp_path, **fake.settings(email_sendgrid_timeout=0.3))
        async with email_api(slow, clock) as api:
            r = await start(api, "mo@example.com")  # written, never answered
            assert r.status_code == 201 and r.json()["delivery"] == "unknown", r.text
    assert fake.sent == []


async def test_sendgrid_unreachable_sends_nothing(tmp_path: Path, clock: ManualClock) -> None:
    settings = make_settings(
        tmp_path, email_transport="sendgrid", email_from="codes@example.com",
        email_sendgrid_api_key="SG.x", email_sendgrid_api_base=f"http://127.0.0.1:{free_port()}",
    )  # fmt: skip
    async with email_api(settings, clock) as api:
        r = await start(api)
        assert r.status_code == 502 and r.json()["error"]["reason"] == "network_error"


async def test_v2_channel_email(tmp_path: Path, clock: ManualClock) -> None:
    with FakeSendGrid() as fake:
        settings = make_settings(tmp_path, **fake.settings())
        async with email_api(settings, clock) as api:
            user = "og_" + api.key.split("_")[1]
            auth = httpx.BasicAuth(user, api.key)
            r = await api.http.post("/v2/Services", auth=auth, data={"FriendlyName": "Acme"})
            sid = r.json()["sid"]
            r = await api.http.post(f"/v2/Services/{sid}/Verifications", auth=auth,
                                    data={"To": TO, "Channel": "email"})  # fmt: skip
            assert r.status_code == 201, r.text
            out = r.json()
            assert (out["channel"], out["status"], out["lookup"]) == (
                "email", "pending", {"carrier": None},
            )  # fmt: skip
            assert fake.sent[-1]["from"]["name"] == "Acme"
            code = fake_sendgrid.code_in(fake.sent[-1])
            r = await api.http.post(f"/v2/Services/{sid}/VerificationCheck", auth=auth,
                                    data={"To": ADDRESS, "Code": code})  # fmt: skip
            assert r.status_code == 200 and r.json()["status"] == "approved", r.text
            bad = {"To": "Jo <jo@example.com>", "Channel": "email"}
            r = await api.http.post(f"/v2/Services/{sid}/Verifications", auth=auth, data=bad)
            assert r.status_code == 400 and "To" in r.json()["message"]


def test_create_app_wires_the_email_transport(tmp_path: Path) -> None:
    with FakeSendGrid() as fake:
        app = create_app(make_settings(tmp_path, **fake.settings()), background=False)
    verifier = app.state.verifier
    assert verifier.email_transport is not None and verifier.email_transport.name == "sendgrid"


def test_startup_names_every_email_problem(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path,
        env="production",
        transport="twilio",
        email_transport="smtp",
        email_smtp_tls="none",
        email_smtp_user="u",
        email_allowed_domains=["not a domain"],
        dev_allowed_emails=["<x>"],
    )
    with pytest.raises(ConfigError) as err:
        check_startup(settings)
    message = err.value.message
    for needle in (
        "OTPGUARD_EMAIL_FROM",
        "OTPGUARD_EMAIL_SMTP_HOST is not set",
        "OTPGUARD_EMAIL_SMTP_PASSWORD",
        "OTPGUARD_EMAIL_SMTP_TLS=none",
        "OTPGUARD_EMAIL_ALLOWED_DOMAINS",
        "OTPGUARD_DEV_ALLOWED_EMAILS",
    ):
        assert needle in message, needle
    for name in ("console", "memory", "file"):
        dev_transport = make_settings(tmp_path, env="production", email_transport=name)
        with pytest.raises(ConfigError, match=f"OTPGUARD_EMAIL_TRANSPORT={name} is for"):
            check_startup(dev_transport)
    sendgrid = make_settings(tmp_path, env="production", email_transport="sendgrid",
                             email_from="codes@example.com",
                             email_sendgrid_api_base="http://127.0.0.1:1")  # fmt: skip
    with pytest.raises(ConfigError) as err:
        check_startup(sendgrid)
    assert "OTPGUARD_EMAIL_SENDGRID_API_KEY is not set" in err.value.message
    assert "must be https:// in production" in err.value.message


async def test_smtp_connection_lost_after_data_is_an_unknown_outcome(
    tmp_path: Path, clock: ManualClock
) -> None:
    with LocalRelay(tmp_path) as relay:
        relay.handler.drop_after_data = True
        settings = make_settings(tmp_path, **relay.settings())
        async with email_api(settings, clock) as api:
            r = await start(api)
            assert r.status_code == 201 and r.json()["delivery"] == "unknown", r.text
            code = fake_smtp.code_in(relay.inbox[-1])  # it did arrive: the code works
            r = await api.post("/v1/verifications/check", json={"id": r.json()["id"], "code": code})
            assert r.json()["status"] == "approved"
