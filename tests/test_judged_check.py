"""PostgreSQL and Redis judge a check by id in one call (``otpguard_check``,
``stores/postgres_check.py``; the ``check`` script, ``stores/redis_check.py``): the
same story told through it and through the operations it replaces
(``opening.in_steps``) leaves the same rows in two databases (two key prefixes on
Redis), once the random ids, codes and tags are named; the engine announces exactly
the events the call stored; and a row of before the upgrade (no plan, a tag of the
earlier form) still checks, in steps."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import uuid
from collections.abc import AsyncIterator

import pytest

from otpguard import counters
from otpguard.clock import ManualClock
from otpguard.codes import new_secret_hex
from otpguard.config import load_settings
from otpguard.errors import NotFound
from otpguard.events import Event, EventType
from otpguard.models import Status
from otpguard.service import Verifier
from otpguard.stores import EventQuery, Store, store_from_url
from otpguard.stores.opening import Presented
from otpguard.transports.memory import MemoryTransport

from .backends import BackendUnavailable, create_database
from .dump import dump_store
from .needs import unavailable

UK, UK2, UK3 = "+447400123456", "+447400123457", "+447400123458"
KEY = new_secret_hex()


async def _store(backend: str, purpose: str, redis: str | None) -> Store:
    if backend == "redis":
        assert redis is not None
        url = f"{redis}?prefix={purpose}{uuid.uuid4().hex[:8]}"
    else:
        try:
            url = create_database(purpose)
        except BackendUnavailable as exc:
            unavailable(str(exc))
    store = store_from_url(url)
    await store.open()
    return store


@pytest.fixture(
    params=[pytest.param("postgres", marks=pytest.mark.postgres),
            pytest.param("redis", marks=pytest.mark.redis)],
)  # fmt: skip
async def stores(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Store, Store]]:
    backend: str = request.param
    redis = request.getfixturevalue("redis_url") if backend == "redis" else None
    judged = await _store(backend, "judged_one_call", redis)
    steps = await _store(backend, "judged_in_steps", redis)
    assert judged.judges_checks
    steps.judges_checks = False  # the engine judges, as before
    yield judged, steps
    await judged.aclose()
    await steps.aclose()


async def _change(store: Store, vid: str, **fields: str | None) -> None:
    """Change a verification's stored fields behind the store's back (None: remove)."""
    if store.backend == "redis":
        client = store._live  # type: ignore[attr-defined]
        key = store._vkey(vid)  # type: ignore[attr-defined]
        for name, value in fields.items():
            name = "to" if name == "to_number" else name
            await (client.hdel(key, name) if value is None else client.hset(key, name, value))
        return
    from psycopg import sql

    async with store._pool.connection() as c:  # type: ignore[attr-defined]
        for name, value in fields.items():
            update = sql.SQL("UPDATE verifications SET {} = %s WHERE id = %s")
            await c.execute(update.format(sql.Identifier(name)), (value, vid))


def _verifier(store: Store, clock: ManualClock, outbox: MemoryTransport) -> Verifier:
    settings = load_settings(
        env={}, secret_keys=[KEY], transport="memory", log_events=False,
        failed_check_floor=0.0, limit_failed_checks="100/1h",
    )  # fmt: skip
    return Verifier(settings, store, outbox, clock=clock)


async def _story(store: Store) -> tuple[list[str], list[Event]]:
    """Every outcome a check by id can have, on ``store``: its verification ids in
    order, and the events the engine announced."""
    clock, outbox = ManualClock(1_800_000_000.0), MemoryTransport()
    otp = _verifier(store, clock, outbox)
    announced: list[Event] = []
    otp.listeners.append(announced.append)
    ids = []

    async def check(code: str, vid: str, **extra: str) -> bool:
        clock.advance(1)
        return (await otp.check(code, verification_id=vid, client_ip="192.0.2.7", **extra)).valid

    a = await otp.start(UK, client_ip="192.0.2.7", service="VA" + "5" * 32)  # in its events
    ids.append(a.id)
    code = outbox.outbox[-1].code
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    assert not await check(wrong, a.id)
    assert not await check(code, a.id, purpose="transaction", amount="10.00", currency="EUR",
                           payee="Shop")  # fmt: skip
    assert await check(code, a.id)  # approved: buckets, trusted, counters
    assert not await check(code, a.id)  # not pending: nothing compared
    b = await otp.start(UK2, client_ip="192.0.2.7")
    ids.append(b.id)
    for _ in range(5):  # the fifth locks it
        assert not await check(wrong, b.id)
    assert not await check(outbox.outbox[-1].code, b.id)  # locked: nothing compared
    c = await otp.start(UK3, channel="whatsapp", client_ip="192.0.2.7")
    ids.append(c.id)
    clock.advance(600)
    assert not await check(outbox.outbox[-1].code, c.id)  # expired now
    with pytest.raises(NotFound):
        await check(code, "VE" + "0" * 32)
    return ids, announced


def _named(dump: str, ids: list[str]) -> list[str]:
    """The dump's lines with what is random named: the verification ids by their
    order, event ids, tags, key ids; the plan column (kept only by the one call) left
    out. Sorted: a table's rows come in no fixed order."""
    for n, vid in enumerate(ids):
        dump = dump.replace(vid, f"<v{n}>")
    dump = re.sub(r"judged_(one_call|in_steps)[0-9a-f]{8}:", "<p>:", dump)  # Redis prefixes
    dump = re.sub(r"\b[0-9a-f]{25}\b", "<event>", dump)  # new_event_id
    dump = re.sub(r"2\.[0-9a-f]{64}\.[0-9a-f]{32}", "<tag>", dump)
    dump = re.sub(r"(\.\d+):[0-9a-f]{16}:", r"\1:<nonce>:", dump)  # Redis rate entries
    lines, table = [], ""
    for line in dump.splitlines():
        if line.startswith("== "):
            table = line.rsplit(":", 1)[0] if line.startswith("== <p>") else line.split(":")[0]
            line = line.replace("\tplan", "")
        elif table == "== verifications":
            line = re.sub(r'\t\{"h": [^\t]*\}$|\tNone$', "", line)
        elif table.startswith("== <p>:{v:") and line.startswith("plan\t"):
            continue  # the plan, kept by the one call only
        if table != "== schema_migrations":  # when each step ran
            lines.append(f"{table} {line}")
    return sorted(lines)


