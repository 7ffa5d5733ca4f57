"""What some tests need from the machine (a store server, Chromium, a free port), and
one rule for when it is missing: skip with a reason that says what is missing, or,
with ``REQUIRE_TEST_BACKENDS=1`` (``.ci/run`` sets it), fail.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import NoReturn

import pytest

REQUIRE_BACKENDS = "REQUIRE_TEST_BACKENDS"

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def unavailable(reason: str) -> NoReturn:
    """Skip this test because ``reason``; under ``REQUIRE_TEST_BACKENDS=1``, fail."""
    if os.environ.get(REQUIRE_BACKENDS) == "1":
        pytest.fail(f"{reason} ({REQUIRE_BACKENDS}=1 forbids skipping)", pytrace=False)
    pytest.skip(reason)


def require_chromium() -> Path:
    """Debian's Chromium, which Playwright drives through its executable path."""
    if not CHROMIUM.exists():
        unavailable(f"{CHROMIUM} is missing: apt-get install -y chromium")
    return CHROMIUM


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port
