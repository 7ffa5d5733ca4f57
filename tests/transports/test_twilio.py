"""The Twilio transport against a fake Twilio API server, and the status callback route.

Nothing of ours is patched: the transport builds real requests with the
official SDK and sends them over HTTP to ``tests.fake_twilio.FakeTwilio``.
"""

from __future__ import annotations

import json
import logging
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from otpguard.config import Settings
from otpguard.errors import DeliveryError
from otpguard.models import PHONE_CHANNELS, Channel
from otpguard.service import DeliveryReport
from otpguard.transports.base import Message, Receipt
from otpguard.transports.twilio import TwilioTransport
from otpguard.web.twilio_webhooks import router

from ..fake_twilio import (
    ACCOUNT_SID,
    API_KEY,
    AUTH_TOKEN,
    MAGIC_FROM,
    FakeTwilio,
    Fault,
    read_code,
    twilio_signature,
)

UK = "+447700900123"
CODE = "482913"
PUBLIC_URL = "https://otp.example.com"


def message(
    channel: Channel = Channel.SMS,
    *,
    to: str = UK,
    code: str = CODE,
    locale: str = "en",
    country: str | None = "GB",
    ttl: int = 300,
    vid: str = "v-123",
) -> Message:
    return Message(
        verification_id=vid,
        to=to,
        channel=channel,
        code=code,
        service_name="Acme",
        ttl_seconds=ttl,
        locale=locale,
        country=country,
    )


@pytest.fixture
def fake() -> Iterator[FakeTwilio]:
    with FakeTwilio() as f:
        yield f


@pytest.fixture
def fake_test() -> Iterator[FakeTwilio]:
    """The fake as Twilio answers test credentials: magic numbers apply."""
    with FakeTwilio(test_credentials=True) as f:
        yield f


Factory = Callable[..., TwilioTransport]


@pytest.fixture
async def transports() -> AsyncIterator[Callable[[FakeTwilio], Factory]]:
    """``transports(fake)(**setting_overrides)`` -> a transport; all closed afterwards."""
    made: list[TwilioTransport] = []

    def for_fake(f: FakeTwilio) -> Factory:
        def make(**overrides: Any) -> TwilioTransport:
            t = TwilioTransport(f.settings(**overrides).twilio)
            made.append(t)
            return t

        return make

    yield for_fake
    for t in made:
        await t.aclose()


@pytest.fixture
def make(fake: FakeTwilio, transports: Callable[[FakeTwilio], Factory]) -> Factory:
    return transports(fake)


@pytest.fixture
def make_test(fake_test: FakeTwilio, transports: Callable[[FakeTwilio], Factory]) -> Factory:
    return transports(fake_test)


# -- what each channel sends --------------------------------------------------


async def test_sms_sends_the_code_with_sender_validity_and_no_risk_override(
    fake: FakeTwilio, make: Factory
) -> None:
    receipt = await make().send(message(ttl=240))

    assert receipt.provider == "twilio"
    assert receipt.status == "queued"
    assert receipt.provider_id is not None
    assert receipt.provider_id.startswith("SM") and len(receipt.provider_id) == 34
    [req] = fake.requests
    assert req.path == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
    assert req.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert req.username == ACCOUNT_SID
    assert req.form["To"] == UK
    assert req.form["From"] == MAGIC_FROM
    assert CODE in req.form["Body"]
    assert "Do not share" in req.form["Body"]
    assert req.form["ValidityPeriod"] == "240"
    assert "RiskCheck" not in req.form
    assert "StatusCallback" not in req.form
    assert "MessagingServiceSid" not in req.form
    assert fake.codes_sent_to(UK) == [CODE]


async def test_sms_asks_for_status_callbacks_when_public_url_is_set(
    fake: FakeTwilio, make: Factory
) -> None:
    await make(public_url=PUBLIC_URL + "/").send(message(vid="v-abc"))

    [req] = fake.requests
    assert req.form["StatusCallback"] == f"{PUBLIC_URL}/webhooks/twilio/status?vid=v-abc"


