"""/v2 FriendlyName and CustomFriendlyName go into the SMS: a brand name, no more.

Without a restriction any API key could make otpguard text "PayPal. Call 0800 000"
or a link to any number, from the operator's sender.
"""

from __future__ import annotations

import base64
import json
from dataclasses import replace

import pytest

from otpguard.transports.memory import MemoryTransport

from .conftest import UK_MOBILE, ApiClient

SAFE = ["Acme", "Acme Shop", "Bob's Bikes", "B&Q", "Shop 24", "Club 1899", "x-ray", "A" * 30]
UNSAFE = [
    "PayPal. Call 0800 000",
    "Call 08000000",
    "Acme 0800 123 456",
    "Acme +44 7400",
    "evil.example",
    "https://evil",
    "www.evil.com",
    "me@evil",
    "Acme/login",
    "P\u0430yPal",  # a Cyrillic a
    "Acme\u200bShop",  # a zero-width space
    "Acme\nShop",
    "Acme  Shop",
    "12345",
    "---",
    "A" * 31,
]


def basic(key: str) -> dict[str, str]:
    user = "og_" + key.split("_")[1]
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{key}".encode()).decode()}


async def service(api: ApiClient, name: str = "Acme") -> tuple[int, dict[str, object]]:
    r = await api.http.post("/v2/Services", data={"FriendlyName": name}, headers=basic(api.key))
    return r.status_code, r.json()


async def start(api: ApiClient, sid: object, **form: str) -> tuple[int, dict[str, object]]:
    r = await api.http.post(
        f"/v2/Services/{sid}/Verifications",
        data={"To": UK_MOBILE, "Channel": "sms", **form},
        headers=basic(api.key),
    )
    return r.status_code, r.json()


@pytest.mark.parametrize("name", UNSAFE)
async def test_unsafe_custom_friendly_names_are_refused(
    api: ApiClient, outbox: MemoryTransport, name: str
) -> None:
    _, svc = await service(api)
    status, body = await start(api, svc["sid"], CustomFriendlyName=name)
    assert status == 400 and body["code"] == 60200
    assert "CustomFriendlyName" in str(body["message"])
    assert outbox.outbox == []


@pytest.mark.parametrize("name", UNSAFE)
async def test_unsafe_service_names_are_refused(api: ApiClient, name: str) -> None:
    status, body = await service(api, name)
    assert status == 400 and "FriendlyName" in str(body["message"])
    _, svc = await service(api)
    r = await api.http.post(
        f"/v2/Services/{svc['sid']}", data={"FriendlyName": name}, headers=basic(api.key)
    )
    assert r.status_code == 400 and r.json()["code"] == 60200


@pytest.mark.parametrize("name", SAFE)
async def test_brand_names_reach_the_message(
    api: ApiClient, outbox: MemoryTransport, name: str
) -> None:
    _, svc = await service(api, name)
    assert (await start(api, svc["sid"]))[0] == 201
    _, other = await service(api)
    assert (await start(api, other["sid"], CustomFriendlyName=name))[0] == 201
    assert [m.service_name for m in outbox.outbox] == [name, name]
    assert name in outbox.outbox[-1].render_text()


async def test_a_service_saved_with_an_unsafe_name_sends_nothing(
    api: ApiClient, outbox: MemoryTransport
) -> None:
    """A service stored before the restriction keeps its name, but it goes out no more."""
    _, svc = await service(api)
    store = api.verifier.store
    record = await store.get_service(svc["sid"])
    assert record is not None
    raw = json.loads(record.document)
    raw["friendly_name"] = "PayPal. Call 0800 000"
    assert await store.put_service(replace(record, document=json.dumps(raw)), 1)
    status, body = await start(api, svc["sid"])
    assert status == 400 and "FriendlyName" in str(body["message"])
    assert (await start(api, svc["sid"], CustomFriendlyName="Acme"))[0] == 201
    assert [m.service_name for m in outbox.outbox] == ["Acme"]
