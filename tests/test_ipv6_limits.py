"""IPv6 clients count per /64 (ip), per /56 (network) and per /48 (ipv6_48).

A client rotating /56s inside one /48 passes the /64 and /56 rules each time; the
/48 rule caps it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

import pytest

from otpguard.errors import RateLimited
from otpguard.limits import ipv6_48_of, send_rules
from otpguard.phone import parse
from otpguard.service import Verifier

from .conftest import make_settings


def number(i: int) -> str:
    return f"+4475{i:04d}1234"  # each in a prefix of its own


def site_ip(i: int) -> str:
    """Another /56 (so another /64) of 2001:db8:42::/48 for each i."""
    return f"2001:db8:42:{i:02x}00::1"


async def test_rotating_56s_inside_one_48_are_capped(
    verifier_factory: Callable[..., contextlib.AbstractAsyncContextManager[Verifier]],
) -> None:
    # Sixty unconverted sends would also fill the country's and the 1,000,000-block's
    # admission buckets (60 each): this test is about the /48 rule alone.
    async with verifier_factory(admission_country="off", admission_block_6="off") as otp:
        sent = 0
        refused = []
        for i in range(61):
            try:
                await otp.start(number(i), client_ip=site_ip(i))
                sent += 1
            except RateLimited as exc:
                refused.append(exc.rule)
        assert (sent, refused) == (60, ["ipv6_48"])
        # Another /48 is another site.
        await otp.start(number(99), client_ip="2001:db8:43::1")


async def test_the_48_rule_is_a_setting(
    verifier_factory: Callable[..., contextlib.AbstractAsyncContextManager[Verifier]],
) -> None:
    async with verifier_factory(limit_ipv6_48="3/10m") as otp:
        for i in range(3):
            await otp.start(number(i), client_ip=site_ip(i))
        with pytest.raises(RateLimited) as exc:
            await otp.start(number(3), client_ip=site_ip(3))
        assert exc.value.rule == "ipv6_48"
        for i in range(4, 8):  # IPv4 clients have no such rule
            await otp.start(number(i), client_ip=f"198.51.{i}.1")


def test_the_48_of_an_address(tmp_path: Path) -> None:
    assert ipv6_48_of("2001:db8:42:ff00::1") == "2001:db8:42::/48"
    assert ipv6_48_of("203.0.113.7") is None
    assert ipv6_48_of("unknown") is None
    settings = make_settings(tmp_path, limit_ipv6_48="off")
    rules = send_rules(settings.limits, parse(number(1)), "2001:db8:42::1")
    assert "ipv6_48" not in {r.name for r in rules}