@pytest.mark.parametrize(
    ("locale", "text"),
    [
        ("en", "Do not share this code"),
        ("es", "No compartas este código"),
        ("fr", "Ne partagez ce code"),
        ("de", "Teilen Sie diesen Code"),
    ],
)
async def test_sms_body_follows_the_locale(
    fake: FakeTwilio, make: Factory, locale: str, text: str
) -> None:
    await make().send(message(locale=locale))

    body = fake.requests[0].form["Body"]
    assert text in body and CODE in body


async def test_sms_through_a_messaging_service(fake: FakeTwilio, make: Factory) -> None:
    receipt = await make(twilio_from="", twilio_messaging_service_sid="MG" + "a" * 32).send(
        message()
    )

    form = fake.requests[0].form
    assert form["MessagingServiceSid"] == "MG" + "a" * 32
    assert "From" not in form
    assert receipt.status == "accepted"


async def test_whatsapp_uses_the_template_and_no_free_text(fake: FakeTwilio, make: Factory) -> None:
    t = make(
        twilio_whatsapp_from="+14155238886",
        twilio_whatsapp_content_sid="HX" + "b" * 32,
        public_url=PUBLIC_URL,
    )
    receipt = await t.send(message(Channel.WHATSAPP))

    [req] = fake.requests
    assert req.form["To"] == f"whatsapp:{UK}"
    assert req.form["From"] == "whatsapp:+14155238886"
    assert req.form["ContentSid"] == "HX" + "b" * 32
    assert json.loads(req.form["ContentVariables"]) == {"1": CODE}
    assert "Body" not in req.form
    assert req.form["StatusCallback"].startswith(f"{PUBLIC_URL}/webhooks/twilio/status?vid=")
    assert receipt.provider_id is not None and receipt.provider_id.startswith("SM")
    assert fake.codes_sent_to(UK) == [CODE]


async def test_whatsapp_falls_back_to_the_sms_sender(fake: FakeTwilio, make: Factory) -> None:
    await make(twilio_whatsapp_content_sid="HX" + "b" * 32).send(message(Channel.WHATSAPP))

    assert fake.requests[0].form["From"] == f"whatsapp:{MAGIC_FROM}"


async def test_whatsapp_without_a_template_is_refused_before_any_request(
    fake: FakeTwilio, make: Factory
) -> None:
    t = make()
    with pytest.raises(DeliveryError) as info:
        await t.send(message(Channel.WHATSAPP))

    assert info.value.reason == "whatsapp_not_configured"
    assert fake.requests == []
    assert any("WHATSAPP_CONTENT_SID" in p for p in t.problems([Channel.WHATSAPP]))


@pytest.mark.parametrize(
    ("locale", "country", "language", "words"),
    [
        ("en", "GB", "en-GB", "Your Acme code is"),
        ("en", "US", "en-US", "Your Acme code is"),
        ("es", "ES", "es-ES", "Su código de Acme es"),
        ("fr", "FR", "fr-FR", "Votre code Acme est"),
        ("de", "DE", "de-DE", "Ihr Acme-Code lautet"),
    ],
)
async def test_voice_reads_the_digits_twice_in_the_locale_language(
    fake: FakeTwilio,
    make: Factory,
    locale: str,
    country: str,
    language: str,
    words: str,
) -> None:
    receipt = await make(public_url=PUBLIC_URL).send(
        message(Channel.VOICE, locale=locale, country=country)
    )

    [req] = fake.requests
    assert req.path == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Calls.json"
    assert req.form["To"] == UK and req.form["From"] == MAGIC_FROM
    assert req.form["StatusCallback"].startswith(f"{PUBLIC_URL}/webhooks/twilio/status?vid=")
    root = ET.fromstring(req.form["Twiml"])  # noqa: S314 - our own TwiML
    assert [el.tag for el in root] == ["Say", "Pause", "Say"]
    says = [el for el in root if el.tag == "Say"]
    for say in says:
        assert say.get("language") == language
        assert words in (say.text or "")
        assert "4, 8, 2, 9, 1, 3" in (say.text or "")
    assert receipt.provider_id is not None and receipt.provider_id.startswith("CA")
    assert fake.codes_sent_to(UK) == [CODE]


def test_read_code_needs_both_readings_of_a_call_to_agree() -> None:
    twiml = "<Response><Say>Code 1, 2, 3, 4</Say><Say>Code 1, 2, 3, 5</Say></Response>"
    assert read_code({"Twiml": twiml}) is None


