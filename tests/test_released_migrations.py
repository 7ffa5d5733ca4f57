"""Every released migration step renders exactly as it ran.

A fresh database runs every step in order, and an upgraded one ran the early steps
long ago: a released step whose text changes (a function text edited in place, a
shared constant reworded) would make the two differ without anyone noticing. The
digests below are of the steps as released; a new step is appended to the list when
it is released, and never edited after."""

from __future__ import annotations

import hashlib

import pytest

from otpguard.stores import postgres_sql, sqlite

POSTGRES = [
    "1e87178696cc03c0", "bf62197fb4d29cb1", "4890e40b109a09d0", "3e90fab9ee4dff0b",
    "ef7e852821284e95", "484396f64cb4f25c", "352e3b9c87e14696", "667eeae0bbe06f97",
    "c9416a08f56698d2", "271dbab2c795f2c7", "3660b98496c9a70f", "aafe5e8e8d4ca61f",
]  # fmt: skip
SQLITE = [
    "9ba02a443b0fde6c", "c66d103fcdfd9636", "296bff89bcbb8083", "bf146e5bfd051662",
    "484396f64cb4f25c", "7fbe7dd916c6af3d", "2c12e4653dda0754", "efd2bb56527903f0",
]  # fmt: skip


def digest(step: tuple[str, ...]) -> str:
    return hashlib.sha256("\n;\n".join(step).encode()).hexdigest()[:16]


@pytest.mark.parametrize(
    ("migrations", "released"),
    [(postgres_sql.MIGRATIONS, POSTGRES), (sqlite.MIGRATIONS, SQLITE)],
    ids=["postgres", "sqlite"],
)
def test_released_steps_are_unchanged(
    migrations: tuple[tuple[str, ...], ...], released: list[str]
) -> None:
    assert len(migrations) >= len(released)
    assert [digest(step) for step in migrations[: len(released)]] == released
