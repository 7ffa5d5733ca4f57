"""The email channel on every backend: no code at rest after a whole email session,
and the per-mailbox, per-domain and domain-admission limits exact under concurrent
starts (each decided inside the store's one atomic admit).

Codes are 10 digits here, as in ``test_no_code_at_rest.py``."""

from __future__ import annotations

import asyncio
from typing import Any

from otpguard.clock import ManualClock
from otpguard.codes import new_secret_hex
from otpguard.config import load_settings
from otpguard.errors import RateLimited
from otpguard.models import Channel
from otpguard.service import Verifier
from otpguard.stores import Store
from otpguard.transports.memory import MemoryTransport

from ..dump import dump_store

OFF = "off"


def email_verifier(
    store: Store, outbox: MemoryTransport, clock: ManualClock | None = None, **overrides: Any
) -> Verifier:
    settings = load_settings(
        env={}, secret_keys=[new_secret_hex()], transport="memory", code_length=10,
        log_events=False, failed_check_floor=0.0, **overrides,
    )  # fmt: skip
    return Verifier(settings, store, outbox, clock=clock or ManualClock())  # the fixture opens it


async def test_no_email_code_in_any_store(store: Store) -> None:
    outbox, clock = MemoryTransport(), ManualClock()
    otp = email_verifier(store, outbox, clock)
    ids = []
    addresses = [f"user{n}@mail{n}.example" for n in range(4)]
    for n, to in enumerate(addresses):
        v = await otp.start(to, Channel.EMAIL, client_ip=f"198.51.100.{n + 1}")
        ids.append(v.id)
        code = outbox.last_code(v.to)
        await otp.check(code[:-1] + str((int(code[-1]) + 1) % 10), verification_id=v.id)
    clock.advance(31)
    for vid in ids[:2]:
        await otp.resend(vid)
    for to in addresses:
        assert (await otp.check(outbox.last_code(to), to=to)).valid
    dump = await dump_store(store)
    assert all(vid in dump for vid in ids)
    codes = {m.code for m in outbox.outbox}
    assert len(codes) == 6
    for code in codes:
        assert code not in dump


async def race(otp: Verifier, addresses: list[str]) -> list[str]:
    async def one(i: int, to: str) -> str:
        try:
            await otp.start(to, Channel.EMAIL, client_ip=f"10.0.{i // 250}.{i % 250 + 1}")
        except RateLimited as exc:
            return exc.rule
        return "sent"

    return list(await asyncio.gather(*(one(i, to) for i, to in enumerate(addresses))))


async def test_concurrent_starts_per_mailbox_and_domain_are_exact(store: Store) -> None:
    outbox = MemoryTransport()
    otp = email_verifier(store, outbox, limit_email="3/10m", limit_email_domain="5/10m",
                 limit_ip=OFF, limit_network=OFF)  # fmt: skip
    got = await race(otp, [f"jo+{i}@one.example" for i in range(12)])
    assert got.count("sent") == 3 and got.count("email") == 9
    got = await race(otp, [f"u{i}@two.example" for i in range(12)])
    assert got.count("sent") == 5 and got.count("email_domain") == 7


async def test_concurrent_starts_fill_a_domain_bucket_exactly(store: Store) -> None:
    outbox = MemoryTransport()
    otp = email_verifier(store, outbox, admission_email_domain="4/10m", limit_email=OFF,
                 limit_ip=OFF, limit_network=OFF)  # fmt: skip
    got = await race(otp, [f"u{i}@pumped.example" for i in range(12)])
    assert got.count("sent") == 4 and got.count("domain") == 8