async def test_api_key_pair_authenticates_with_the_account_in_the_path(
    fake: FakeTwilio, make: Factory
) -> None:
    await make(api_key=True).send(message())

    [req] = fake.requests
    assert req.status == 201
    assert req.username == API_KEY
    assert req.path.startswith(f"/2010-04-01/Accounts/{ACCOUNT_SID}/")


async def test_wrong_credentials_are_a_provider_error_not_retried(
    fake: FakeTwilio, make: Factory
) -> None:
    with pytest.raises(DeliveryError) as info:
        await make(twilio_auth_token="wrong").send(message())

    assert (info.value.reason, info.value.provider_code) == ("provider_error", 20003)
    assert not info.value.retryable
    assert [r.status for r in fake.requests] == [401]


# -- test credentials and error mapping ----------------------------------------------


async def test_test_credentials_send_the_same_request_and_do_not_reach_phones(
    fake_test: FakeTwilio, make_test: Factory, make: Factory
) -> None:
    t = make_test()
    receipt = await t.send(message(to="+15005550010"))

    assert t.reaches_real_phones is False
    assert make().reaches_real_phones is True
    assert receipt.provider_id is not None
    assert fake_test.requests[0].form["From"] == MAGIC_FROM


@pytest.mark.parametrize(
    ("channel", "to", "sender", "reason", "code"),
    [
        (Channel.SMS, "+15005550001", MAGIC_FROM, "invalid_number", 21211),
        (Channel.SMS, "+15005550002", MAGIC_FROM, "unroutable", 21612),
        (Channel.SMS, "+15005550003", MAGIC_FROM, "country_not_permitted", 21408),
        (Channel.SMS, "+15005550004", MAGIC_FROM, "unsubscribed", 21610),
        (Channel.SMS, "+15005550009", MAGIC_FROM, "not_sms_capable", 21614),
        (Channel.SMS, UK, "+15005550001", "provider_error", 21212),
        (Channel.SMS, UK, "+15005550007", "provider_error", 21606),
        (Channel.SMS, UK, "+15005550008", "provider_error", 21611),
        (Channel.SMS, UK, "+14155550100", "provider_error", 21606),
        (Channel.VOICE, "+15005550001", MAGIC_FROM, "invalid_number", 21217),
        (Channel.VOICE, "+15005550002", MAGIC_FROM, "unroutable", 21214),
        (Channel.VOICE, "+15005550003", MAGIC_FROM, "country_not_permitted", 21215),
        (Channel.VOICE, "+15005550004", MAGIC_FROM, "provider_error", 21216),
        (Channel.VOICE, UK, "+14155550100", "provider_error", 21210),
    ],
)
async def test_magic_numbers_map_to_reasons(
    fake_test: FakeTwilio,
    make_test: Factory,
    channel: Channel,
    to: str,
    sender: str,
    reason: str,
    code: int,
) -> None:
    with pytest.raises(DeliveryError) as info:
        await make_test(twilio_from=sender).send(message(channel, to=to))

    err = info.value
    assert (err.reason, err.provider_code, err.retryable) == (reason, code, False)
    assert len(fake_test.requests) == 1  # a 4xx is never retried
    assert fake_test.requests[0].status == 400
    assert CODE not in str(err) and "Twilio returned" in str(err)


# -- retries and timeouts ---------------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [
        Fault.error(status=500),
        Fault.error(status=503),
        Fault.drop(),
        Fault.raw(502),
        Fault.accepted_then_drop(),
        Fault.accepted_then_error(500),
    ],
    ids=["500", "503", "dropped", "proxy-502", "accepted-dropped", "accepted-500"],
)
async def test_a_request_that_reached_twilio_is_never_retried(
    fake: FakeTwilio, make: Factory, fault: Fault
) -> None:
    """Twilio may have sent the message (accepted-*: it did): a retry would send a
    second one. The outcome is reported as unknown, not as a failure."""
    fake.fail_next(fault, fault)

    with pytest.raises(DeliveryError) as info:
        await make().send(message())

    assert len(fake.requests) == 1
    assert info.value.reason == "unknown_outcome" and info.value.outcome_unknown
    assert not info.value.retryable
    assert info.value.details()["outcome_unknown"] is True
    assert info.value.provider_code == (20000 + fault.status if fault.kind == "error" else None)
    assert len(fake.sent()) == (1 if fault.after_create else 0)


