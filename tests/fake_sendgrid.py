"""A fake of SendGrid's v3 Mail Send API: a real HTTP server on 127.0.0.1 that checks
the request shape the way SendGrid does.

    with FakeSendGrid() as fake:
        settings = make_settings(tmp_path, **fake.settings())
        ...
        fake.sent[-1]                        # the accepted request's JSON body

What it checks, like SendGrid: ``POST /v3/mail/send``; ``Authorization: Bearer
<key>`` (anything else: 401 with SendGrid's error body); ``Content-Type:
application/json``; a body with ``personalizations`` (a non-empty list, each with
a non-empty ``to`` list of ``{"email": ...}``), ``from.email``, ``subject`` and
``content`` (a non-empty list of ``{"type", "value"}``, ``text/plain`` first when
present). A body that fails is answered 400 ``{"errors": [{"message", "field",
"help"}]}``; an accepted one 202 with an empty body and ``X-Message-Id``.

``fake.mode``: ``"error"`` answers 500; ``"slow"`` holds each request until the
server stops, so the client's timeout fires without the test sleeping.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

from .needs import free_port

API_KEY = "SG.fake-key.0123456789abcdefghijklmnopqrstuvwxyz"
Mode = Literal["normal", "error", "slow"]
_STALL_LIMIT = 30.0


def shape_errors(body: Any) -> Iterator[tuple[str, str]]:
    """(field, message) for each way ``body`` is not a Mail Send request."""
    if not isinstance(body, dict):
        yield "", "The request body must be a JSON object."
        return
    pers = body.get("personalizations")
    if not isinstance(pers, list) or not pers:
        yield "personalizations", "The personalizations field is required."
    else:
        for i, p in enumerate(pers):
            to = p.get("to") if isinstance(p, dict) else None
            if not isinstance(to, list) or not to:
                yield f"personalizations.{i}.to", "The to array is required."
            elif not all(isinstance(t, dict) and isinstance(t.get("email"), str) for t in to):
                yield f"personalizations.{i}.to", "Each to must have an email."
    sender = body.get("from")
    if not isinstance(sender, dict) or not isinstance(sender.get("email"), str):
        yield "from.email", "The from email is required."
    if not isinstance(body.get("subject"), str) or not body["subject"]:
        yield "subject", "The subject is required."
    content = body.get("content")
    if not isinstance(content, list) or not content:
        yield "content", "The content field is required."
    else:
        types = [c.get("type") if isinstance(c, dict) else None for c in content]
        if not all(isinstance(c, dict) and isinstance(c.get("value"), str) for c in content):
            yield "content", "Each content must have a type and a value."
        elif "text/plain" in types and types[0] != "text/plain":
            yield "content", "text/plain must come first."


class FakeSendGrid:
    def __init__(self, *, api_key: str = API_KEY) -> None:
        self.api_key = api_key
        self.port = free_port()
        self.sent: list[dict[str, Any]] = []
        self.rejected: list[Any] = []
        self.mode: Mode = "normal"
        self._release = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                fake._post(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def settings(self, **overrides: Any) -> dict[str, Any]:
        out: dict[str, Any] = {
            "email_transport": "sendgrid",
            "email_from": "codes@example.com",
            "email_sendgrid_api_key": self.api_key,
            "email_sendgrid_api_base": self.url,
            "email_sendgrid_timeout": 2.0,
        }
        out.update(overrides)
        return out

    def _answer(self, h: BaseHTTPRequestHandler, status: int, body: Any = None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        h.send_response(status)
        if status == 202:
            h.send_header("X-Message-Id", secrets.token_urlsafe(16))
        if data:
            h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def _post(self, h: BaseHTTPRequestHandler) -> None:
        raw = h.rfile.read(int(h.headers.get("Content-Length") or 0))
        if self.mode == "slow":
            self._release.wait(_STALL_LIMIT)
            return
        if self.mode == "error":
            return self._answer(h, 500, {"errors": [{"message": "internal", "field": None}]})
        if h.path != "/v3/mail/send":
            return self._answer(h, 404, {"errors": [{"message": "not found", "field": None}]})
        if h.headers.get("Authorization") != f"Bearer {self.api_key}":
            msg = "The provided authorization grant is invalid, expired, or revoked"
            return self._answer(h, 401, {"errors": [{"message": msg, "field": None, "help": None}]})
        if not (h.headers.get("Content-Type") or "").startswith("application/json"):
            return self._answer(h, 415, {"errors": [{"message": "JSON only", "field": None}]})
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        errors = list(shape_errors(body))
        if errors:
            self.rejected.append(body)
            out = [{"message": m, "field": f or None, "help": None} for f, m in errors]
            return self._answer(h, 400, {"errors": out})
        self.sent.append(body)
        self._answer(h, 202)

    def __enter__(self) -> FakeSendGrid:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._release.set()
        self.server.shutdown()
        self.server.server_close()


def code_in(body: dict[str, Any]) -> str:
    """The code, read from the plain-text content the way a person reads it."""
    text = next(c["value"] for c in body["content"] if c["type"] == "text/plain")
    digits = [w for w in text.split() if w.isdigit() and 6 <= len(w) <= 10]
    assert len(digits) == 1, text
    return str(digits[0])
