"""API key scopes: every route needs one, and only ``verify`` sends or checks codes.

``verify`` starts and checks (``/v1`` and ``/v2``), ``monitor`` reads (metrics,
admin reads, dashboard), ``admin`` is ``monitor`` plus the admin actions.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import pytest

from otpguard.apikeys import create_api_key
from otpguard.clock import ManualClock
from otpguard.config import Settings
from otpguard.transports.memory import MemoryTransport

from .conftest import UK_MOBILE, ApiClient
from .test_admin import sign_in

READS = ("/metrics", "/v1/admin/stats", "/v1/admin/events", "/v1/admin/alerts")


def basic(key: str) -> dict[str, str]:
    user = "og_" + key.split("_")[1]
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{key}".encode()).decode()}


async def v2_service(api: ApiClient, key: str) -> Any:
    return await api.http.post("/v2/Services", data={"FriendlyName": "Shop"}, headers=basic(key))


async def sends_refused(api: ApiClient, outbox: MemoryTransport) -> None:
    """Neither /v1 nor /v2 lets this key start or check a verification."""
    r = await api.post("/v1/verifications", json={"to": UK_MOBILE})
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    r = await api.post("/v1/verifications/check", json={"to": UK_MOBILE, "code": "123456"})
    assert r.status_code == 403
    r = await api.get(f"/v1/phone-numbers/{UK_MOBILE}")
    assert r.status_code == 403
    r = await v2_service(api, api.key)
    assert r.status_code == 403 and r.json()["code"] == 20403
    # A service made by a verify key does not let this key start under it either.
    _, verify = await create_api_key(api.verifier.store, "web", ("verify",), 0.0)
    sid = (await v2_service(api, verify)).json()["sid"]
    url = f"/v2/Services/{sid}/Verifications"
    r = await api.http.post(url, data={"To": UK_MOBILE, "Channel": "sms"}, headers=basic(api.key))
    assert r.status_code == 403 and r.json()["code"] == 20403
    r = await api.http.post(
        f"/v2/Services/{sid}/VerificationCheck",
        data={"To": UK_MOBILE, "Code": "123456"},
        headers=basic(api.key),
    )
    assert r.status_code == 403
    assert outbox.outbox == []


@pytest.mark.parametrize("scopes", [("admin",), ("monitor",), ("monitor", "admin")])
async def test_keys_without_verify_cannot_send_or_check(
    api_factory: Callable[..., Any],
    settings: Settings,
    outbox: MemoryTransport,
    scopes: tuple[str, ...],
) -> None:
    async with api_factory(settings, scopes=scopes) as api:
        await sends_refused(api, outbox)
        for url in READS:
            assert (await api.get(url)).status_code == 200, url


async def test_monitor_is_read_only(api_factory: Callable[..., Any], settings: Settings) -> None:
    async with api_factory(settings, scopes=("monitor",)) as api:
        r = await api.post("/v1/admin/alerts/evaluate")
        assert r.status_code == 403 and "admin scope" in r.json()["error"]["message"]
    async with api_factory(settings, scopes=("admin",)) as api:
        assert (await api.post("/v1/admin/alerts/evaluate")).status_code == 200


async def test_verify_keys_do_not_read_monitoring(
    api_factory: Callable[..., Any], settings: Settings, outbox: MemoryTransport
) -> None:
    async with api_factory(settings, scopes=("verify",)) as api:
        for url in READS:
            assert (await api.get(url)).status_code == 403, url
        assert (await api.post("/v1/verifications", json={"to": UK_MOBILE})).status_code == 201
        assert (await v2_service(api, api.key)).status_code == 201


async def test_existing_combined_keys_keep_both_powers(
    api_factory: Callable[..., Any], settings: Settings
) -> None:
    """Keys made before scopes were enforced (``otpguard api-keys create --scope admin``
    stored ``verify,admin``) keep working for both."""
    async with api_factory(settings, scopes=("verify", "admin")) as api:
        assert (await api.post("/v1/verifications", json={"to": UK_MOBILE})).status_code == 201
        for url in READS:
            assert (await api.get(url)).status_code == 200, url
        assert (await sign_in(api, api.key)).status_code == 303


async def test_the_dashboard_takes_a_monitor_key_and_refuses_verify_only(
    api_factory: Callable[..., Any], settings: Settings, clock: ManualClock
) -> None:
    async with api_factory(settings, scopes=("monitor",)) as api:
        r = await sign_in(api, api.key)
        assert r.status_code == 303 and r.headers["location"] == "/dashboard"
        assert (await api.http.get("/dashboard")).status_code == 200
        _, verify_only = await create_api_key(api.verifier.store, "web", ("verify",), clock())
        api.http.cookies.clear()
        r = await sign_in(api, verify_only)
        assert r.status_code == 403 and "monitor scope" in r.text
