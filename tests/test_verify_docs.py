"""docs/migrating-from-twilio-verify.md's supported and not-supported tables: every
row names the tests that exercise it, and every test named exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "migrating-from-twilio-verify.md"
TESTS = ("test_verify_compat.py", "test_verify_dropin.py", "test_verify_compat_psd2.py")
TABLES = ("## What is supported", "## What is not supported")


def _test_names() -> set[str]:
    names = set()
    for name in TESTS:
        tree = ast.parse((ROOT / "tests" / name).read_text())
        names |= {
            node.name
            for node in tree.body
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and node.name.startswith("test_")
        }
    return names


def _rows(heading: str) -> list[list[str]]:
    section = GUIDE.read_text().split(heading + "\n", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("| ")]
    assert lines[0].endswith("| Tested by |"), f"{heading}: the last column is 'Tested by'"
    return [[c.strip() for c in line.strip("|").split(" | ")] for line in lines[2:]]


def test_every_row_names_existing_tests() -> None:
    defined = _test_names()
    count = 0
    for heading in TABLES:
        rows = _rows(heading)
        assert len(rows) >= 10, heading
        for row in rows:
            named = re.findall(r"`(test_\w+)`", row[-1])
            assert named, f"{heading}: the row {row[0]!r} names no test"
            missing = [n for n in named if n not in defined]
            assert not missing, f"{heading}: {row[0]!r} names tests that do not exist: {missing}"
            count += len(named)
    assert count >= 30
