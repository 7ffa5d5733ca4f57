"""A real HTTP receiver for otpguard's webhooks, on a loopback port in a thread.

It records every POST (headers, raw body, the time on ``clock``), answers with the
next status code of ``codes`` (then 200), and can hold requests: with ``hold`` set,
each request signals ``entered`` and waits for ``release`` before answering.
HTTP/1.1 with keep-alive, as a real receiver would (an HTTP/1.0 server closing each
connection races the client's pool: a reused socket may be found closed).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    at: float  # the receiver's clock when it arrived

    @property
    def payload(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.body)
        return data


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # the worker posts a batch at once (socketserver's default: 5)
    daemon_threads = True


class Receiver:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.received: list[Received] = []
        self.codes: list[int] = []
        self.hold = False
        self.entered = threading.Event()
        self.release = threading.Event()
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver._lock:
                    receiver.received.append(Received(dict(self.headers.items()), body, clock()))
                    code = receiver.codes.pop(0) if receiver.codes else 200
                if receiver.hold:
                    receiver.entered.set()
                    receiver.release.wait(timeout=30)
                self.send_response(code)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks"

    def types(self) -> list[str]:
        return [r.payload["type"] for r in self.received]

    def start(self) -> Receiver:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


def running_receiver(clock: Callable[[], float] = time.time) -> Iterator[Receiver]:
    r = Receiver(clock).start()
    try:
        yield r
    finally:
        r.stop()
