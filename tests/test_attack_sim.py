"""The attack simulator (bench/attack_sim.py) runs against a real server and its
figures add up. Whether the defences meet their targets is the simulator's output to
read, not something asserted here."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def leading_int(cell: str) -> int:
    match = re.match(r"~?(\d+)", cell)
    assert match, cell
    return int(match.group(1))


def test_quick_run_prints_a_consistent_table() -> None:
    done = subprocess.run(
        [
            *(sys.executable, str(ROOT / "bench" / "attack_sim.py"), "--quick"),
            *("--scenarios", "legit+block", "--speed", "60"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    rows = [ln for ln in lines if ln.startswith("| ")]
    head = [c.strip() for c in rows[0].strip("|").split("|")]
    assert len(rows) == 2, done.stdout
    row = dict(zip(head, (c.strip() for c in rows[1].strip("|").split("|")), strict=True))
    figures = json.loads(lines[-1])
    assert len(figures) == 1
    r = figures[0]

    assert row["scenario"] == "legit+block" and row["speed"] == "60x"
    assert leading_int(row["attacker starts"]) == r["attacker_starts"] > 0
    assert leading_int(row["SMS to attacker"]) == r["attacker_sms"]
    assert r["attacker_sms"] <= r["attacker_starts"]
    assert r["attacker_sms_10min"] <= r["attacker_sms"]
    assert r["sms_before_cutoff"] <= r["attacker_sms"]
    # Every attacker start was answered: sent, or refused with a reason.
    assert r["attacker_sms"] + sum(r["attacker_refusals"].values()) == r["attacker_starts"]

    for kind, col in (("new", "new"), ("returning", "ret.")):
        users = r[f"users_{kind}"]
        assert users > 0
        assert leading_int(row[f"{col} refused"]) == r[f"refused_{kind}"]
        assert leading_int(row[f"{col} challenged"]) == r[f"challenged_{kind}"]
        assert r[f"served_{kind}"] + r[f"refused_{kind}"] == users
        assert r[f"approved_{kind}"] <= r[f"served_{kind}"]
    assert r["users_returning"] <= r["returning_pool"]
    starts_refused = sum(v for k, v in r["user_refusals"].items() if not k.startswith("check:"))
    assert starts_refused == r["refused_new"] + r["refused_returning"]
    # The phone saw exactly the messages the API said it sent (history included); a
    # start whose answer was lost to a client timeout may have sent one more.
    lost = sum(v for k, v in r["errors"].items() if not k.startswith("http_"))
    assert 0 < r["starts_answered_201"] <= r["outbox_messages"] <= r["starts_answered_201"] + lost
    # A busy machine may time a request out or find the store busy (503, nothing sent);
    # an internal error is a bug.
    assert "http_500" not in r["errors"], r["errors"]
