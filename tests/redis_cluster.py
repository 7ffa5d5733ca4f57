"""A real three-node Redis Cluster on loopback ports, for the tests.

``RedisClusterProcess(tmp_dir).start()`` runs three ``redis-server --cluster-enabled
yes`` processes (no persistence) on free ports, joins them with ``redis-cli --cluster
create ... --cluster-replicas 0``, and polls ``CLUSTER INFO`` on every node until it
says ``cluster_state:ok``; ``stop()`` kills the processes. Waiting polls a readiness
condition with a deadline; nothing here sleeps to test behaviour.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

NODES = 3
READY_TIMEOUT = 30.0
POLL = 0.05  # seconds between readiness probes
HOST = "127.0.0.1"


class ClusterUnavailable(RuntimeError):
    """The binaries are missing or the cluster did not come up; the message says which."""


def binaries_missing() -> str | None:
    """None when ``redis-server`` and ``redis-cli`` are on PATH, else what is missing."""
    missing = [b for b in ("redis-server", "redis-cli") if shutil.which(b) is None]
    return " and ".join(missing) + " not on PATH" if missing else None


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
        return True


def free_ports(n: int) -> list[int]:
    """``n`` ports whose cluster-bus ports (port + 10000) are free as well."""
    ports: list[int] = []
    while len(ports) < n:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((HOST, 0))
            port = int(s.getsockname()[1])
        if port + 10000 < 65536 and port not in ports and _port_free(port + 10000):
            ports.append(port)
    return ports


def _cli(port: int, *args: str, timeout: float = 5.0) -> str:
    out = subprocess.run(
        ["redis-cli", "-h", HOST, "-p", str(port), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return out.stdout


def _wait(condition: str, probe: object, deadline: float) -> None:
    assert callable(probe)
    while not probe():
        if time.monotonic() > deadline:
            raise ClusterUnavailable(f"redis cluster: timed out waiting for {condition}")
        time.sleep(POLL)  # polling a readiness condition, not testing timing


class RedisClusterProcess:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.ports: list[int] = []
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        """The otpguard store URL naming every node."""
        return "redis+cluster://" + ",".join(f"{HOST}:{p}" for p in self.ports)

    def start(self) -> RedisClusterProcess:
        missing = binaries_missing()
        if missing:
            raise ClusterUnavailable(f"redis cluster: {missing}")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.ports = free_ports(NODES)
        try:
            for port in self.ports:
                self.procs.append(self._spawn(port))
            deadline = time.monotonic() + READY_TIMEOUT
            for port in self.ports:
                _wait(f"node {port}", lambda p=port: _cli(p, "PING").strip() == "PONG", deadline)
            created = subprocess.run(
                ["redis-cli", "--cluster", "create", *(f"{HOST}:{p}" for p in self.ports),
                 "--cluster-replicas", "0", "--cluster-yes"],
                capture_output=True, text=True, timeout=READY_TIMEOUT, check=False,
            )  # fmt: skip
            if created.returncode != 0:
                raise ClusterUnavailable(f"redis-cli --cluster create failed: {created.stdout}")
            for port in self.ports:
                _wait(
                    f"cluster_state:ok on {port}",
                    lambda p=port: "cluster_state:ok" in _cli(p, "CLUSTER", "INFO"),
                    deadline,
                )
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self, port: int) -> subprocess.Popen[bytes]:
        node_dir = self.directory / str(port)
        node_dir.mkdir(exist_ok=True)
        return subprocess.Popen(
            [
                "redis-server",
                "--port", str(port),
                "--bind", HOST,
                "--cluster-enabled", "yes",
                "--cluster-config-file", str(node_dir / "nodes.conf"),
                "--cluster-node-timeout", "5000",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(node_dir),
                "--logfile", str(node_dir / "redis.log"),
                "--daemonize", "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def stop(self) -> None:
        procs, self.procs = self.procs, []
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait(timeout=10)

    def __enter__(self) -> RedisClusterProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


async def flush_cluster(url: str) -> None:
    """FLUSHALL on every primary of the cluster named by an otpguard ``redis+cluster://`` URL."""
    from redis.asyncio.cluster import ClusterNode, RedisCluster

    nodes = []
    for item in url.split("://", 1)[1].split("/", 1)[0].split(","):
        host, _, port = item.rpartition(":")
        nodes.append(ClusterNode(host, int(port)))
    client = RedisCluster(startup_nodes=nodes)
    try:
        await client.flushall(target_nodes=RedisCluster.PRIMARIES)
    finally:
        await client.aclose()
