"""``otpguard serve``'s processes tune their garbage collector once started
(``otpguard.web.app.tune_gc``); an app a library host builds leaves it alone."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx

from otpguard.codes import new_secret_hex
from otpguard.web.app import GC_YOUNG, create_app

from .conftest import make_settings

# The serving factory in a process of its own: its start-up, one request, then
# 3 * GC_YOUNG objects in reference cycles, dropped (only the collector frees them).
SERVING = """
import asyncio, gc, json
import httpx
from otpguard.web.app import app_from_env

class Cycle:
    def __init__(self):
        self.me = self

async def main():
    app = app_from_env()
    before = gc.get_threshold()
    async with app.router.lifespan_context(app):
        tuned, frozen = gc.get_threshold(), gc.get_freeze_count()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            status = (await c.get("/noop")).status_code
        runs = gc.get_stats()[0]["collections"]
        for _ in range(3 * tuned[0]):
            Cycle()
        young_runs = gc.get_stats()[0]["collections"] - runs
    print(json.dumps({"before": before, "tuned": tuned, "frozen": frozen,
                      "status": status, "young_runs": young_runs,
                      "cycles_alive": sum(isinstance(o, Cycle) for o in gc.get_objects())}))

asyncio.run(main())
"""


def test_the_serving_factory_freezes_start_up_and_still_collects_cycles(
    tmp_path: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTPGUARD_")}
    env.update(
        OTPGUARD_STORE=f"sqlite:///{tmp_path / 'otpguard.db'}",
        OTPGUARD_DATA_DIR=str(tmp_path),
        OTPGUARD_TRANSPORT="file",
        OTPGUARD_OUTBOX_PATH=str(tmp_path / "outbox.jsonl"),
        OTPGUARD_SECRET_KEYS=new_secret_hex(),
    )
    out = subprocess.run(
        [sys.executable, "-c", SERVING], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    seen = json.loads(out.stdout.splitlines()[-1])
    assert seen["before"] == [700, 10, 10]  # Python's own, until the app has started
    assert seen["tuned"] == [GC_YOUNG, 10, 10]
    assert seen["frozen"] > 10_000  # what start-up made: modules, settings, the app
    assert seen["status"] == 200
    # The cycles were collected by the collector on its own, at the raised threshold.
    assert 1 <= seen["young_runs"] <= 12  # at 700 it would have been over 80
    assert seen["cycles_alive"] < GC_YOUNG


async def test_an_app_a_library_builds_leaves_the_collector_as_it_was(tmp_path: Path) -> None:
    threshold, frozen = gc.get_threshold(), gc.get_freeze_count()
    app = create_app(make_settings(tmp_path), background=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            assert (await c.get("/noop")).status_code == 200
        assert gc.get_threshold() == threshold
        assert gc.get_freeze_count() <= frozen  # nothing frozen (frozen objects may be freed)