async def test_one_call_leaves_what_the_steps_leave(stores: tuple[Store, Store]) -> None:
    judged, steps = stores
    ids_judged, announced = await _story(judged)
    ids_steps, _ = await _story(steps)
    one, other = await dump_store(judged), await dump_store(steps)
    assert _named(one, ids_judged) == _named(other, ids_steps)
    # The one call ran: the rows it judged keep their plans, the others none.
    plans = one.count('{"h": ') + one.count("\nplan\t")
    assert plans == 3 and '{"h": ' not in other and "\nplan\t" not in other
    # It announced exactly what it stored (the started and sent events come from the
    # starts' own operations).
    stored = {e.id: e for e in await judged.list_events(EventQuery(limit=1000))}
    checks = [e for e in announced if e.type in Presented.EVENTS]
    assert {e.type for e in checks} == set(Presented.EVENTS)
    for e in checks:
        assert e.to_dict() == stored[e.id].to_dict()
        assert e.owner is None  # started without an API key


async def test_a_row_of_before_the_upgrade_still_checks_in_steps(
    stores: tuple[Store, Store],
) -> None:
    """No plan and a tag of the earlier form: the call only opens it; the engine
    compares and approves in a second operation."""
    judged, _ = stores
    clock, outbox = ManualClock(1_800_000_000.0), MemoryTransport()
    otp = _verifier(judged, clock, outbox)
    v = await otp.start(UK)
    code = outbox.outbox[-1].code
    secret = bytes.fromhex(KEY)
    parts = (v.key_id, v.id, v.to, v.channel.value, code)
    earlier = hmac.new(secret, "\x1f".join(parts).encode(), hashlib.sha256).hexdigest()
    await _change(judged, v.id, code_hash=earlier, plan=None)
    result = await otp.check(code, verification_id=v.id)
    assert result.valid and (await otp.get(v.id)).status is Status.APPROVED
    passed = await judged.list_events(EventQuery(types=(EventType.CHECK_PASSED.value,)))
    assert [e.verification_id for e in passed] == [v.id]


