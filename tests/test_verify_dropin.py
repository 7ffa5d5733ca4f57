"""/v2 as a drop-in: the parts of Twilio Verify beyond start and check, each row
of docs/migrating-from-twilio-verify.md's tables driven through the unmodified
twilio SDK (the server and the SDK set-up are tests/test_verify_compat.py's)."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from twilio.base.exceptions import TwilioException
from twilio.rest import Client
from twilio.rest.verify.v2.service import ServiceContext

from otpguard.clock import ManualClock
from otpguard.transports.memory import MemoryTransport

from .conftest import UK_MOBILE, ApiClient
from .fake_siteverify import FakeSiteverify, fake_siteverify
from .test_verify_compat import (
    VerifyServer,
    last_body,
    raises_twilio,
    server,
    server_factory,
    twilio_auth,
)

__all__ = ["fake_siteverify", "server", "server_factory"]  # the fixtures, shared


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


# -- resend, as Twilio does it ------------------------------------------------------------


def _service(client: Client) -> ServiceContext:
    return client.verify.v2.services(client.verify.v2.services.create(friendly_name="Acme").sid)


def _wrong(*codes: str) -> str:
    return next(c for c in ("000000", "111111", "222222", "333333") if c not in codes)


def test_sdk_resend_keeps_the_sid_and_every_code_sent(
    server: VerifyServer, outbox: MemoryTransport, clock: ManualClock
) -> None:
    client = server.client()
    svc = _service(client)
    first = svc.verifications.create(to=UK_MOBILE, channel="sms")
    first_code = outbox.last_code(UK_MOBILE)
    clock.advance(30)  # the resend cooldown
    again = svc.verifications.create(to=UK_MOBILE, channel="sms")
    second_code = outbox.last_code(UK_MOBILE)
    assert again.sid == first.sid and second_code != first_code
    assert [m.verification_id for m in outbox.sent_to(UK_MOBILE)] == [first.sid] * 2
    assert again.send_code_attempts is not None and len(again.send_code_attempts) == 2
    times = [a["time"] for a in again.send_code_attempts]
    assert times == sorted(times) and len({a["attempt_sid"] for a in again.send_code_attempts}) == 2
    # The first SMS's code, by To: approved, and no wrong attempt counted anywhere.
    check = svc.verification_checks.create(to=UK_MOBILE, code=first_code)
    assert (check.sid, check.status, check.valid) == (first.sid, "approved", True)
    assert "check.failed" not in server.event_types()
    assert "verification.resent" in server.event_types()


def test_sdk_every_code_of_a_resent_verification_works_by_sid_too(
    server: VerifyServer, outbox: MemoryTransport, clock: ManualClock
) -> None:
    client = server.client()
    svc = _service(client)
    v = svc.verifications.create(to=UK_MOBILE, channel="sms")
    clock.advance(30)
    svc.verifications.create(to=UK_MOBILE, channel="sms")
    first_code, second_code = (m.code for m in outbox.sent_to(UK_MOBILE))
    wrong = _wrong(first_code, second_code)
    assert svc.verification_checks.create(code=wrong, verification_sid=v.sid).status == "pending"
    check = svc.verification_checks.create(code=first_code, verification_sid=v.sid)
    assert (check.status, check.valid) == ("approved", True)
    err = raises_twilio(
        lambda: svc.verification_checks.create(code=second_code, verification_sid=v.sid)
    )
    assert (err.status, err.code) == (404, 20404)  # approved once, for good


def test_sdk_a_resend_does_not_extend_the_verification(
    server: VerifyServer, outbox: MemoryTransport, clock: ManualClock
) -> None:
    client = server.client()
    svc = _service(client)
    v = svc.verifications.create(to=UK_MOBILE, channel="sms")
    clock.advance(240)
    svc.verifications.create(to=UK_MOBILE, channel="sms")
    resent = outbox.sent_to(UK_MOBILE)[-1]
    assert resent.verification_id == v.sid and resent.ttl_seconds == 60
    clock.advance(60)  # 5 minutes after the first send: every code of it has expired
    for message in outbox.sent_to(UK_MOBILE):
        err = raises_twilio(
            lambda m=message: svc.verification_checks.create(to=UK_MOBILE, code=m.code)
        )
        assert (err.status, err.code) == (404, 20404)
    assert svc.verifications(v.sid).fetch().status == "expired"
    assert svc.verifications.create(to=UK_MOBILE, channel="sms").sid != v.sid


def test_sdk_another_channel_is_another_verification(
    server: VerifyServer, outbox: MemoryTransport, clock: ManualClock
) -> None:
    client = server.client()
    svc = _service(client)
    sms = svc.verifications.create(to=UK_MOBILE, channel="sms")
    clock.advance(30)
    call = svc.verifications.create(to=UK_MOBILE, channel="call")
    assert call.sid != sms.sid and call.channel == "call"
    sms_code = outbox.sent_to(UK_MOBILE)[0].code
    assert svc.verification_checks.create(to=UK_MOBILE, code=sms_code).sid == sms.sid


def test_sdk_five_sends_per_verification_at_most(
    server_factory: Callable[..., VerifyServer], outbox: MemoryTransport, clock: ManualClock
) -> None:
    server = server_factory(limit_phone="10/10m", resend_cooldown=0)
    svc = _service(server.client())
    sids = {svc.verifications.create(to=UK_MOBILE, channel="sms").sid for _ in range(5)}
    assert len(sids) == 1 and len(outbox.sent_to(UK_MOBILE)) == 5
    err = raises_twilio(lambda: svc.verifications.create(to=UK_MOBILE, channel="sms"))
    assert (err.status, err.code) == (429, 60203)
    assert len(outbox.sent_to(UK_MOBILE)) == 5
    codes = [m.code for m in outbox.sent_to(UK_MOBILE)]
    assert svc.verification_checks.create(to=UK_MOBILE, code=codes[0]).valid is True


def test_sdk_check_by_number_after_lock_out_is_60202(
    server: VerifyServer, outbox: MemoryTransport
) -> None:
    svc = _service(server.client())
    v = svc.verifications.create(to=UK_MOBILE, channel="sms")
    code = outbox.last_code(UK_MOBILE)
    wrong = _wrong(code)
    for _ in range(4):
        err = raises_twilio(lambda: svc.verification_checks.create(to=UK_MOBILE, code=wrong))
        assert (err.status, err.code) == (404, 20404)
    err = raises_twilio(lambda: svc.verification_checks.create(to=UK_MOBILE, code=wrong))
    assert (err.status, err.code) == (429, 60202)  # the fifth wrong code locked it
    err = raises_twilio(lambda: svc.verification_checks.create(to=UK_MOBILE, code=code))
    assert (err.status, err.code) == (429, 60202)
    assert svc.verifications(v.sid).fetch().status == "max_attempts_reached"


# -- Verification Attempts ------------------------------------------------------------------

OTHER_MOBILE = "+447507123456"


def test_sdk_attempts_list_fetch_and_filters(
    server: VerifyServer, outbox: MemoryTransport, clock: ManualClock
) -> None:
    client = server.client()
    svc = _service(client)
    a = svc.verifications.create(to=UK_MOBILE, channel="sms")
    clock.advance(30)
    svc.verifications.create(to=UK_MOBILE, channel="sms")  # a resend: a second attempt
    clock.advance(1)
    b = svc.verifications.create(to=OTHER_MOBILE, channel="call")
    assert svc.verification_checks.create(to=UK_MOBILE, code=outbox.last_code(UK_MOBILE)).valid

    attempts = client.verify.v2.verification_attempts.list()
    assert [x.verification_sid for x in attempts] == [b.sid, a.sid, a.sid]  # newest first
    assert [x.conversion_status for x in attempts] == ["unconverted", "converted", "converted"]
    assert [x.channel for x in attempts] == ["call", "sms", "sms"]
    assert {x.service_sid for x in attempts} == {a.service_sid}
    assert attempts[1].channel_data == {"to": "+44******3456"} and attempts[1].price is None
    assert a.send_code_attempts is not None
    assert attempts[2].sid == a.send_code_attempts[0]["attempt_sid"]
    assert attempts[2].date_created is not None and attempts[2].account_sid == a.account_sid
    fetched = client.verify.v2.verification_attempts(attempts[0].sid).fetch()
    assert (fetched.sid, fetched.verification_sid, fetched.channel) == (
        attempts[0].sid,
        b.sid,
        "call",
    )

    paged = client.verify.v2.verification_attempts.list(page_size=1)
    assert [x.sid for x in paged] == [x.sid for x in attempts]
    only_a = client.verify.v2.verification_attempts.list(verification_sid=a.sid)
    assert [x.sid for x in only_a] == [x.sid for x in attempts[1:]]
    by_to = client.verify.v2.verification_attempts.list(channel_data_to=OTHER_MOBILE)
    assert [x.verification_sid for x in by_to] == [b.sid]
    unconverted = client.verify.v2.verification_attempts.list(status="unconverted")
    assert [x.verification_sid for x in unconverted] == [b.sid]
    assert client.verify.v2.verification_attempts.list(channel="whatsapp") == []
    assert client.verify.v2.verification_attempts.list(country="FR") == []
    after = client.verify.v2.verification_attempts.list(date_created_after=attempts[0].date_created)
    assert [x.sid for x in after] == [attempts[0].sid]
    before = client.verify.v2.verification_attempts.list(
        date_created_before=attempts[0].date_created
    )
    assert [x.sid for x in before] == [x.sid for x in attempts[1:]]


def test_sdk_attempts_summary(server: VerifyServer, outbox: MemoryTransport) -> None:
    client = server.client()
    svc = _service(client)
    other = _service(client)
    svc.verifications.create(to=UK_MOBILE, channel="sms")
    svc.verifications.create(to=OTHER_MOBILE, channel="sms")
    other.verifications.create(to="+447723123456", channel="whatsapp")
    assert svc.verification_checks.create(to=UK_MOBILE, code=outbox.last_code(UK_MOBILE)).valid
    summary = client.verify.v2.verification_attempts_summary().fetch()
    assert (summary.total_attempts, summary.total_converted, summary.total_unconverted) == (3, 1, 2)
    assert summary.conversion_rate_percentage == "33.33"
    one = client.verify.v2.verification_attempts_summary().fetch(
        verify_service_sid=svc._solution["sid"]
    )
    assert (one.total_attempts, one.total_converted, one.conversion_rate_percentage) == (
        2,
        1,
        "50.00",
    )
    sms = client.verify.v2.verification_attempts_summary().fetch(channel="whatsapp")
    assert (sms.total_attempts, sms.total_converted) == (1, 0)
    err = raises_twilio(
        lambda: client.verify.v2.verification_attempts_summary().fetch(destination_prefix="+44")
    )
    assert (err.status, err.code) == (400, 60200) and "DestinationPrefix" in err.msg


def test_sdk_attempts_are_the_keys_own(server: VerifyServer, outbox: MemoryTransport) -> None:
    client = server.client()
    _service(client).verifications.create(to=UK_MOBILE, channel="sms")
    [mine] = client.verify.v2.verification_attempts.list()
    other = server.other_key_client()
    assert other.verify.v2.verification_attempts.list() == []
    assert other.verify.v2.verification_attempts_summary().fetch().total_attempts == 0
    err = raises_twilio(lambda: other.verify.v2.verification_attempts(mine.sid).fetch())
    assert (err.status, err.code) == (404, 20404)
    # A /v1 verification is no /v2 attempt.
    server.run(server.verifier.start(OTHER_MOBILE, "sms"))
    assert len(client.verify.v2.verification_attempts.list()) == 1


# -- refused, never silently ignored ------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"custom_message": "Your code"}, "CustomMessage"),
        ({"send_digits": "1234"}, "SendDigits"),
        ({"template_sid": "HJ" + "0" * 32}, "TemplateSid"),
        ({"app_hash": "abcdefghijk"}, "AppHash"),
        ({"rate_limits": {"end_user_ip": "1"}}, "RateLimits"),
        ({"channel_configuration": {"from": "x"}}, "ChannelConfiguration"),
        ({"enable_sna_client_token": True}, "EnableSnaClientToken"),
        ({"risk_check": "disable"}, "RiskCheck"),
        ({"tags": "{}"}, "Tags"),
    ],
)
def test_sdk_unsupported_verification_parameters_are_60200(
    server: VerifyServer, outbox: MemoryTransport, kwargs: dict[str, object], param: str
) -> None:
    svc = _service(server.client())
    err = raises_twilio(lambda: svc.verifications.create(to=UK_MOBILE, channel="sms", **kwargs))
    assert (err.status, err.code) == (400, 60200) and f"Invalid parameter: {param}" in err.msg
    assert outbox.outbox == []


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"lookup_enabled": True}, "LookupEnabled"),
        ({"psd2_enabled": True}, "Psd2Enabled"),
        ({"dtmf_input_required": True}, "DtmfInputRequired"),
        ({"tts_name": "Acme"}, "TtsName"),
        ({"custom_code_enabled": True}, "CustomCodeEnabled"),
        ({"push_include_date": True}, "Push.IncludeDate"),
        ({"totp_issuer": "Acme"}, "Totp.Issuer"),
        ({"default_template_sid": "HJ" + "0" * 32}, "DefaultTemplateSid"),
        ({"whatsapp_from": "+447400123456"}, "Whatsapp.From"),
        ({"verify_event_subscription_enabled": True}, "VerifyEventSubscriptionEnabled"),
    ],
)
def test_sdk_unsupported_service_parameters_are_60200(
    server: VerifyServer, kwargs: dict[str, object], param: str
) -> None:
    client = server.client()
    err = raises_twilio(lambda: client.verify.v2.services.create(friendly_name="Acme", **kwargs))
    assert (err.status, err.code) == (400, 60200) and f"Invalid parameter: {param}" in err.msg
    assert client.verify.v2.services.list() == []


def test_sdk_wrong_method_is_20004(server: VerifyServer) -> None:
    client = server.client()
    sid = client.verify.v2.services.create(friendly_name="Acme").sid
    for method, path in (("PUT", "/v2/Services"), ("DELETE", f"/v2/Services/{sid}/Verifications")):
        response = client.request(method, server.url + path)
        body = json.loads(response.text)
        assert (response.status_code, body["code"], body["status"]) == (405, 20004, 405)


def test_sdk_a_start_that_needs_a_challenge_is_60410(
    server_factory: Callable[..., VerifyServer],
    fake_siteverify: FakeSiteverify,
    outbox: MemoryTransport,
) -> None:
    server = server_factory(**fake_siteverify.settings(challenge_mode="always"))
    svc = _service(server.client())
    err = raises_twilio(lambda: svc.verifications.create(to=UK_MOBILE, channel="sms"))
    assert (err.status, err.code) == (403, 60410) and "challenge" in err.msg
    assert outbox.outbox == [] and fake_siteverify.requests == []


# -- the email channel ------------------------------------------------------------------


def test_sdk_email_channel_start_and_check_by_to(
    server: VerifyServer, outbox: MemoryTransport
) -> None:
    """Channel=email through the SDK: the address normalised, no carrier lookup, the
    code checkable by To; a disposable domain refused before anything is sent."""
    client = server.client()
    svc = client.verify.v2.services(client.verify.v2.services.create(friendly_name="Acme").sid)
    v = svc.verifications.create(to="Jo.Smith@Example.COM", channel="email")
    assert (v.status, v.channel, v.to) == ("pending", "email", "jo.smith@example.com")
    assert v.lookup == {"carrier": None}
    code = outbox.last_code("jo.smith@example.com")
    wrong = "0" * len(code) if code != "0" * len(code) else "1" * len(code)
    err = raises_twilio(
        lambda: svc.verification_checks.create(code=wrong, to="jo.smith@example.com")
    )
    assert (err.status, err.code) == (404, 20404)
    check = svc.verification_checks.create(code=code, to="JO.SMITH@example.com")
    assert (check.status, check.valid, check.channel) == ("approved", True, "email")
    sent = len(outbox.outbox)
    err = raises_twilio(lambda: svc.verifications.create(to="jo@mailinator.com", channel="email"))
    assert err.status == 403 and len(outbox.outbox) == sent
