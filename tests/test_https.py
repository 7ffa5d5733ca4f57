"""HTTPS only, trusted proxies only: against real TLS and plain servers on loopback.

One app is served twice from one background event loop: by a uvicorn server that
terminates TLS (a certificate made by ``trustme`` for 127.0.0.1) and by a plain
one, both with ``proxy_headers=False`` as ``otpguard serve`` runs it, so only
otpguard.web.https decides whom to trust. The client is always 127.0.0.1:
"trusted peer" tests list 127.0.0.1/32 in ``trusted_proxies``, "untrusted" ones
list another network.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
import uvicorn
from fastapi import FastAPI, Request

from otpguard import cli
from otpguard.apikeys import create_api_key
from otpguard.clock import ManualClock
from otpguard.config import Settings
from otpguard.service import Verifier
from otpguard.stores import store_from_url
from otpguard.transports.memory import MemoryTransport
from otpguard.web.app import create_app
from otpguard.web.https import HSTS, client_from_forwarded, parse_networks, resolve

from .conftest import UK_MOBILE, make_settings

HSTS_VALUE = HSTS[1].decode()
UNTRUSTED = ["10.0.0.0/8"]
TRUSTED = ["127.0.0.1/32", "10.0.0.0/8"]


def make_tls_files(d: Path) -> tuple[Path, Path, Path]:
    """``(certfile, keyfile, ca_file)`` for 127.0.0.1 and localhost, signed by a test CA."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    certfile, keyfile, cafile = d / "cert.pem", d / "key.pem", d / "ca.pem"
    cert.private_key_pem.write_to_path(str(keyfile))
    certfile.write_bytes(b"".join(pem.bytes() for pem in cert.cert_chain_pems))
    ca.cert_pem.write_to_path(str(cafile))
    return certfile, keyfile, cafile


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@dataclass
class Served:
    https_url: str
    http_url: str
    key: str
    outbox: MemoryTransport
    verify: ssl.SSLContext

    def client(self) -> httpx.Client:
        return httpx.Client(verify=self.verify, timeout=10)


def _listen() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    sock.setblocking(False)
    return sock


def _whoami(app: FastAPI) -> None:
    """A test-only route that reports what the app sees (added to this test's app only)."""

    @app.get("/v1/_test/whoami", include_in_schema=False)
    async def whoami(request: Request) -> dict[str, Any]:
        return {
            "scheme": request.url.scheme,
            "client": request.client.host if request.client else None,
            "state_client_ip": request.state.client_ip,
        }


@contextlib.contextmanager
def serve(settings: Settings, tls: tuple[Path, Path, Path]) -> Iterator[Served]:
    certfile, keyfile, cafile = tls
    outbox = MemoryTransport()
    clock = ManualClock()
    verifier = Verifier(settings, store_from_url(settings.store_url), outbox, clock=clock)
    app = create_app(settings, verifier, clock=clock, background=False)
    _whoami(app)
    secure_sock, plain_sock = _listen(), _listen()
    common: dict[str, Any] = {
        "lifespan": "off",
        "log_config": None,
        "access_log": False,
        "proxy_headers": False,
        "server_header": False,
    }
    servers = [
        uvicorn.Server(
            uvicorn.Config(app, ssl_certfile=str(certfile), ssl_keyfile=str(keyfile), **common)
        ),
        uvicorn.Server(uvicorn.Config(app, **common)),
    ]
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def main() -> None:
        async with app.router.lifespan_context(app):
            _, box["key"] = await create_api_key(verifier.store, "https-tests", ("verify",), 0.0)
            tasks = [
                asyncio.create_task(servers[0].serve(sockets=[secure_sock])),
                asyncio.create_task(servers[1].serve(sockets=[plain_sock])),
            ]
            # uvicorn exposes start-up only as a flag; this waits, it does not time anything.
            while not all(s.started for s in servers):  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            ready.set()
            await asyncio.gather(*tasks)

    def run() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:  # surfaced to the test below
            box["error"] = exc
            ready.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    ready.wait(20)
    if "error" in box:
        raise box["error"]
    ctx = ssl.create_default_context(cafile=str(cafile))
    try:
        yield Served(
            https_url=f"https://127.0.0.1:{secure_sock.getsockname()[1]}",
            http_url=f"http://127.0.0.1:{plain_sock.getsockname()[1]}",
            key=box["key"],
            outbox=outbox,
            verify=ctx,
        )
    finally:
        for s in servers:
            s.should_exit = True
        thread.join(20)
        secure_sock.close()
        plain_sock.close()