async def test_too_many_requests_is_twilio_refusing_not_retried(
    fake: FakeTwilio, make: Factory
) -> None:
    fake.fail_next(Fault.error(20429))

    with pytest.raises(DeliveryError) as info:
        await make().send(message())

    assert info.value.provider_code == 20429 and not info.value.outcome_unknown
    assert len(fake.requests) == 1


@pytest.mark.parametrize("code", [21211, 21212, 20003, 30007])
async def test_4xx_errors_are_never_retried(fake: FakeTwilio, make: Factory, code: int) -> None:
    fake.fail_next(Fault.error(code))

    with pytest.raises(DeliveryError) as info:
        await make().send(message())

    assert info.value.provider_code == code
    assert not info.value.retryable
    assert len(fake.requests) == 1


async def test_a_response_that_never_comes_is_cut_off_at_the_timeout(
    fake: FakeTwilio, make: Factory
) -> None:
    fake.fail_next(Fault.stall())
    t = make(twilio_timeout=0.5)

    started = time.monotonic()
    with pytest.raises(DeliveryError) as info:
        await t.send(message())
    elapsed = time.monotonic() - started

    assert fake.wait_stalled(timeout=0)  # the request did reach the fake and hang there
    assert info.value.reason == "unknown_outcome" and not info.value.retryable
    assert elapsed < 0.5 + 0.3
    # The whole budget went on the first attempt, so there was no retry (that could
    # have sent a second SMS): a retry would have been answered and recorded at once.
    assert fake.requests == []  # the stalled one is recorded only once released
    fake.release()


async def test_nothing_is_connected_when_twilio_is_unreachable(make: Factory) -> None:
    with FakeTwilio() as gone:
        base = gone.base_url
    # Nothing listens there any more: connection refused, twice, quickly. Never
    # connected, so nothing was sent: the one case that is retried.
    t = make(twilio_api_base=base)
    with pytest.raises(DeliveryError) as info:
        await t.send(message())
    assert info.value.reason == "network_error"
    assert info.value.retryable and not info.value.outcome_unknown


# -- secrecy: no body, TwiML or response in logs or memory -----------------------------


