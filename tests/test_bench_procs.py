"""``bench/procs.py``: it finds a listening process, the processes under another, and
the CPU time they used (``bench/http.py``'s cores per side)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .test_bench_roundtrips import load_bench

CHILD = (
    "import socket, sys\n"
    "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n"
    "sum(range(3 * 10**7))\n"  # some CPU work before saying where it listens
    "print(s.getsockname()[1], flush=True)\n"
    "sys.stdin.readline()\n"
)


def test_a_listening_child_is_found_with_its_cpu_time() -> None:
    procs = load_bench("procs")
    with subprocess.Popen(
        [sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as child:
        assert child.stdout is not None
        port = int(child.stdout.readline())
        assert procs.listening(port) == [child.pid]
        assert child.pid in procs.tree(os.getpid())
        assert procs.tree(child.pid) == [child.pid]
        assert procs.cpu_seconds([child.pid]) > 0
        assert procs.cpu_seconds([]) == 0
        comm = Path(f"/proc/{child.pid}/comm").read_text().strip()
        assert child.pid in procs.named(comm) and os.getpid() not in procs.named("nonesuch")
        assert child.stdin is not None
        child.stdin.close()
        child.wait(timeout=10)
    assert procs.cpu_seconds([child.pid]) == 0  # gone: nothing to read
