"""Admission rules raced against real servers: two ``otpguard serve`` processes on one
store (a SQLite file, this run's Redis, a PostgreSQL database of its own), hit by
concurrent requests over HTTP. Every rule that can refuse must hold exactly."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from pathlib import Path

import httpx
import pytest

from .backends import BackendUnavailable, create_database
from .needs import unavailable
from .test_multi_instance import Cluster, check_reachable, cluster

pytestmark = pytest.mark.slow

BLOCK = "+44740012"


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite-file"),
        pytest.param("redis", marks=pytest.mark.redis, id="redis"),
        pytest.param("postgres", marks=pytest.mark.postgres, id="postgres"),
    ]
)
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shared.db'}"
    if request.param == "redis":
        url = f"{request.getfixturevalue('redis_url')}?prefix=og{uuid.uuid4().hex[:12]}"
    else:
        try:
            url = create_database("admission", "pool_timeout=5")
        except BackendUnavailable as exc:
            unavailable(str(exc))
    await check_reachable(url)
    return url


async def fire(c: Cluster, bodies: list[dict[str, object]]) -> list[httpx.Response]:
    """All at once, alternating between the two instances."""
    async with httpx.AsyncClient(timeout=60) as http:
        return await asyncio.gather(
            *(
                http.post(f"{c.urls[i % 2]}/v1/verifications", json=body, headers=c.headers)
                for i, body in enumerate(bodies)
            )
        )


def tally(responses: list[httpx.Response]) -> Counter[str]:
    out: Counter[str] = Counter()
    for r in responses:
        if r.status_code == 201:
            out["sent"] += 1
        else:
            error = r.json()["error"]
            out[f"{r.status_code}:{error.get('rule') or error.get('reason')}"] += 1
    return out


async def test_a_range_walk_from_one_ip_is_exact(store_url: str, tmp_path: Path) -> None:
    """Ten concurrent starts from one IP to ten numbers of one block: four are sent."""
    async with cluster(store_url, tmp_path) as c:
        bodies = [{"to": f"{BLOCK}{i:04d}", "client_ip": "203.0.113.66"} for i in range(10)]
        assert tally(await fire(c, bodies)) == {"sent": 4, "403:fraud:sequential_numbers": 6}
        assert c.sent() == 4


async def test_a_block_bucket_is_exact(store_url: str, tmp_path: Path) -> None:
    """Thirty concurrent starts to one block from thirty networks: twelve are sent."""
    async with cluster(store_url, tmp_path) as c:
        bodies = [{"to": f"{BLOCK}{i:04d}", "client_ip": f"10.{i}.0.1"} for i in range(30)]
        assert tally(await fire(c, bodies)) == {"sent": 12, "429:block": 18}
        assert c.sent() == 12


async def test_an_account_limit_is_exact(store_url: str, tmp_path: Path) -> None:
    """Ten concurrent starts for one account to ten numbers: five are sent (5/10m)."""
    async with cluster(store_url, tmp_path) as c:
        bodies = [
            {"to": f"+4475{i:04d}1234", "client_ip": f"10.{i}.0.1", "account_id": "user-1"}
            for i in range(10)
        ]
        assert tally(await fire(c, bodies)) == {"sent": 5, "429:account": 5}
        assert c.sent() == 5


async def test_email_mailbox_and_domain_limits_are_exact(store_url: str, tmp_path: Path) -> None:
    """Concurrent email starts over two servers: ten to one mailbox (+tags) from ten
    networks, three sent (3/10m); twelve to one domain's addresses, its bucket of six
    unconverted sends admits six."""
    env = {"OTPGUARD_ADMISSION_EMAIL_DOMAIN": "6/10m"}
    async with cluster(store_url, tmp_path, env=env) as c:
        mailbox = [
            {"to": f"jo+{i}@one.example", "channel": "email", "client_ip": f"10.{i}.0.1"}
            for i in range(10)
        ]
        assert tally(await fire(c, mailbox)) == {"sent": 3, "429:email": 7}
        domain = [
            {"to": f"u{i}@two.example", "channel": "email", "client_ip": f"10.{i + 50}.0.1"}
            for i in range(12)
        ]
        assert tally(await fire(c, domain)) == {"sent": 6, "429:domain": 6}
        assert c.sent() == 9
