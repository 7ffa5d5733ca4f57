"""The HTTP API: shapes, auth, errors, bad input of every kind."""

from __future__ import annotations

import json
from typing import Any

import pytest

from otpguard.clock import ManualClock
from otpguard.transports.memory import MemoryTransport

from .conftest import UK_MOBILE, ApiClient


async def start(api: ApiClient, **body: Any) -> dict[str, Any]:
    r = await api.post("/v1/verifications", json={"to": UK_MOBILE, **body})
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()
    return data


async def test_walkthrough(api: ApiClient, outbox: MemoryTransport) -> None:
    v = await start(api, channel="sms", client_ip="203.0.113.7")
    assert set(v) == {
        "id",
        "to",
        "channel",
        "status",
        "created_at",
        "expires_at",
        "resend_available_at",
        "attempts_remaining",
        "sends",
        "delivery",
        "purpose",
        "amount",
        "payee",
    }
    assert v["status"] == "pending" and v["to"] == "+44******3456"
    assert v["purpose"] == "login" and v["amount"] is None and v["payee"] is None
    assert v["delivery"] == "sent"
    assert v["attempts_remaining"] == 5 and v["expires_at"].endswith("Z")
    code = outbox.last_code(UK_MOBILE)
    r = await api.post("/v1/verifications/check", json={"id": v["id"], "code": code})
    assert r.status_code == 200
    assert r.json() == {"id": v["id"], "status": "approved", "valid": True, "attempts_remaining": 0}
    r = await api.post("/v1/verifications/check", json={"id": v["id"], "code": code})
    assert r.json()["valid"] is False
    r = await api.get(f"/v1/verifications/{v['id']}")
    assert r.json()["status"] == "approved"


