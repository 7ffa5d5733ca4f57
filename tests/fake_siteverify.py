"""A fake CAPTCHA siteverify API: a real HTTP server on 127.0.0.1 speaking the wire format
that Cloudflare Turnstile, hCaptcha and reCAPTCHA share.

    with FakeSiteverify() as fake:
        settings = make_settings(tmp_path, **fake.settings())
        token = fake.issue()                 # what the widget hands a browser
        ...                                  # otpguard posts it to fake.url

What it does, like the real providers:

* ``POST /siteverify``, ``application/x-www-form-urlencoded`` fields ``secret``,
  ``response`` and optional ``remoteip``; the answer is always JSON
  ``{"success": bool, "error-codes": [...]}`` (plus ``challenge_ts`` and
  ``hostname`` on success).
* A wrong secret is ``invalid-input-secret``, a missing one ``missing-input-secret``;
  no token is ``missing-input-response``; a token it never issued is
  ``invalid-input-response``; a token verified before is ``timeout-or-duplicate``
  (hCaptcha says ``already-seen-response``: pass ``duplicate_code``).
* Every request is recorded in ``fake.requests`` (the parsed form).

Faults, set with ``fake.mode``: ``"slow"`` holds each request until ``release()``
(or shutdown), so the client's timeout fires without the test sleeping; ``"error"``
answers HTTP 500; ``"garbage"`` answers 200 with a body that is not JSON.
``fake.down_url()`` is a loopback URL where nothing listens (connection refused).
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import parse_qsl

import pytest

from .needs import free_port
from .serverproc import Server, otpguard_server

SECRET = "0x-fake-siteverify-secret-4AAAAAAAAAAAAAAAAAAAAAAAAA"
SITE_KEY = "0x4AAAAAAAfakeSiteKey"
_STALL_LIMIT = 30.0  # seconds a held request waits at most, so threads always end

Mode = Literal["normal", "slow", "error", "garbage"]


@dataclass(frozen=True)
class Recorded:
    path: str
    content_type: str
    form: dict[str, str]


class FakeSiteverify:
    def __init__(
        self, *, secret: str = SECRET, duplicate_code: str = "timeout-or-duplicate"
    ) -> None:
        self.secret = secret
        self.duplicate_code = duplicate_code
        self.mode: Mode = "normal"
        #: A provider that does not enforce single use (a lax self-hosted CAPTCHA):
        #: otpguard must still admit each token once.
        self.reuse_allowed = False
        self.requests: list[Recorded] = []
        self._issued: set[str] = set()
        self._seen: set[str] = set()
        self._lock = threading.Lock()
        self._release = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    # -- what a test uses ----------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/siteverify"

    @staticmethod
    def down_url() -> str:
        """A loopback URL nobody listens on: a provider that is down."""
        return f"http://127.0.0.1:{free_port()}/siteverify"

    def issue(self) -> str:
        """A fresh token, as the widget would give a browser that passed."""
        token = "XXXX.FAKE." + secrets.token_urlsafe(32)
        with self._lock:
            self._issued.add(token)
        return token

    def settings(self, provider: str = "turnstile", **extra: Any) -> dict[str, Any]:
        """otpguard settings pointing at this fake."""
        return {
            "challenge_provider": provider,
            "challenge_site_key": SITE_KEY,
            "challenge_secret": self.secret,
            "challenge_verify_url": self.url,
            **extra,
        }

    def release(self) -> None:
        """Let held ("slow") requests finish."""
        self._release.set()

    # -- the server ------------------------------------------------------------------------

    def _answer(self, form: dict[str, str]) -> dict[str, Any]:
        secret = form.get("secret", "")
        token = form.get("response", "")
        codes: list[str] = []
        if not secret:
            codes.append("missing-input-secret")
        elif not secrets.compare_digest(secret.encode(), self.secret.encode()):
            codes.append("invalid-input-secret")
        if not token:
            codes.append("missing-input-response")
        elif not codes:
            with self._lock:
                if token in self._seen and not self.reuse_allowed:
                    codes.append(self.duplicate_code)
                elif token not in self._issued:
                    codes.append("invalid-input-response")
                self._seen.add(token)  # a real provider burns a token on any check
        if codes:
            return {"success": False, "error-codes": codes}
        return {
            "success": True,
            "error-codes": [],
            "challenge_ts": "2026-01-01T00:00:00.000Z",
            "hostname": "otp.example",
        }

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode("utf-8", "replace")
                ctype = self.headers.get("Content-Type", "")
                form = dict(parse_qsl(raw, keep_blank_values=True))
                fake.requests.append(Recorded(self.path, ctype, form))
                if fake.mode == "slow":
                    fake._release.wait(_STALL_LIMIT)
                if fake.mode == "error":
                    self._send(500, b"<html>internal error</html>", "text/html")
                    return
                if fake.mode == "garbage":
                    self._send(200, b"<html>not json</html>", "text/html")
                    return
                if self.path != "/siteverify":
                    self._send(404, b'{"success": false, "error-codes": ["not-found"]}')
                    return
                if not ctype.startswith("application/x-www-form-urlencoded"):
                    body = {"success": False, "error-codes": ["bad-request"]}
                    self._send(400, json.dumps(body).encode())
                    return
                self._send(200, json.dumps(fake._answer(form)).encode())

        return Handler

    def __enter__(self) -> FakeSiteverify:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


@pytest.fixture
def fake_siteverify() -> Iterator[FakeSiteverify]:
    with FakeSiteverify() as fake:
        yield fake


@pytest.fixture(scope="module")
def siteverify() -> Iterator[FakeSiteverify]:
    """One fake for a module's tests (its real ``otpguard serve`` outlives a test)."""
    with FakeSiteverify() as fake:
        yield fake


@pytest.fixture(scope="module")
def challenge_server(
    tmp_path_factory: pytest.TempPathFactory, siteverify: FakeSiteverify
) -> Iterator[Server]:
    """A real ``otpguard serve`` that asks every start for a challenge checked here."""
    settings = siteverify.settings(challenge_mode="always")
    with otpguard_server(tmp_path_factory.mktemp("challenge"), **settings) as running:
        yield running