@pytest.fixture
def server_factory(
    tmp_path: Path, tls_files: tuple[Path, Path, Path]
) -> Iterator[Callable[..., contextlib.AbstractContextManager[Served]]]:
    def factory(**overrides: Any) -> contextlib.AbstractContextManager[Served]:
        base: dict[str, Any] = {
            "env": "production",
            "transport": "twilio",  # the verifier below is given a memory transport
            "twilio_account_sid": "AC" + "0" * 32,
            "twilio_auth_token": "t" * 32,
            "twilio_from": "+447400000001",
            "store": f"sqlite:///{tmp_path / 'https.db'}",
            "tls_certfile": tls_files[0],
            "tls_keyfile": tls_files[1],
            "trusted_proxies": UNTRUSTED,
        }
        base.update(overrides)
        return serve(settings_with_env(tmp_path, **base), tls_files)

    yield factory


def _start(client: httpx.Client, base: str, key: str, **headers: str) -> httpx.Response:
    return client.post(
        f"{base}/v1/verifications",
        json={"to": UK_MOBILE, "client_ip": "198.51.100.7"},
        headers={"Authorization": f"Bearer {key}", **headers},
    )


def settings_with_env(tmp_path: Path, env: str = "development", **overrides: Any) -> Settings:
    """``make_settings`` plus ``env`` (``load_settings`` takes ``env`` as the environment map)."""
    settings = make_settings(tmp_path, **overrides)
    return Settings.model_validate({**dict(settings), "env": env})


# -- production refuses to start without HTTPS ------------------------------------------