async def test_tags_of_form_1_check_in_steps(stores: tuple[Store, Store]) -> None:
    """OTPGUARD_TAG_FORM=1 (an upgrade with instances of before still running): the
    codes are signed in the earlier form, which the one call does not judge; the
    check is carried out in steps and approves once."""
    judged, _ = stores
    clock, outbox = ManualClock(1_800_000_000.0), MemoryTransport()
    settings = load_settings(
        env={"OTPGUARD_TAG_FORM": "1"}, secret_keys=[KEY], transport="memory",
        log_events=False, failed_check_floor=0.0,
    )  # fmt: skip
    otp = Verifier(settings, judged, outbox, clock=clock)
    v = await otp.start(UK)
    assert not v.code_hash.startswith("2.")
    assert (await otp.check(outbox.outbox[-1].code, verification_id=v.id)).valid
    assert not (await otp.check(outbox.outbox[-1].code, verification_id=v.id)).valid


async def test_a_plan_that_is_not_one_leaves_the_check_to_the_steps(
    stores: tuple[Store, Store],
) -> None:
    """A stored plan the call cannot read (not an object) is no plan: the check is
    opened by the call and carried out in steps, and approves once."""
    judged, _ = stores
    clock, outbox = ManualClock(1_800_000_000.0), MemoryTransport()
    otp = _verifier(judged, clock, outbox)
    v = await otp.start(UK)
    await _change(judged, v.id, plan="[1]")
    assert (await otp.check(outbox.outbox[-1].code, verification_id=v.id)).valid
    assert not (await otp.check(outbox.outbox[-1].code, verification_id=v.id)).valid


async def test_a_row_moved_to_another_number_does_not_approve(
    stores: tuple[Store, Store],
) -> None:
    """The call compares only what needs no number; the engine checks the seal on the
    row it returns, so a row whose number was changed in the database answers no."""
    judged, _ = stores
    clock, outbox = ManualClock(1_800_000_000.0), MemoryTransport()
    otp = _verifier(judged, clock, outbox)
    v = await otp.start(UK)
    await _change(judged, v.id, to_number=UK2)
    result = await otp.check(outbox.outbox[-1].code, verification_id=v.id)
    assert not result.valid


@pytest.mark.parametrize("type_", Presented.EVENTS)
@pytest.mark.parametrize("channel", ["sms", "email"])
def test_the_call_counts_its_events_as_counters_does(type_: str, channel: str) -> None:
    """otpguard_check raises one ``t`` counter per event, of the row's country (an
    email's: ``email``); ``counters.kinds_of`` must say the same of these four types."""
    row = "email" if channel == "email" else "GB"
    e = Event(type=type_, ts=0.0, country="GB", channel=channel, number_hash="ab" * 16,
              number_masked="+44*******456", client_ip="192.0.2.7")  # fmt: skip
    assert counters.kinds_of(e) == [f"t|{type_}|{row}"]


async def test_checks_by_id_and_by_number_of_one_number_race_without_deadlock(
    stores: tuple[Store, Store],
) -> None:
    """otpguard_check holds the number's and the IP's reserved keys when it settles;
    a settle by number takes the same keys before the buckets and counters, so the two
    racing on one number, one IP and one country bucket never wait on each other in a
    cycle (PostgreSQL would abort one: a 503). Each verification approves once."""
    judged, _ = stores
    clock, outbox = ManualClock(1_800_000_000.0), MemoryTransport()
    settings = load_settings(
        env={}, secret_keys=[KEY], transport="memory", log_events=False,
        failed_check_floor=0.0, limit_failed_checks="1000/1h", limit_phone="100/10m",
        limit_ip="100/10m", resend_cooldown=0,
    )  # fmt: skip
    otp = Verifier(settings, judged, outbox, clock=clock)
    started = []
    for _ in range(8):
        v = await otp.start(UK, client_ip="192.0.2.7")
        started.append((v.id, outbox.outbox[-1].code))

    async def by_id(vid: str, code: str) -> bool:
        return (await otp.check(code, verification_id=vid, client_ip="192.0.2.7")).valid

    async def by_number(code: str) -> bool:
        try:
            return (await otp.check(code, to=UK, client_ip="192.0.2.7")).valid
        except NotFound:
            return False

    calls = [by_id(vid, code) for _ in range(2) for vid, code in started]
    calls += [by_number(code) for _ in range(2) for _, code in started]
    results = await asyncio.gather(*calls)
    assert sum(results) == len(started)  # every verification once, nothing raised
    for vid, _ in started:
        assert (await otp.get(vid)).status is Status.APPROVED
