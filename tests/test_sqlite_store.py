"""SQLite-only behaviour (the shared behaviour is in tests/contracts/)."""

from __future__ import annotations

from pathlib import Path

import pytest

from otpguard.errors import ConfigError
from otpguard.stores.sqlite import SQLiteStore


@pytest.mark.parametrize(
    ("query", "mode"), [("", 1), ("?synchronous=full", 2), ("?synchronous=normal", 1)]
)
async def test_synchronous_mode_from_url(tmp_path: Path, query: str, mode: int) -> None:
    store = SQLiteStore(f"sqlite:///{tmp_path / 'x.db'}{query}")
    await store.open()
    try:
        assert store._conn is not None
        assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == mode
        assert store._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        await store.aclose()


@pytest.mark.parametrize(
    "url", ["sqlite:///x.db?synchronous=off", "sqlite:///x.db?cache=big", "sqlite://x.db"]
)
def test_bad_urls(url: str) -> None:
    with pytest.raises(ConfigError):
        SQLiteStore(url)