async def test_check_by_number_and_cancel(api: ApiClient, outbox: MemoryTransport) -> None:
    v = await start(api)
    code = outbox.last_code()
    r = await api.post(f"/v1/verifications/{v['id']}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "canceled"
    r = await api.post("/v1/verifications/check", json={"to": UK_MOBILE, "code": code})
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


async def test_resend_and_cooldown(
    api: ApiClient, outbox: MemoryTransport, clock: ManualClock
) -> None:
    v = await start(api)
    r = await api.post(f"/v1/verifications/{v['id']}/resend")
    assert r.status_code == 429
    assert r.headers["retry-after"] == "30"
    err = r.json()["error"]
    assert err["code"] == "rate_limited" and err["rule"] == "cooldown"
    clock.advance(30)
    r = await api.post(f"/v1/verifications/{v['id']}/resend", json={"client_ip": "203.0.113.7"})
    assert r.status_code == 200 and r.json()["sends"] == 2
    assert len(outbox.outbox) == 2


async def test_auth(api: ApiClient) -> None:
    for headers in (
        {"Authorization": ""},
        {"Authorization": "Bearer nope"},
        {"Authorization": "Basic Zm9vOmJhcg=="},
        {"Authorization": "Bearer og_000000000000_" + "A" * 43},
    ):
        r = await api.post("/v1/verifications", json={"to": UK_MOBILE}, headers=headers)
        assert r.status_code == 401
        assert r.json() == {
            "error": {"code": "unauthorized", "message": "missing or invalid API key"}
        }


async def test_revoked_key_is_refused(api: ApiClient, clock: ManualClock) -> None:
    key_id = api.key.split("_")[1]
    assert await api.verifier.store.revoke_api_key(key_id, clock())
    r = await api.post("/v1/verifications", json={"to": UK_MOBILE})
    assert r.status_code == 401


async def test_every_response_is_no_store_with_security_headers(api: ApiClient) -> None:
    for r in (
        await api.get("/healthz"),
        await api.get("/readyz"),
        await api.get("/nope"),
        await api.post("/v1/verifications", json={}),
    ):
        assert r.headers["cache-control"] == "no-store"
        assert r.headers["x-content-type-options"] == "nosniff"
        assert "content-security-policy" in r.headers


async def test_openapi_and_docs_are_local(api: ApiClient) -> None:
    r = await api.get("/openapi.json")
    assert r.status_code == 200 and "/v1/verifications" in r.json()["paths"]
    r = await api.get("/docs")
    assert r.status_code == 200 and "/docs/static/swagger-ui-bundle.js" in r.text
    assert "cdn" not in r.text.lower()
    r = await api.get("/docs/static/swagger-ui-bundle.js")
    assert r.status_code == 200


BAD_STARTS: list[tuple[Any, int, str]] = [
    ({"to": 447400123456}, 422, "invalid_request"),
    ({"to": ["+447400123456"]}, 422, "invalid_request"),
    ({"to": None}, 422, "invalid_request"),
    ({}, 422, "invalid_request"),
    ({"to": UK_MOBILE, "extra": 1}, 422, "invalid_request"),
    ({"to": UK_MOBILE, "channel": "fax"}, 422, "invalid_request"),
    ({"to": UK_MOBILE, "client_ip": "not-an-ip"}, 400, "invalid_request"),
    ({"to": UK_MOBILE, "locale": "<script>"}, 400, "invalid_request"),
    ({"to": "+44740012345"}, 400, "invalid_phone_number"),
    ({"to": "hello"}, 400, "invalid_phone_number"),
    ({"to": "+" + "9" * 63}, 400, "invalid_phone_number"),
    ({"to": "+44 7400 123456\u0000"}, 400, "invalid_phone_number"),
    ({"to": "\u202e+447400123456"}, 400, "invalid_phone_number"),
    ({"to": "x" * 321}, 422, "invalid_request"),
    ({"to": "Jo <jo@example.com>", "channel": "email"}, 400, "invalid_email_address"),
    ({"to": UK_MOBILE, "channel": "email"}, 400, "invalid_email_address"),
    ({"to": "jo@example.com"}, 400, "invalid_phone_number"),
    ([1, 2, 3], 422, "invalid_request"),
    ("just a string", 422, "invalid_request"),
]


@pytest.mark.parametrize(("body", "status", "code"), BAD_STARTS)
async def test_bad_start_bodies(api: ApiClient, body: Any, status: int, code: str) -> None:
    r = await api.post("/v1/verifications", json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code and err["message"]
    assert "Traceback" not in r.text


@pytest.mark.parametrize(
    "raw",
    [b"{", b"not json", b"\xff\xfe", b'{"to": "+447400123456",}', b"", b"null", b"[]"],
)
async def test_non_json_bodies(api: ApiClient, raw: bytes) -> None:
    r = await api.post(
        "/v1/verifications", content=raw, headers={"Content-Type": "application/json"}
    )
    assert 400 <= r.status_code < 500
    assert r.json()["error"]["code"] == "invalid_request"


async def test_oversized_body(api: ApiClient) -> None:
    r = await api.post("/v1/verifications", json={"to": UK_MOBILE, "pad": "x" * 17000})
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "invalid_request"

    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(20):
            yield b"x" * 1024

    r = await api.post(
        "/v1/verifications", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 413


@pytest.mark.parametrize(
    "code",
    [
        "12345",
        "1234567",
        "abcdef",
        "12345a",
        "١٢٣٤٥٦",
        "１２３４５６",
        "123 45",
        "",
        "9" * 33,
        123456,
    ],
)
async def test_bad_codes(api: ApiClient, outbox: MemoryTransport, code: Any) -> None:
    v = await start(api)
    r = await api.post("/v1/verifications/check", json={"id": v["id"], "code": code})
    assert r.status_code in (400, 422)
    assert r.json()["error"]["code"] == "invalid_request"
    r = await api.get(f"/v1/verifications/{v['id']}")
    assert r.json()["attempts_remaining"] == 5


async def test_check_needs_exactly_one_of_id_or_to(api: ApiClient) -> None:
    for body in ({"code": "123456"}, {"id": "VEx", "to": UK_MOBILE, "code": "123456"}):
        r = await api.post("/v1/verifications/check", json=body)
        assert r.status_code == 400
        assert "exactly one" in r.json()["error"]["message"]


async def test_unknown_ids(api: ApiClient) -> None:
    for method, url in (
        ("GET", "/v1/verifications/VEnope"),
        ("POST", "/v1/verifications/VEnope/cancel"),
        ("POST", "/v1/verifications/VEnope/resend"),
        ("GET", "/v1/verifications/" + "%00" * 10),
        ("GET", "/v1/verifications/" + "a" * 5000),
    ):
        r = await api.request(method, url)
        assert r.status_code == 404, url
        assert r.json()["error"]["code"] == "not_found"
    r = await api.post("/v1/verifications/check", json={"id": "VEnope", "code": "123456"})
    assert r.status_code == 404


async def test_wrong_method_and_path(api: ApiClient) -> None:
    r = await api.request("DELETE", "/v1/verifications")
    assert r.status_code == 405 and r.json()["error"]["code"] == "invalid_request"
    r = await api.get("/v2/whatever")  # Twilio's shape under /v2 (a Bearer key is no login)
    assert r.status_code == 401 and r.json()["code"] == 20003


async def test_destination_refused_and_explain(api: ApiClient) -> None:
    r = await api.post("/v1/verifications", json={"to": "+447012345678"})
    assert r.status_code == 403
    assert r.json()["error"] == {
        "code": "destination_refused",
        "message": "destination refused: number_type:personal_number",
        "reason": "number_type:personal_number",
    }
    r = await api.get("/v1/phone-numbers/+449012345678")
    body = r.json()
    assert body["type"] == "premium_rate"
    assert body["channels"]["sms"] == {"allowed": False, "reason": "premium_rate"}


async def test_delivery_failure_is_502(api: ApiClient, outbox: MemoryTransport) -> None:
    from otpguard.errors import DeliveryError

    outbox.fail_with = DeliveryError("unroutable", provider_code=21612)
    r = await api.post("/v1/verifications", json={"to": UK_MOBILE})
    assert r.status_code == 502
    assert r.json()["error"] == {
        "code": "delivery_failed",
        "message": "delivery failed: unroutable",
        "reason": "unroutable",
        "provider_code": 21612,
    }


async def test_store_down_fails_closed(api: ApiClient, outbox: MemoryTransport) -> None:
    v = await start(api)
    code = outbox.last_code()
    await api.verifier.store.aclose()
    r = await api.post("/v1/verifications", json={"to": "+447400123457"})
    assert r.status_code == 503 and r.json()["error"]["code"] == "unavailable"
    r = await api.post("/v1/verifications/check", json={"id": v["id"], "code": code})
    assert r.status_code == 503
    assert (await api.get("/readyz")).status_code == 503
    assert len(outbox.outbox) == 1
    # the store cannot record a store.error event, so it is counted in the metrics
    app = api.http._transport.app  # type: ignore[attr-defined]
    counted = app.state.monitor.metrics.events.labels("store.error")._value.get()
    assert counted == 3


async def test_openapi_schema_has_error_model(api: ApiClient) -> None:
    schema = api.http._transport.app.openapi()  # type: ignore[attr-defined]
    assert "ErrorOut" in json.dumps(schema)


async def test_readyz_is_503_never_500_whatever_the_store_raises(
    settings: Any, clock: ManualClock, outbox: MemoryTransport, caplog: pytest.LogCaptureFixture
) -> None:
    """redis-py given an unknown URL option raised TypeError on every command; a probe
    must read "not ready", not a 500 with a traceback."""
    import httpx

    from otpguard.service import Verifier
    from otpguard.stores.sqlite import SQLiteStore
    from otpguard.web.app import create_app

    class RaisingHealth(SQLiteStore):
        async def health(self) -> None:
            raise TypeError("AbstractConnection.__init__() got an unexpected keyword argument")

    verifier = Verifier(settings, RaisingHealth(settings.store_url), outbox, clock=clock)
    app = create_app(settings, verifier, clock=clock, background=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            r = await http.get("/readyz")
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "unavailable"
    assert not any(rec.exc_info for rec in caplog.records)  # no traceback logged


@pytest.mark.parametrize(
    ("kwargs", "got"),
    [
        ({"content": b'{"to": "+447400123456"}'}, "no Content-Type"),
        ({"data": {"to": "+447400123456"}}, "'application/x-www-form-urlencoded'"),
    ],
    ids=["no-content-type", "form"],
)
async def test_a_body_not_sent_as_json_says_to_send_content_type_json(
    api: ApiClient, outbox: MemoryTransport, kwargs: dict[str, Any], got: str
) -> None:
    r = await api.post("/v1/verifications", **kwargs)
    assert r.status_code == 422
    message = r.json()["error"]["message"]
    assert "Content-Type: application/json" in message and got in message
    assert outbox.outbox == []
