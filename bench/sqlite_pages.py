"""What SQLite's page size costs a serving process: bytes written and CPU per pair,
on a database file the store made itself (``stores.sqlite.PAGE_SIZE``) against one
made beforehand with SQLite's default of 4,096 bytes (the store keeps an existing
file's page size).

    .venv/bin/python bench/sqlite_pages.py                  # 2,000 pairs, 3 rounds
    .venv/bin/python bench/sqlite_pages.py --pairs 300 --rounds 1
    .venv/bin/python bench/sqlite_pages.py --rows 1000000 --rounds 1   # a full file

``--rows N``: before the pairs, the file is given N stored verifications with their
events, as bench/peer.py stores them (up to 2,000 start + check pairs through the
engine, then copies of those rows with fresh ids and numbers), so that the b-trees are
as deep as a busy deployment's.

Each run is a fresh process holding the app as ``otpguard serve`` builds it, with
bench/http.py's settings (every limit out of the way, the file transport), driven as
bench/gc_cost.py drives it: start + right-code check pairs through httpx's ASGI
transport, 16 at a time, codes read back from the outbox as a phone would, after 100
pairs of warm-up. Bytes written are the process's own ``write`` calls
(``/proc/self/io`` ``wchar``): the WAL's frames, the checkpoints into the database
file, and the outbox's lines (about 200 bytes a pair, the same in both). Page sizes
alternate within a round, so both see the same machine. Prints a table, then one JSON
object as the last line.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Off sys.path: this directory's http.py would shadow the standard library's ``http``.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import argparse  # noqa: E402 - after the sys.path change above
import asyncio  # noqa: E402 - after the sys.path change above
import importlib.util  # noqa: E402 - after the sys.path change above
import json  # noqa: E402 - after the sys.path change above
import os  # noqa: E402 - after the sys.path change above
import sqlite3  # noqa: E402 - after the sys.path change above
import subprocess  # noqa: E402 - after the sys.path change above
import tempfile  # noqa: E402 - after the sys.path change above
import time  # noqa: E402 - after the sys.path change above
from typing import Any  # noqa: E402 - after the sys.path change above

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PAGE = 4096  # SQLite's own default, the baseline
WARMUP = 100


def _load(name: str) -> Any:
    """A sibling bench script, loaded by its path."""
    spec = importlib.util.spec_from_file_location(f"otpguard_bench_{name}", _HERE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def written() -> int:
    """Bytes this process has passed to ``write`` and its kin so far."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise RuntimeError("/proc/self/io has no wchar")


def precreate(path: Path, page_size: int) -> None:
    """An empty database file in WAL mode with ``page_size``, as a store made before
    this release left it (the store's migrations then run on it)."""
    conn = sqlite3.connect(path)
    try:
        conn.execute(f"PRAGMA page_size = {int(page_size)}")
        conn.execute("PRAGMA journal_mode = WAL")
    finally:
        conn.close()


async def child(page: str, data_dir: Path, n: int, rows: int) -> dict[str, Any]:
    import httpx

    from otpguard.config import load_settings
    from otpguard.web.app import create_app

    http, gc_cost = _load("http"), _load("gc_cost")
    db = data_dir / "otpguard.db"
    if page != "store":
        precreate(db, int(page))
    env = http.server_env(f"sqlite:///{db}", data_dir)
    stored = 0
    if rows:
        peer = _load("peer")
        await peer.seed_engine(env, min(rows, peer.ENGINE_SEED))
        stored = peer.copy_sqlite(db, rows)
    os.environ.update(env)
    key = http.create_key(env)
    (data_dir / "outbox.jsonl").touch()
    app = create_app(load_settings(), serving=True)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            outbox = gc_cost.Outbox(data_dir / "outbox.jsonl")
            await gc_cost.pairs(client, key, outbox, 0, WARMUP)
            cpu, wall, out = time.process_time(), time.perf_counter(), written()
            valid = await gc_cost.pairs(client, key, outbox, WARMUP, n)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            out = written() - out
    conn = sqlite3.connect(db)
    try:
        size: int = conn.execute("PRAGMA page_size").fetchone()[0]
    finally:
        conn.close()
    return {
        "asked": page,
        "page_size": size,
        "pairs": n,
        "rows": stored,
        "valid": valid,
        "cpu_ms_per_pair": round(cpu / n * 1000, 3),
        "pairs_per_s": round(n / wall, 1),
        "kb_written_per_pair": round(out / n / 1024, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rows", type=int, default=0, help="stored verifications first")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = asyncio.run(child(args.child, Path(args.data_dir), args.pairs, args.rows))
        print(json.dumps(result))
        return 0
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="otpguard-pages-") as tmp:
        for round_ in range(args.rounds):
            for page in (str(DEFAULT_PAGE), "store"):
                data_dir = Path(tmp) / f"{page}-{round_}"
                data_dir.mkdir()
                cmd = [sys.executable, __file__, "--child", page, "--pairs", str(args.pairs),
                       "--rows", str(args.rows), "--data-dir", str(data_dir)]  # fmt: skip
                out = subprocess.run(cmd, capture_output=True, text=True, check=False)
                if out.returncode != 0:
                    raise RuntimeError(f"page {page}: {out.stderr.strip()[-800:]}")
                results.append({"round": round_, **json.loads(out.stdout.splitlines()[-1])})
    print(f"{'round':>5} {'file':>8} {'page':>5} {'rows':>9} {'KB written/pair':>15} "
          f"{'cpu ms/pair':>11} {'pairs/s':>8}")  # fmt: skip
    for r in results:
        made = "ours" if r["asked"] == "store" else "earlier"
        print(f"{r['round']:5} {made:>8} {r['page_size']:5} {r['rows']:9} "
              f"{r['kb_written_per_pair']:15.1f} {r['cpu_ms_per_pair']:11.3f} "
              f"{r['pairs_per_s']:8.1f}")  # fmt: skip
    print(json.dumps({"warmup_pairs": WARMUP, "results": results}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