def _production_toml(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "prod.toml"
    path.write_text(
        'env = "production"\ntransport = "twilio"\ntwilio_account_sid = "AC00"\n'
        'twilio_auth_token = "tok"\ntwilio_from = "+447400000001"\n'
        f'secret_keys = ["{"ab" * 32}"]\ndata_dir = "{tmp_path / "data"}"\n' + extra
    )
    return path


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    for name in list(os.environ):
        if name.startswith(("OTPGUARD_", "TWILIO_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.mark.usefixtures("clean_env")
def test_production_serve_without_tls_or_proxies_exits_2_and_says_what_to_set(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _production_toml(tmp_path)
    assert cli.main(["--config", str(config), "serve"]) == 2
    err = capsys.readouterr().err
    assert "refusing to start in production" in err
    assert "--certfile/--keyfile" in err
    assert "OTPGUARD_TRUSTED_PROXIES" in err


@pytest.mark.usefixtures("clean_env")
def test_production_serve_with_only_a_certfile_is_still_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tls_files: tuple[Path, Path, Path]
) -> None:
    config = _production_toml(tmp_path)
    code = cli.main(["--config", str(config), "serve", "--certfile", str(tls_files[0])])
    assert code == 2
    assert "OTPGUARD_TLS_KEYFILE" in capsys.readouterr().err


# -- plain HTTP in production --------------------------------------------------------------


def test_plain_http_api_request_is_refused_with_403_and_nothing_is_sent(
    server_factory: Callable[..., contextlib.AbstractContextManager[Served]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    with server_factory() as srv, srv.client() as c:
        r = _start(c, srv.http_url, srv.key)
        assert r.status_code == 403
        assert r.json()["error"]["code"] == "https_required"
        assert "location" not in r.headers
        assert "strict-transport-security" not in r.headers
        assert r.headers["x-content-type-options"] == "nosniff"  # security headers still set
        assert srv.outbox.outbox == []
    warnings = [rec.getMessage() for rec in caplog.records if rec.name == "otpguard.web.https"]
    assert any("rotate that API key" in m for m in warnings)
    assert not any(srv.key in rec.getMessage() for rec in caplog.records)


def test_the_same_request_over_https_is_served_with_hsts(
    server_factory: Callable[..., contextlib.AbstractContextManager[Served]],
) -> None:
    with server_factory() as srv, srv.client() as c:
        r = _start(c, srv.https_url, srv.key)
        assert r.status_code == 201, r.text
        assert r.headers["strict-transport-security"] == HSTS_VALUE
        assert r.headers["cache-control"] == "no-store"
        assert len(srv.outbox.sent_to(UK_MOBILE)) == 1


def test_spoofed_forwarded_proto_from_an_untrusted_peer_is_still_refused(
    server_factory: Callable[..., contextlib.AbstractContextManager[Served]],
) -> None:
    with server_factory(trusted_proxies=UNTRUSTED) as srv, srv.client() as c:
        r = _start(c, srv.http_url, srv.key, **{"X-Forwarded-Proto": "https"})
        assert r.status_code == 403
        assert r.json()["error"]["code"] == "https_required"
        assert srv.outbox.outbox == []


def test_forwarded_proto_https_from_a_trusted_proxy_is_honoured(
    server_factory: Callable[..., contextlib.AbstractContextManager[Served]],
) -> None:
    with server_factory(trusted_proxies=TRUSTED) as srv, srv.client() as c:
        r = _start(c, srv.http_url, srv.key, **{"X-Forwarded-Proto": "https"})
        assert r.status_code == 201, r.text
        assert r.headers["strict-transport-security"] == HSTS_VALUE
        # ...and a trusted proxy saying "http" is refused even over a TLS socket.
        r = _start(c, srv.https_url, srv.key, **{"X-Forwarded-Proto": "http"})
        assert r.status_code == 403


def test_probes_answer_over_plain_http_without_hsts(
    server_factory: Callable[..., contextlib.AbstractContextManager[Served]],
) -> None:
    with server_factory() as srv, srv.client() as c:
        for path in ("/healthz", "/readyz"):
            r = c.get(srv.http_url + path)
            assert r.status_code == 200, path
            assert "strict-transport-security" not in r.headers
        assert c.get(srv.https_url + "/healthz").headers["strict-transport-security"] == HSTS_VALUE
        assert c.get(srv.http_url + "/openapi.json").status_code == 403


def test_browser_pages_are_redirected_to_https_and_api_posts_are_not(
    server_factory: Callable[..., contextlib.AbstractContextManager[Served]],
) -> None:
    with server_factory(public_url="https://otp.example.com") as srv, srv.client() as c:
        r = c.get(srv.http_url + "/dashboard/events?page=2")
        assert r.status_code == 308
        assert r.headers["location"] == "https://otp.example.com/dashboard/events?page=2"
        assert c.get(srv.http_url + "/docs").headers["location"] == "https://otp.example.com/docs"
        assert c.post(srv.http_url + "/dashboard/login").status_code == 403


def test_page_redirect_without_public_url_uses_the_host_and_refuses_a_bad_one(
    server_factory: Callable[..., contextlib.AbstractContextManager[Served]],
) -> None:
    with server_factory() as srv, srv.client() as c:
        r = c.get(srv.http_url + "/demo", headers={"Host": "otp.example.com:8443"})
        assert r.status_code == 308
        assert r.headers["location"] == "https://otp.example.com:8443/demo"
        r = c.get(srv.http_url + "/demo", headers={"Host": "evil.example/@x"})
        assert r.status_code == 403


def test_development_allows_plain_http_and_sends_hsts_only_over_https(
    server_factory: Callable[..., contextlib.AbstractContextManager[Served]],
) -> None:
    with server_factory(env="development", transport="memory") as srv, srv.client() as c:
        r = _start(c, srv.http_url, srv.key)
        assert r.status_code == 201, r.text
        assert "strict-transport-security" not in r.headers
        r = c.get(srv.https_url + "/healthz")
        assert r.headers["strict-transport-security"] == HSTS_VALUE


# -- client IP: X-Forwarded-For ------------------------------------------------------------


def test_spoofed_forwarded_for_from_an_untrusted_peer_changes_nothing(
    server_factory: Callable[..., contextlib.AbstractContextManager[Served]],
) -> None:
    headers = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"}
    with server_factory(trusted_proxies=UNTRUSTED) as srv, srv.client() as c:
        who = c.get(srv.https_url + "/v1/_test/whoami", headers=headers).json()
        assert who == {"scheme": "https", "client": "127.0.0.1", "state_client_ip": "127.0.0.1"}


def test_forwarded_for_from_a_trusted_proxy_gives_the_rightmost_untrusted_hop(
    server_factory: Callable[..., contextlib.AbstractContextManager[Served]],
) -> None:
    # client spoofs 1.1.1.1; the real client is 203.0.113.9; 10.1.2.3 is an inner proxy.
    headers = {"X-Forwarded-For": "1.1.1.1, 203.0.113.9, 10.1.2.3", "X-Forwarded-Proto": "https"}
    with server_factory(trusted_proxies=TRUSTED) as srv, srv.client() as c:
        who = c.get(srv.http_url + "/v1/_test/whoami", headers=headers).json()
        assert who == {
            "scheme": "https",
            "client": "203.0.113.9",
            "state_client_ip": "203.0.113.9",
        }


def test_a_trusted_proxy_that_does_not_forward_is_itself_the_client(
    server_factory: Callable[..., contextlib.AbstractContextManager[Served]],
) -> None:
    with server_factory(trusted_proxies=TRUSTED) as srv, srv.client() as c:
        who = c.get(srv.https_url + "/v1/_test/whoami").json()
        assert who == {"scheme": "https", "client": "127.0.0.1", "state_client_ip": "127.0.0.1"}


# -- the resolution rules, without sockets ------------------------------------------------


def _scope(peer: str | None, scheme: str = "http", **headers: str) -> dict[str, Any]:
    return {
        "type": "http",
        "scheme": scheme,
        "client": (peer, 1234) if peer else None,
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }


NETS = parse_networks(["10.0.0.0/8", "2001:db8::/32"])


@pytest.mark.parametrize(
    ("peer", "headers", "expected"),
    [
        ("192.0.2.1", {"X-Forwarded-For": "203.0.113.9"}, ("http", "192.0.2.1")),
        ("10.0.0.1", {"X-Forwarded-For": "203.0.113.9"}, ("http", "203.0.113.9")),
        ("10.0.0.1", {"X-Forwarded-For": "10.9.9.9, 10.8.8.8"}, ("http", "10.9.9.9")),
        ("10.0.0.1", {"X-Forwarded-For": "203.0.113.9, not-an-ip"}, ("http", "10.0.0.1")),
        ("10.0.0.1", {"X-Forwarded-For": "203.0.113.9:5555"}, ("http", "203.0.113.9")),
        ("10.0.0.1", {"X-Forwarded-For": "[2001:db9::1]:443"}, ("http", "2001:db9::1")),
        ("2001:db8::5", {"X-Forwarded-For": "198.51.100.1"}, ("http", "198.51.100.1")),
        ("::ffff:10.0.0.1", {"X-Forwarded-For": "198.51.100.1"}, ("http", "198.51.100.1")),
        ("10.0.0.1", {"X-Forwarded-Proto": "http, https"}, ("https", "10.0.0.1")),
        ("10.0.0.1", {"X-Forwarded-Proto": "gopher"}, ("http", "10.0.0.1")),
        ("192.0.2.1", {"X-Forwarded-Proto": "https"}, ("http", "192.0.2.1")),
        (None, {"X-Forwarded-For": "203.0.113.9"}, ("http", None)),
        ("testclient", {"X-Forwarded-For": "203.0.113.9"}, ("http", "testclient")),
    ],
)
def test_resolve(peer: str | None, headers: dict[str, str], expected: tuple[str, str]) -> None:
    assert resolve(_scope(peer, **headers), NETS) == expected


def test_several_forwarded_for_headers_are_read_in_order() -> None:
    scope = _scope("10.0.0.1")
    scope["headers"] = [(b"x-forwarded-for", b"203.0.113.9"), (b"x-forwarded-for", b"10.2.2.2")]
    assert resolve(scope, NETS) == ("http", "203.0.113.9")


def test_all_trusted_hops_give_the_leftmost() -> None:
    peer = parse_networks(["10.0.0.1/32"])[0].network_address
    assert client_from_forwarded(peer, ["10.3.3.3", "10.2.2.2"], NETS) == "10.3.3.3"


# -- `otpguard serve --certfile --keyfile` in production, end to end -----------------------


@pytest.mark.slow  # starts otpguard serve with TLS
def test_production_serve_with_certfile_and_keyfile_flags_serves_https(
    tmp_path: Path, tls_files: tuple[Path, Path, Path]
) -> None:
    """The command the README, docs/hardening.md and `otpguard init --production` give:
    the flags alone make production's HTTPS requirement hold, and the server answers
    over real TLS with a verified certificate."""
    import os
    import subprocess
    import sys
    import time

    from .needs import free_port

    certfile, keyfile, cafile = tls_files
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTPGUARD_", "TWILIO_"))}
    env.update(
        {
            "OTPGUARD_ENV": "production",
            "OTPGUARD_DATA_DIR": str(tmp_path / "data"),
            "OTPGUARD_SECRET_KEYS": "ab" * 16 + "cd" * 8 + "0123456789abcdef" * 2,
            "OTPGUARD_TRANSPORT": "twilio",
            "TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
            "TWILIO_AUTH_TOKEN": "t" * 32,
            "OTPGUARD_TWILIO_FROM": "+447400000001",
            "OTPGUARD_TWILIO_API_BASE": "http://127.0.0.1:9",  # never called here
        }
    )
    port = free_port()
    log_path = tmp_path / "serve.log"
    command = [sys.executable, "-m", "otpguard.cli", "serve", "--port", str(port)]
    command += ["--certfile", str(certfile), "--keyfile", str(keyfile)]
    ctx = ssl.create_default_context(cafile=str(cafile))
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, log_path.read_text()
            try:
                r = httpx.get(f"https://127.0.0.1:{port}/healthz", verify=ctx, timeout=1.0)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.05)  # waiting for a process to start, not testing time
        assert r.status_code == 200
        assert r.headers["strict-transport-security"] == HSTS_VALUE
        assert f"otpguard production on https://127.0.0.1:{port}" in log_path.read_text()
    finally:
        process.terminate()
        process.wait(timeout=15)
