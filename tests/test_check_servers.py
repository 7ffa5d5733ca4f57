"""Checks raced against real servers: two ``otpguard serve`` processes on one store (a
SQLite file, this run's Redis, a PostgreSQL database of its own), hit by concurrent
requests over HTTP. Wrong-code caps hold exactly; a resend and a check never both win;
the /v2 services cap per API key holds exactly."""

from __future__ import annotations

import asyncio
import base64
from collections import Counter
from pathlib import Path

import httpx
import pytest

from otpguard import tags
from otpguard.stores import EventQuery, store_from_url
from otpguard.transports.file import read_outbox
from otpguard.web.verify.services import MAX_SERVICES

from .test_admission_servers import store_url  # noqa: F401 - the fixture
from .test_multi_instance import Cluster, cluster

pytestmark = pytest.mark.slow

WRONG = "000000"  # never a code here: each test checks it is not the one sent


async def start(http: httpx.AsyncClient, c: Cluster, i: int, to: str, ip: str) -> str:
    r = await http.post(
        f"{c.urls[i % 2]}/v1/verifications", json={"to": to, "client_ip": ip}, headers=c.headers
    )
    assert r.status_code == 201, r.text
    vid: str = r.json()["id"]
    return vid


def basic(c: Cluster) -> dict[str, str]:
    """The /v2 API's credentials for the cluster's key: its id, then the whole key."""
    token = base64.b64encode(f"og_{c.key.split('_')[1]}:{c.key}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def codes(c: Cluster, vid: str) -> list[str]:
    return [m["code"] for m in read_outbox(c.outbox) if m["verification_id"] == vid]


async def test_a_resend_racing_checks_never_lets_the_old_code_approve(
    store_url: str,  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    """Each round: one resend on one instance and eight checks of the code it replaces,
    all at once over both. Either a check approves (and the resend is refused, nothing
    sent) or the resend sends a new code (and the old one approves nothing)."""
    env = {"OTPGUARD_RESEND_COOLDOWN": "0", "OTPGUARD_MAX_ATTEMPTS": "10"}
    async with cluster(store_url, tmp_path, env=env) as c, httpx.AsyncClient(timeout=60) as http:
        seen: Counter[str] = Counter()
        for t in range(12):
            ip = f"10.{t}.0.1"
            vid = await start(http, c, t, f"+4474{t:02d}{t:02d}5678", ip)
            (old,) = codes(c, vid)
            resend = http.post(
                f"{c.urls[t % 2]}/v1/verifications/{vid}/resend",
                json={"client_ip": ip},
                headers=c.headers,
            )
            checks = [
                http.post(
                    f"{c.urls[(t + i + 1) % 2]}/v1/verifications/check",
                    json={"id": vid, "code": old, "client_ip": ip},
                    headers=c.headers,
                )
                for i in range(8)
            ]
            r_resend, *r_checks = await asyncio.gather(resend, *checks)
            assert all(r.status_code == 200 for r in r_checks), [r.text for r in r_checks]
            approved = [r.json()["valid"] for r in r_checks].count(True)
            assert approved <= 1
            if r_resend.status_code == 200:
                seen["resent"] += 1
                assert approved == 0, f"round {t}: a new code was sent and the old one approved"
                assert len(codes(c, vid)) == 2
            else:
                seen["approved"] += 1
                assert r_resend.status_code == 409, r_resend.text
                assert approved == 1 and len(codes(c, vid)) == 1
        assert sum(seen.values()) == 12


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 10 ** len(code):0{len(code)}d}"


async def fire_checks(
    http: httpx.AsyncClient, c: Cluster, checks: list[tuple[str, str, str]]
) -> Counter[int]:
    """(verification id, code, client IP) each, all at once over both instances."""
    responses = await asyncio.gather(
        *(
            http.post(
                f"{c.urls[i % 2]}/v1/verifications/check",
                json={"id": vid, "code": code, "client_ip": ip},
                headers=c.headers,
            )
            for i, (vid, code, ip) in enumerate(checks)
        )
    )
    for r in responses:
        assert r.status_code in (200, 429), r.text
        if r.status_code == 200:
            assert r.json()["valid"] is False
        else:
            assert r.json()["error"]["rule"] == "failed_checks"
    return Counter(r.status_code for r in responses)


async def test_the_wrong_code_cap_per_ip_is_exact(
    store_url: str,  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    """200 wrong codes from one IP at once (40 verifications, 5 each): exactly 30 are
    compared (limit_ip_failed_checks 30/1h), 170 refused."""
    async with cluster(store_url, tmp_path) as c, httpx.AsyncClient(timeout=120) as http:
        vids = [
            await start(http, c, i, f"+4477{i:02d}{i:02d}1234", f"10.{i}.0.1") for i in range(40)
        ]
        checks = [(vid, wrong(codes(c, vid)[0]), "203.0.113.9") for vid in vids for _ in range(5)]
        assert await fire_checks(http, c, checks) == {200: 30, 429: 170}


async def test_the_wrong_code_cap_per_number_is_exact(
    store_url: str,  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    """Three verifications of one number, five wrong codes each from fifteen IPs, at
    once: exactly 10 are compared (limit_failed_checks 10/1h), 5 refused."""
    number = "+447400765432"
    async with cluster(store_url, tmp_path) as c, httpx.AsyncClient(timeout=60) as http:
        vids = [await start(http, c, i, number, f"10.{i}.0.1") for i in range(3)]
        checks = [
            (vid, wrong(codes(c, vid)[0]), f"198.51.100.{5 * i + j}")
            for i, vid in enumerate(vids)
            for j in range(5)
        ]
        assert await fire_checks(http, c, checks) == {200: 10, 429: 5}


async def test_wrong_codes_racing_one_verification_compare_exactly_its_attempts(
    store_url: str,  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    """16 wrong codes for one verification, from 16 IPs at once over both instances:
    exactly 5 attempts (OTPGUARD_MAX_ATTEMPTS) are compared, one check locks it, and
    the store holds 5 failures and one lock; the right code approves nothing after.
    The number's wrong-code cap is raised out of the way: under it, reservations in
    flight before the lock's give-backs could refuse some (timing, not this rule)."""
    env = {"OTPGUARD_LIMIT_FAILED_CHECKS": "100/1h"}
    async with cluster(store_url, tmp_path, env=env) as c, httpx.AsyncClient(timeout=60) as http:
        vid = await start(http, c, 0, "+447400556677", "10.9.0.1")
        (code,) = codes(c, vid)
        checks = [(vid, wrong(code), f"198.51.100.{i + 1}") for i in range(16)]
        assert await fire_checks(http, c, checks) == {200: 16}
        r = await http.post(
            f"{c.urls[1]}/v1/verifications/check",
            json={"id": vid, "code": code, "client_ip": "10.9.0.1"},
            headers=c.headers,
        )
        assert r.status_code == 200 and r.json()["valid"] is False, r.text
    store = store_from_url(store_url)
    await store.open()
    try:
        v = await store.get_verification(vid)
        assert v is not None and v.attempts == 5 and v.status.value == "max_attempts_reached"
        events = [e for e in await store.list_events(EventQuery(limit=1000))
                  if e.verification_id == vid]  # fmt: skip
        kinds = Counter(e.type for e in events)
        assert (kinds["check.failed"], kinds["verification.locked"]) == (5, 1), kinds
        assert kinds["check.passed"] == 0
    finally:
        await store.aclose()


async def test_concurrent_v2_resends_keep_every_code_sent(
    store_url: str,  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    """Eight /v2 resends (which keep the earlier codes) of one verification at once
    over both instances, with no cooldown: each one answered 201 sent one code, each
    refused one sent nothing, and every code a phone received is among the tags."""
    env = {"OTPGUARD_RESEND_COOLDOWN": "0", "OTPGUARD_LIMIT_PHONE": "100/10m"}
    to = "+447400112233"
    async with cluster(store_url, tmp_path, env=env) as c, httpx.AsyncClient(timeout=60) as http:
        auth = basic(c)
        r = await http.post(f"{c.urls[0]}/v2/Services", headers=auth, data={"FriendlyName": "R"})
        assert r.status_code == 201, r.text
        url = f"/v2/Services/{r.json()['sid']}/Verifications"
        form = {"To": to, "Channel": "sms"}
        assert (await http.post(c.urls[0] + url, headers=auth, data=form)).status_code == 201
        resends = await asyncio.gather(
            *(http.post(c.urls[i % 2] + url, headers=auth, data=form) for i in range(8))
        )
        statuses = Counter(r.status_code for r in resends)
        assert set(statuses) <= {201, 429}, [r.text for r in resends]
        sent = [m["code"] for m in read_outbox(c.outbox) if m["to"] == to]
        assert len(sent) == 1 + statuses[201] and statuses[201] >= 1
    store = store_from_url(store_url)
    await store.open()
    try:
        v = await store.find_pending(to, 0.0)
        assert v is not None
        assert len(tags.tags_of(v)) == len(sent) == v.sends
    finally:
        await store.aclose()


async def test_the_v2_services_cap_per_key_is_exact(
    store_url: str,  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    """95 services, then 20 creates at once over both instances: exactly 5 are kept
    (201), 15 refused with the cap's 60200 (400), and the key lists exactly 100."""
    async with cluster(store_url, tmp_path) as c, httpx.AsyncClient(timeout=60) as http:
        auth = basic(c)

        async def create(i: int) -> httpx.Response:
            data = {"FriendlyName": f"Svc {i}"}
            return await http.post(f"{c.urls[i % 2]}/v2/Services", headers=auth, data=data)

        for i in range(MAX_SERVICES - 5):
            assert (await create(i)).status_code == 201
        # A connection open to each instance for every create (httpx keeps 20 alive),
        # so the 20 reach the instances together rather than one TCP handshake apart.
        warm = [http.get(f"{c.urls[i % 2]}/v2/Services", headers=auth) for i in range(20)]
        assert {r.status_code for r in await asyncio.gather(*warm)} == {200}
        raced = await asyncio.gather(*(create(MAX_SERVICES + i) for i in range(20)))
        kept = [r for r in raced if r.status_code == 201]
        refused = [r for r in raced if r.status_code != 201]
        assert len(kept) == 5, [r.text for r in raced]
        for r in refused:
            assert (r.status_code, r.json()["code"]) == (400, 60200), r.text
            assert f"at most {MAX_SERVICES} services per API key" in r.json()["message"]
        assert len(refused) == 15
        for base in c.urls:  # each instance lists the same 100, those kept among them
            r = await http.get(f"{base}/v2/Services", headers=auth, params={"PageSize": 1000})
            assert r.status_code == 200, r.text
            sids = [s["sid"] for s in r.json()["services"]]
            assert len(sids) == len(set(sids)) == MAX_SERVICES
            assert {r.json()["sid"] for r in kept} <= set(sids)
