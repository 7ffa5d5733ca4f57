"""No tracked file holds a merge's conflict markers (one once landed in CHANGELOG.md)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MARKER = re.compile(rb"^(<{7}|>{7}) ", re.M)


def test_no_tracked_file_has_conflict_markers() -> None:
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    found = []
    for name in filter(None, files):
        path = ROOT / name.decode()
        if path.is_file() and MARKER.search(path.read_bytes()):
            found.append(name.decode())
    assert found == []
