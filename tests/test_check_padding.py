"""Every failing check on /v1 and /v2 takes at least ``failed_check_floor``.

The floor is set high here (0.25 s) so that a missing pad shows: without it
these failures answer in a few milliseconds. Only a lower bound is asserted (a
slow machine makes a check slower, never faster than the floor), so this test
cannot flake on load.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from typing import Any

import pytest

from otpguard.config import Settings
from otpguard.transports.memory import MemoryTransport

from .conftest import UK_MOBILE

pytestmark = pytest.mark.slow  # each failing check waits out a 0.25 s floor

FLOOR = 0.25
SLACK = 0.005  # the loop may wake a timer up to its clock resolution early


def basic(key: str) -> dict[str, str]:
    user = "og_" + key.split("_")[1]
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{key}".encode()).decode()}


async def timed(coro: Any) -> tuple[float, Any]:
    started = time.monotonic()
    r = await coro
    return time.monotonic() - started, r


async def test_every_failing_v2_check_takes_the_floor(
    api_factory: Callable[..., Any],
    settings_factory: Callable[..., Settings],
    outbox: MemoryTransport,
) -> None:
    async with api_factory(settings_factory(failed_check_floor=FLOOR, max_attempts=1)) as api:
        auth = basic(api.key)
        sids = []
        for name in ("Shop", "Other"):
            r = await api.http.post("/v2/Services", data={"FriendlyName": name}, headers=auth)
            sids.append(r.json()["sid"])
        mine, other = sids

        async def check(sid: str, **form: str) -> tuple[float, Any]:
            url = f"/v2/Services/{sid}/VerificationCheck"
            return await timed(api.http.post(url, data=form, headers=auth))

        cases = {"no pending code for To": await check(mine, To=UK_MOBILE, Code="123456")}
        data = {"To": UK_MOBILE, "Channel": "sms"}
        r = await api.http.post(f"/v2/Services/{mine}/Verifications", data=data, headers=auth)
        vid = r.json()["sid"]
        wrong = "000000" if outbox.last_code() != "000000" else "111111"
        cases["another service"] = await check(other, To=UK_MOBILE, Code=wrong)
        cases["malformed code"] = await check(mine, To=UK_MOBILE, Code="12")
        cases["wrong code"] = await check(mine, VerificationSid=vid, Code=wrong)
        cases["locked"] = await check(mine, VerificationSid=vid, Code=wrong)
        for case, (elapsed, response) in cases.items():
            assert response.status_code in (200, 400, 404, 429), case
            assert elapsed >= FLOOR - SLACK, (case, elapsed)
        assert cases["wrong code"][1].json()["status"] == "max_attempts_reached"
        assert cases["locked"][1].status_code == 429


async def test_every_failing_v1_check_takes_the_floor(
    api_factory: Callable[..., Any], settings_factory: Callable[..., Settings]
) -> None:
    async with api_factory(settings_factory(failed_check_floor=FLOOR)) as api:
        bodies = [
            {"code": "123456"},  # neither id nor to
            {"id": "VE" + "0" * 32, "to": UK_MOBILE, "code": "123456"},  # both
            {"to": UK_MOBILE, "code": "123456"},  # nothing pending
        ]
        for body in bodies:
            elapsed, r = await timed(api.post("/v1/verifications/check", json=body))
            assert r.status_code in (400, 404), body
            assert elapsed >= FLOOR - SLACK, (body, elapsed)
