"""/v2 as a drop-in: the parts of Twilio Verify beyond start and check, each row
of docs/migrating-from-twilio-verify.md's tables driven through the unmodified
twilio SDK (the server and the SDK set-up are tests/test_verify_compat.py's)."""

from __future__ import annotations

import json

import pytest
from twilio.base.exceptions import TwilioException

from otpguard.transports.memory import MemoryTransport

from .conftest import UK_MOBILE, ApiClient
from .test_verify_compat import (
    VerifyServer,
    last_body,
    raises_twilio,
    server,
    server_factory,
    twilio_auth,
)

__all__ = ["server", "server_factory"]  # the fixtures, shared


# -- services ---------------------------------------------------------------------------


def test_sdk_lists_services_page_by_page(server: VerifyServer) -> None:
    client = server.client()
    made = [client.verify.v2.services.create(friendly_name=f"Shop {n}").sid for n in range(5)]
    listed = client.verify.v2.services.list(page_size=2)
    assert [s.sid for s in listed] == made
    first = client.verify.v2.services.page(page_size=2)
    assert [s.sid for s in first] == made[:2]
    assert first.next_page_url is not None and "Page=1" in first.next_page_url
    last = client.verify.v2.services.page(page_size=2, page_number=2)
    assert [s.sid for s in last] == made[4:] and last.next_page_url is None


def test_sdk_service_list_drops_deleted_and_other_keys_services(server: VerifyServer) -> None:
    client = server.client()
    keep = client.verify.v2.services.create(friendly_name="Keep").sid
    gone = client.verify.v2.services.create(friendly_name="Gone").sid
    assert client.verify.v2.services(gone).delete() is True
    assert [s.sid for s in client.verify.v2.services.list()] == [keep]
    other = server.other_key_client()
    other.verify.v2.services.create(friendly_name="Theirs")
    assert [s.friendly_name for s in other.verify.v2.services.list()] == ["Theirs"]
    assert [s.sid for s in client.verify.v2.services.list()] == [keep]


def test_sdk_service_flags_otpguard_always_honours(server: VerifyServer) -> None:
    client = server.client()
    svc = client.verify.v2.services.create(
        friendly_name="Acme", do_not_share_warning_enabled=True, skip_sms_to_landlines=True
    )
    assert (svc.do_not_share_warning_enabled, svc.skip_sms_to_landlines) == (True, True)
    updated = client.verify.v2.services(svc.sid).update(do_not_share_warning_enabled=True)
    assert updated.do_not_share_warning_enabled is True
    for kwargs, param in (
        ({"do_not_share_warning_enabled": False}, "DoNotShareWarningEnabled"),
        ({"skip_sms_to_landlines": False}, "SkipSmsToLandlines"),
    ):
        err = raises_twilio(
            lambda k=kwargs: client.verify.v2.services.create(friendly_name="A", **k)
        )
        assert (err.status, err.code) == (400, 60200) and param in err.msg


def test_sdk_locale_is_one_otpguard_has(server: VerifyServer, outbox: MemoryTransport) -> None:
    client = server.client()
    svc = client.verify.v2.services(client.verify.v2.services.create(friendly_name="Acme").sid)
    svc.verifications.create(to=UK_MOBILE, channel="sms", locale="es-MX")
    assert outbox.sent_to(UK_MOBILE)[-1].locale == "es"
    for locale in ("pt-BR", "zh", "en-GBR", "xx"):
        err = raises_twilio(
            lambda loc=locale: svc.verifications.create(to=UK_MOBILE, channel="sms", locale=loc)
        )
        assert (err.status, err.code) == (400, 60200) and "Locale" in err.msg


# -- what /v2 does not serve --------------------------------------------------------------


def test_sdk_unimplemented_resources_are_twilio_404s(server: VerifyServer) -> None:
    client = server.client()
    svc = client.verify.v2.services(client.verify.v2.services.create(friendly_name="Acme").sid)
    for call in (
        lambda: client.verify.v2.forms("form-push").fetch(),
        lambda: client.verify.v2.safelist.create(phone_number=UK_MOBILE),
        lambda: svc.entities.create(identity="someone"),
        lambda: svc.verifications(f"VE{'0' * 32}").fetch(),
    ):
        err = raises_twilio(call)
        assert (err.status, err.code) == (404, 20404)
    # A list the SDK cannot page raises its plain TwilioException, as against Twilio.
    for listing in (
        client.verify.v2.templates.list,
        svc.rate_limits.list,
        svc.messaging_configurations.list,
    ):
        with pytest.raises(TwilioException, match="Unable to fetch page"):
            listing()
        body = json.loads(last_body(client))
        assert (body["status"], body["code"]) == (404, 20404)


async def test_unknown_paths_and_methods_are_twilio_shaped(api: ApiClient) -> None:
    auth = twilio_auth(api)
    r = await api.http.get("/v2/Nothing/Here", headers=auth)
    assert r.status_code == 404
    assert r.json() == {
        "code": 20404,
        "message": "The requested resource /Nothing/Here was not found",
        "more_info": "https://www.twilio.com/docs/errors/20404",
        "status": 404,
    }
    r = await api.http.put("/v2/Services", headers=auth)
    assert r.status_code == 405 and r.json()["code"] == 20004
    assert r.json()["more_info"] == "https://www.twilio.com/docs/errors/20004"
    assert set(r.headers["allow"].split(", ")) >= {"GET", "POST"}
    r = await api.http.delete(f"/v2/Services/VA{'0' * 32}/VerificationCheck", headers=auth)
    assert r.status_code == 405 and r.json()["code"] == 20004
    r = await api.http.get("/v2/Nothing")  # no credentials: Twilio asks for them first
    assert r.status_code == 401 and r.json()["code"] == 20003


async def test_unknown_query_parameter_on_a_list_is_refused(api: ApiClient) -> None:
    auth = twilio_auth(api)
    r = await api.http.get("/v2/Services?Color=blue", headers=auth)
    assert r.status_code == 400 and r.json()["code"] == 60200 and "Color" in r.json()["message"]
    r = await api.http.get("/v2/Services?PageSize=0", headers=auth)
    assert r.status_code == 400 and "PageSize" in r.json()["message"]


@pytest.mark.parametrize("size", ["1001", "1e3", "\u0661"])
async def test_page_size_is_checked(api: ApiClient, size: str) -> None:
    r = await api.http.get("/v2/Services", params={"PageSize": size}, headers=twilio_auth(api))
    assert r.status_code == 400 and r.json()["code"] == 60200
