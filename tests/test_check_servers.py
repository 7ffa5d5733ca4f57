"""Checks raced against real servers: two ``otpguard serve`` processes on one store (a
SQLite file, this run's Redis, a PostgreSQL database of its own), hit by concurrent
requests over HTTP. Wrong-code caps hold exactly; a resend and a check never both win."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import httpx
import pytest

from otpguard.transports.file import read_outbox

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