async def test_no_code_body_twiml_or_response_in_logs(
    fake: FakeTwilio, make: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, the SDK's and aiohttp's included
    t = make(twilio_whatsapp_content_sid="HX" + "b" * 32, public_url=PUBLIC_URL)
    for channel in Channel:
        if channel in PHONE_CHANNELS:  # email is never handed to Twilio
            await t.send(message(channel))
    fake.fail_next(Fault.accepted_then_error(500))
    with pytest.raises(DeliveryError):
        await t.send(message())
    fake.fail_next(Fault.error(21211))
    with pytest.raises(DeliveryError) as info:
        await t.send(message())

    assert len(fake.sent()) == 4
    assert caplog.records, "the transport should say what it did"
    for record in caplog.records:
        text = record.getMessage() + (record.exc_text or "")
        assert CODE not in text
        assert "4, 8, 2" not in text
        assert "Do not share" not in text and "<Response>" not in text
        # The SDK's request/response lines stay below the level it is held at.
        if record.name.startswith("otpguard.transports.twilio.sdk"):
            assert record.levelno >= logging.WARNING
    assert CODE not in str(info.value) and CODE not in repr(info.value.details())


async def test_the_sdk_client_keeps_no_copy_of_the_request_or_response(
    fake: FakeTwilio, make: Factory
) -> None:
    t = make()
    receipt = await t.send(message())

    assert CODE not in repr(receipt) and isinstance(receipt, Receipt)
    http = t._http
    assert http is not None
    assert http._test_only_last_request is None
    assert http._test_only_last_response is None
    assert http.logger.getEffectiveLevel() >= logging.WARNING


async def test_aclose_closes_the_http_session(fake: FakeTwilio, make: Factory) -> None:
    t = make()
    await t.send(message())
    http = t._http
    assert http is not None

    await t.aclose()

    assert http.session.closed
    await t.aclose()  # idempotent


# -- configuration problems -----------------------------------------------------------


def test_problems_are_empty_when_everything_is_configured() -> None:
    settings = Settings(
        twilio_account_sid=ACCOUNT_SID,
        twilio_auth_token=AUTH_TOKEN,
        twilio_from=MAGIC_FROM,
        twilio_whatsapp_content_sid="HX" + "b" * 32,
    )
    assert TwilioTransport(settings.twilio).problems() == []


def test_problems_name_what_to_set() -> None:
    problems = TwilioTransport(
        Settings(twilio_api_key=API_KEY, twilio_api_base="api.twilio.com").twilio
    ).problems()
    text = "\n".join(problems)
    for name in (
        "OTPGUARD_TWILIO_ACCOUNT_SID",
        "OTPGUARD_TWILIO_API_SECRET",
        "OTPGUARD_TWILIO_API_BASE",
        "OTPGUARD_TWILIO_MESSAGING_SERVICE_SID",
        "OTPGUARD_TWILIO_WHATSAPP_CONTENT_SID",
    ):
        assert name in text
    only_sms = TwilioTransport(
        Settings(
            twilio_account_sid=ACCOUNT_SID, twilio_auth_token=AUTH_TOKEN, twilio_from=UK
        ).twilio
    ).problems([Channel.SMS, Channel.VOICE])
    assert only_sms == []


async def test_sending_without_credentials_is_refused_without_a_request(
    fake: FakeTwilio, make: Factory
) -> None:
    with pytest.raises(DeliveryError) as info:
        await make(twilio_auth_token="").send(message())
    assert info.value.reason == "not_configured"
    assert fake.requests == []


# -- status callbacks ---------------------------------------------------------------


class FakeVerifier:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    async def record_delivery_status(self, **kwargs: Any) -> DeliveryReport:
        self.calls.append(kwargs)
        return DeliveryReport.RECORDED


def sign(url: str, form: dict[str, str], token: str = AUTH_TOKEN) -> str:
    """Twilio's published algorithm, written out here rather than taken from the SDK."""
    return twilio_signature(token, url, form)


@pytest.fixture
def verifier() -> FakeVerifier:
    return FakeVerifier()


def webhook_app(verifier: FakeVerifier, **settings: Any) -> FastAPI:
    app = FastAPI()
    app.include_router(router)
    values = {"public_url": PUBLIC_URL, "twilio_auth_token": AUTH_TOKEN} | settings
    app.state.settings = Settings(**values)
    app.state.verifier = verifier
    return app


async def post(app: FastAPI, path: str, form: dict[str, str], **headers: str) -> httpx.Response:
    # The socket host (http://testserver) is not public_url: as behind a TLS proxy.
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        return await http.post(path, data=form, headers=headers)


STATUS_FORM = {
    "MessageSid": "SM" + "c" * 32,
    "SmsSid": "SM" + "c" * 32,
    "MessageStatus": "undelivered",
    "ErrorCode": "30003",
    "AccountSid": ACCOUNT_SID,
    "To": UK,
    "From": MAGIC_FROM,
    "ApiVersion": "2010-04-01",
}
PATH = "/webhooks/twilio/status?vid=v-123"


async def test_a_signed_callback_is_recorded(verifier: FakeVerifier) -> None:
    signature = sign(PUBLIC_URL + PATH, STATUS_FORM)

    r = await post(webhook_app(verifier), PATH, STATUS_FORM, **{"X-Twilio-Signature": signature})

    assert r.status_code == 204
    assert verifier.calls == [
        {
            "verification_id": "v-123",
            "status": "undelivered",
            "error_code": 30003,
            "provider_id": "SM" + "c" * 32,
        }
    ]


async def test_a_call_status_callback_is_recorded(verifier: FakeVerifier) -> None:
    form = {"CallSid": "CA" + "d" * 32, "CallStatus": "completed", "AccountSid": ACCOUNT_SID}
    r = await post(
        webhook_app(verifier), PATH, form, **{"X-Twilio-Signature": sign(PUBLIC_URL + PATH, form)}
    )

    assert r.status_code == 204
    assert verifier.calls == [
        {
            "verification_id": "v-123",
            "status": "completed",
            "error_code": None,
            "provider_id": "CA" + "d" * 32,
        }
    ]


@pytest.mark.parametrize(
    "signature",
    [
        None,
        "",
        "not-a-signature",
        sign(PUBLIC_URL + PATH, STATUS_FORM, token="another-token"),
        sign("http://testserver" + PATH, STATUS_FORM),  # the socket's URL, not public_url
        sign(PUBLIC_URL + "/webhooks/twilio/status?vid=v-999", STATUS_FORM),  # another vid
        sign(PUBLIC_URL + PATH, STATUS_FORM | {"MessageStatus": "delivered"}),  # other fields
    ],
    ids=["missing", "empty", "garbage", "other-token", "socket-url", "other-vid", "tampered"],
)
async def test_a_bad_signature_is_forbidden(verifier: FakeVerifier, signature: str | None) -> None:
    headers = {} if signature is None else {"X-Twilio-Signature": signature}

    r = await post(webhook_app(verifier), PATH, STATUS_FORM, **headers)

    assert r.status_code == 403
    assert r.json()["error"]["code"] == "forbidden"
    assert verifier.calls == []


async def test_public_url_with_a_path_prefix(verifier: FakeVerifier) -> None:
    public = "https://example.com/otp"
    signature = sign(public + PATH, STATUS_FORM)

    r = await post(
        webhook_app(verifier, public_url=public + "/"),
        PATH,
        STATUS_FORM,
        **{"X-Twilio-Signature": signature},
    )

    assert r.status_code == 204


@pytest.mark.parametrize(
    "settings",
    [{"public_url": ""}, {"twilio_auth_token": ""}],
    ids=["no-public-url", "no-auth-token"],
)
async def test_the_endpoint_is_off_without_public_url_or_auth_token(
    verifier: FakeVerifier, settings: dict[str, str]
) -> None:
    r = await post(
        webhook_app(verifier, **settings),
        PATH,
        STATUS_FORM,
        **{"X-Twilio-Signature": sign(PUBLIC_URL + PATH, STATUS_FORM)},
    )

    assert r.status_code == 404
    assert verifier.calls == []


async def test_a_signed_callback_without_vid_is_a_bad_request(verifier: FakeVerifier) -> None:
    path = "/webhooks/twilio/status"
    r = await post(
        webhook_app(verifier),
        path,
        STATUS_FORM,
        **{"X-Twilio-Signature": sign(PUBLIC_URL + path, STATUS_FORM)},
    )

    assert r.status_code == 400
    assert verifier.calls == []


async def test_callback_for_a_message_the_transport_sent(
    fake: FakeTwilio, make: Factory, verifier: FakeVerifier
) -> None:
    """End to end: the StatusCallback the transport asked for, signed as Twilio would."""
    receipt = await make(public_url=PUBLIC_URL).send(message(vid="v-e2e"))
    assert receipt.provider_id is not None
    callback = fake.status_callback(receipt.provider_id, "delivered")

    r = await post(
        webhook_app(verifier), callback.path_and_query, callback.form, **callback.headers
    )

    assert r.status_code == 204
    assert verifier.calls == [
        {
            "verification_id": "v-e2e",
            "status": "delivered",
            "error_code": None,
            "provider_id": receipt.provider_id,
        }
    ]


async def test_whatsapp_prefers_its_own_sender_then_the_messaging_service(
    fake: FakeTwilio, make: Factory
) -> None:
    template = {"twilio_whatsapp_content_sid": "HX" + "b" * 32}
    service = {"twilio_messaging_service_sid": "MG" + "a" * 32}
    await make(twilio_whatsapp_from="+14155238886", **template, **service).send(
        message(Channel.WHATSAPP)
    )
    await make(**template, **service).send(message(Channel.WHATSAPP))

    first, second = (r.form for r in fake.requests)
    assert first["From"] == "whatsapp:+14155238886" and "MessagingServiceSid" not in first
    assert second["MessagingServiceSid"] == "MG" + "a" * 32 and "From" not in second


async def test_email_is_never_sent_by_twilio(fake: FakeTwilio, make: Factory) -> None:
    with pytest.raises(DeliveryError) as info:
        await make().send(message(Channel.EMAIL))
    assert info.value.reason == "not_configured" and fake.sent() == []
