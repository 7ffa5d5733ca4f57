"""The code appears nowhere but on the phone: not in a response, header, log line,
event or stored row.

Codes are 10 digits long here so that an accidental match against a timestamp or
a phone number is practically impossible (a 6-digit code could appear inside a
timestamp by chance and make the test flaky); the code path is the same.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest

from otpguard.clock import ManualClock
from otpguard.config import Settings
from otpguard.errors import DeliveryError
from otpguard.events import Event
from otpguard.stores import EventQuery
from otpguard.transports.memory import MemoryTransport

from .conftest import ApiClient
from .dump import dump_store


def haystacks(client: ApiClient, caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    out = []
    for r in client.responses:
        out.append((f"body of {r.request.method} {r.request.url.path}", r.text))
        out.append((f"headers of {r.request.url.path}", str(list(r.headers.items()))))
    for rec in caplog.records:
        out.append((f"log {rec.name}", rec.getMessage()))
        out.append((f"log args {rec.name}", repr(rec.args)))
    return out


async def every_haystack(
    client: ApiClient, caplog: pytest.LogCaptureFixture
) -> tuple[list[Event], str, list[tuple[str, str]]]:
    """The stored events, the store's dump, and every response, header, log line and
    event as haystacks (the dump is the caller's to scan: what it must not hold differs)."""
    events = await client.verifier.store.list_events(EventQuery(limit=10_000))
    dump = await dump_store(client.verifier.store)
    stacks = haystacks(client, caplog) + [(f"event {e.type}", e.to_json()) for e in events]
    return events, dump, stacks


async def drive_session(client: ApiClient, outbox: MemoryTransport, clock: ManualClock) -> None:
    """Starts, resends, wrong and right checks, cancels, expiry, refusals, failures."""
    numbers = [f"+4474{n:02d}123456" for n in range(6)]  # distinct prefixes
    ids = []
    for n in numbers:
        r = await client.post("/v1/verifications", json={"to": n, "client_ip": "198.51.100.9"})
        assert r.status_code == 201
        ids.append(r.json()["id"])
    # resend after cooldown, and one inside it
    await client.post(f"/v1/verifications/{ids[0]}/resend")
    clock.advance(31)
    assert (await client.post(f"/v1/verifications/{ids[0]}/resend")).status_code == 200
    # wrong and right checks, by id and by number
    for vid, n in zip(ids, numbers, strict=True):
        code = outbox.last_code(n)
        bad = code[:-1] + str((int(code[-1]) + 3) % 10)
        await client.post("/v1/verifications/check", json={"id": vid, "code": bad})
        await client.post("/v1/verifications/check", json={"to": n, "code": code})
        await client.post("/v1/verifications/check", json={"id": vid, "code": code})
        await client.get(f"/v1/verifications/{vid}")
    # transaction codes: a mismatched amount, then the right one, by id and by number
    pay = {"purpose": "transaction", "amount": {"value": "25", "currency": "GBP"}}
    for n, check_by in (("+447400124444", "id"), ("+447400124443", "to")):
        r = await client.post("/v1/verifications", json={"to": n, **pay, "payee": "Acme Ltd"})
        assert r.status_code == 201
        ref = {"id": r.json()["id"]} if check_by == "id" else {"to": n}
        code = outbox.last_code(n)
        other = {**pay, "amount": {"value": "26", "currency": "GBP"}, "payee": "Acme Ltd"}
        await client.post("/v1/verifications/check", json={**ref, "code": code, **other})
        right = {**ref, "code": code, **pay, "payee": "Acme Ltd"}
        assert (await client.post("/v1/verifications/check", json=right)).json()["valid"]
    # lock one out
    r = await client.post("/v1/verifications", json={"to": "+447400129999"})
    vid = r.json()["id"]
    code = outbox.last_code("+447400129999")
    for d in range(1, 7):
        await client.post(
            "/v1/verifications/check",
            json={"id": vid, "code": code[:-1] + str((int(code[-1]) + d) % 10)},
        )
    await client.post("/v1/verifications/check", json={"id": vid, "code": code})
    # cancel one, expire one
    r = await client.post("/v1/verifications", json={"to": "+447400128888"})
    await client.post(f"/v1/verifications/{r.json()['id']}/cancel")
    r = await client.post("/v1/verifications", json={"to": "+447400127777"})
    clock.advance(301)
    await client.post(
        "/v1/verifications/check",
        json={"id": r.json()["id"], "code": outbox.last_code("+447400127777")},
    )
    # rate-limited, refused and failed sends
    for _ in range(4):
        await client.post("/v1/verifications", json={"to": "+447400126666"})
    await client.post("/v1/verifications", json={"to": "+449012345678"})
    outbox.fail_with = DeliveryError("unroutable", provider_code=21612)
    await client.post("/v1/verifications", json={"to": "+447400125555"})
    outbox.fail_with = None


async def test_no_code_anywhere(
    settings_factory: Callable[..., Settings],
    api_factory: Callable[..., Any],
    outbox: MemoryTransport,
    clock: ManualClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = settings_factory(code_length=10)
    async with api_factory(settings) as client:
        await drive_session(client, outbox, clock)
        events, dump, stacks = await every_haystack(client, caplog)
        stacks.append(("store dump", dump))

    codes = {m.code for m in outbox.outbox}
    assert len(codes) >= 10  # the session really issued codes
    assert len(client.responses) > 40 and len(events) > 40 and len(caplog.records) > 40
    for code in codes:
        for where, text in stacks:
            assert code not in text, f"code leaked into {where}"


async def test_the_scan_would_see_a_leak(
    settings_factory: Callable[..., Settings],
    api_factory: Callable[..., Any],
    outbox: MemoryTransport,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The haystacks are real: a code written to a log line is found."""
    settings = settings_factory(code_length=10)
    async with api_factory(settings) as client:
        await client.post("/v1/verifications", json={"to": "+447400123456"})
        code = outbox.last_code()
        logging.getLogger("otpguard.test").info("oops %s", code)
        stacks = haystacks(client, caplog)
    assert any(code in text for _, text in stacks)


EMAIL_TO = ["annqlee@mail.example.com", "boqz+news@corp.example", "cyqz@shop.example"]


async def drive_email_session(
    client: ApiClient, outbox: MemoryTransport, clock: ManualClock
) -> None:
    """The email channel: starts, a resend, wrong and right checks by id and by address,
    a lock-out, refusals (disposable, malformed, limited) and a failed send."""
    ids = []
    for to in EMAIL_TO:
        body = {"to": to.upper(), "channel": "email", "client_ip": "198.51.100.9"}
        r = await client.post("/v1/verifications", json=body)
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    clock.advance(31)
    assert (await client.post(f"/v1/verifications/{ids[0]}/resend")).status_code == 200
    for vid, to in zip(ids, EMAIL_TO, strict=True):
        code = outbox.last_code(to)
        bad = code[:-1] + str((int(code[-1]) + 3) % 10)
        await client.post("/v1/verifications/check", json={"id": vid, "code": bad})
        await client.post("/v1/verifications/check", json={"to": to, "code": bad})
        await client.post("/v1/verifications/check", json={"to": to, "code": code})
        await client.get(f"/v1/verifications/{vid}")
    r = await client.post(
        "/v1/verifications", json={"to": "deeqz@lock.example", "channel": "email"}
    )
    vid, code = r.json()["id"], outbox.last_code("deeqz@lock.example")
    for d in range(1, 7):
        bad = code[:-1] + str((int(code[-1]) + d) % 10)
        await client.post("/v1/verifications/check", json={"id": vid, "code": bad})
    for to in ["eveqz@mailinator.com", "Eve Smith <eveqz@x.example>", *["fayqz@limit.example"] * 4]:
        await client.post("/v1/verifications", json={"to": to, "channel": "email"})
    outbox.fail_with = DeliveryError("invalid_address", provider_code=550)
    await client.post("/v1/verifications", json={"to": "gusqz@bounce.example", "channel": "email"})
    outbox.fail_with = None


async def test_email_no_code_anywhere_and_no_address_in_full(
    settings_factory: Callable[..., Settings],
    api_factory: Callable[..., Any],
    outbox: MemoryTransport,
    clock: ManualClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = settings_factory(code_length=10)
    async with api_factory(settings, scopes=("verify", "admin")) as client:
        await drive_email_session(client, outbox, clock)
        assert (await client.get("/metrics")).status_code == 200
        events, dump, stacks = await every_haystack(client, caplog)

    codes = {m.code for m in outbox.outbox}
    assert len(codes) >= 5 and len(events) > 20 and len(caplog.records) > 20
    addresses = [*EMAIL_TO, "deeqz@lock.example", "eveqz@mailinator.com", "fayqz@limit.example",
                 "gusqz@bounce.example"]  # fmt: skip
    assert any(e.reason == "disposable_domain" for e in events)
    assert any(e.rule == "email" for e in events)
    for where, text in stacks:
        for code in codes:
            assert code not in text, f"code leaked into {where}"
        for address in addresses:
            local = address.split("@")[0].split("+")[0]
            assert address not in text.lower(), f"{address} in full in {where}"
            assert local not in text.lower(), f"the local part of {address} in {where}"
    for code in codes:
        assert code not in dump, "code at rest"
