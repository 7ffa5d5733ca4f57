"""Webhooks of the Twilio Verify-compatible /v2 API: a service's own URL, else its key's."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest

from otpguard.clock import ManualClock
from otpguard.config import Settings
from otpguard.transports.memory import MemoryTransport
from otpguard.webhook_delivery import WebhookWorker

from .conftest import UK_MOBILE, ApiClient, open_api
from .webhook_receiver import Receiver, running_receiver

ADMIN = ("verify", "admin")
OTHER = "+447400654321"


@pytest.fixture
def service_hooks(clock: ManualClock) -> Iterator[Receiver]:
    yield from running_receiver(clock)


@pytest.fixture
def key_hooks(clock: ManualClock) -> Iterator[Receiver]:
    yield from running_receiver(clock)


def auth(api: ApiClient) -> dict[str, str]:
    token = base64.b64encode(f"og_{api.key.split('_')[1]}:{api.key}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


async def service(api: ApiClient, name: str) -> str:
    r = await api.http.post("/v2/Services", headers=auth(api), data={"FriendlyName": name})
    assert r.status_code == 201
    sid: str = r.json()["sid"]
    return sid


async def start_v2(api: ApiClient, sid: str, to: str) -> Any:
    return await api.http.post(
        f"/v2/Services/{sid}/Verifications", headers=auth(api), data={"To": to, "Channel": "sms"}
    )


async def drain(api: ApiClient) -> None:
    w: WebhookWorker = api.http._transport.app.state.webhook_worker  # type: ignore[attr-defined]
    while await w.run_once():
        pass


def seen(receiver: Receiver) -> list[tuple[str, str | None]]:
    return sorted((r.payload["type"], r.payload["verification_id"]) for r in receiver.received)


async def test_a_service_url_takes_its_verifications_and_others_go_to_the_key(
    settings: Settings,
    clock: ManualClock,
    outbox: MemoryTransport,
    service_hooks: Receiver,
    key_hooks: Receiver,
) -> None:
    async with open_api(settings, clock, outbox, ADMIN) as api:
        hooked, plain = await service(api, "Acme"), await service(api, "Other")
        r = await api.request(
            "PUT", f"/v1/admin/webhooks/services/{hooked}", json={"url": service_hooks.url}
        )
        assert r.status_code == 200 and r.json()["secret"].startswith("whsec_")
        assert r.json()["endpoint"]["scope"] == f"service:{hooked}"
        key_id = api.key.split("_")[1]
        path = f"/v1/admin/webhooks/keys/{key_id}"
        r = await api.request("PUT", path, json={"url": key_hooks.url})
        assert r.status_code == 200

        first = (await start_v2(api, hooked, UK_MOBILE)).json()["sid"]
        code = outbox.last_code(UK_MOBILE)
        check = await api.http.post(
            f"/v2/Services/{hooked}/VerificationCheck",
            headers=auth(api),
            data={"To": UK_MOBILE, "Code": code},
        )
        assert check.json()["status"] == "approved"
        # Right after a /v2 request of the hooked service: nothing of it is left over.
        by_v1 = (await api.post("/v1/verifications", json={"to": "+447400111222"})).json()["id"]
        in_plain = (await start_v2(api, plain, OTHER)).json()["sid"]
        assert (await start_v2(api, hooked, "+449012345678")).status_code == 403

        # A later event outside any /v2 request (an expiry seen through /v1) still
        # finds the service its verification was started under.
        second = (await start_v2(api, hooked, "+447400333444")).json()["sid"]
        clock.advance(settings.code_ttl + 1)
        assert (await api.get(f"/v1/verifications/{second}")).json()["status"] == "expired"
        await drain(api)
        missing = await api.request(
            "PUT", "/v1/admin/webhooks/services/VA" + "0" * 32, json={"url": service_hooks.url}
        )
        removed = await api.request("DELETE", f"/v1/admin/webhooks/services/{hooked}")
    assert seen(service_hooks) == sorted(
        [
            ("started", first), ("sent", first), ("approved", first), ("refused", None),
            ("started", second), ("sent", second), ("expired", second),
        ]
    )  # fmt: skip
    assert seen(key_hooks) == sorted(
        [("started", in_plain), ("sent", in_plain), ("started", by_v1), ("sent", by_v1)]
    )
    assert missing.status_code == 404
    assert removed.status_code == 200
