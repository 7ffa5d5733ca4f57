"""A server killed with SIGKILL loses no verification it acknowledged."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from .serverproc import Server, _wait_until_up, fresh_number, otpguard_server

pytestmark = pytest.mark.slow  # starts, kills and restarts otpguard serve


def _restart(server: Server, port: str) -> subprocess.Popen[bytes]:
    with server.log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "otpguard.cli", "serve", "--host", "127.0.0.1", "--port", port],
            env=server.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def test_sigkill_loses_no_acknowledged_verification(tmp_path: Path) -> None:
    with otpguard_server(tmp_path, limit_ip="off", limit_network="off") as server:
        headers = {"Authorization": f"Bearer {server.api_key}"}
        acknowledged = []
        with httpx.Client(base_url=server.base_url, headers=headers, timeout=10) as http:
            for _ in range(20):
                r = http.post("/v1/verifications", json={"to": fresh_number()})
                assert r.status_code == 201
                acknowledged.append(r.json()["id"])
        codes = {vid: server.last_code(vid) for vid in acknowledged}

        server.process.send_signal(signal.SIGKILL)
        server.process.wait(timeout=10)
        assert server.process.returncode == -signal.SIGKILL

        port = server.base_url.rsplit(":", 1)[1]
        server.process = restarted = _restart(server, port)
        try:
            _wait_until_up(server)
            with httpx.Client(base_url=server.base_url, headers=headers, timeout=10) as http:
                for vid in acknowledged:
                    r = http.post("/v1/verifications/check", json={"id": vid, "code": codes[vid]})
                    assert r.status_code == 200, r.text
                    assert r.json()["valid"] is True, vid
        finally:
            restarted.terminate()
            restarted.wait(timeout=15)
