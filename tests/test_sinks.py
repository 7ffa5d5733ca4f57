"""Alert sinks: log, signed webhook, Slack format, SMTP; retries; never blocking."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from otpguard.config import Settings
from otpguard.errors import ConfigError
from otpguard.sinks import (
    Dispatcher,
    EmailSink,
    LogSink,
    Notice,
    SlackSink,
    WebhookSink,
    sign,
    sinks_from_section,
    verify_signature,
)
from otpguard.stores.base import Alert

ALERT = Alert(
    id="hot_ip:203.0.113.9",
    rule="hot_ip",
    subject="ip 203.0.113.9",
    status="open",
    opened_at=1_800_000_000.0,
    updated_at=1_800_000_000.0,
    message="25 code requests from 203.0.113.9 in 10 min (threshold 20)",
    details={"requests": 25},
)
NOTICE = Notice("opened", ALERT)


class Recorder:
    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.statuses: list[int] = []  # answers to give, in order; then 200


@pytest.fixture
def http_receiver() -> Iterator[tuple[str, Recorder]]:
    rec = Recorder()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            rec.requests.append((dict(self.headers.items()), body))
            status = rec.statuses.pop(0) if rec.statuses else 200
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", rec
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_signatures_verify_and_reject() -> None:
    body = b'{"a":1}'
    sig = sign("s" * 20, "1800000000", body)
    assert sig.startswith("sha256=")
    assert verify_signature("s" * 20, "1800000000", body, sig, now=1_800_000_010)
    assert not verify_signature("s" * 20, "1800000000", body + b" ", sig, now=1_800_000_010)
    assert not verify_signature("t" * 20, "1800000000", body, sig, now=1_800_000_010)
    assert not verify_signature("s" * 20, "1800000001", body, sig, now=1_800_000_010)
    assert not verify_signature("s" * 20, "1800000000", body, sig, now=1_800_001_000)  # stale
    assert not verify_signature("s" * 20, "soon", body, sig)


async def test_webhook_body_and_headers(http_receiver: tuple[str, Recorder]) -> None:
    url, rec = http_receiver
    await WebhookSink(url, "w" * 20, clock=lambda: 1_800_000_000.0).send(NOTICE)
    ((headers, body),) = rec.requests
    assert headers["Content-Type"] == "application/json"
    assert verify_signature(
        "w" * 20,
        headers["X-Otpguard-Timestamp"],
        body,
        headers["X-Otpguard-Signature"],
        now=1_800_000_000,
    )
    payload = json.loads(body)
    assert payload["state"] == "opened" and payload["alert"]["id"] == ALERT.id
    assert payload["alert"]["details"] == {"requests": 25}


async def test_slack_format(http_receiver: tuple[str, Recorder]) -> None:
    url, rec = http_receiver
    alert = Alert("r:s", "r", "s<b>", "open", 0.0, 0.0, message="a & b")
    await SlackSink(url).send(Notice("resolved", alert))
    ((_, body),) = rec.requests
    text = json.loads(body)["text"]
    assert text.startswith(":white_check_mark: [otpguard] RESOLVED r (s&lt;b&gt;): a &amp; b")


async def test_email_over_smtp() -> None:
    from aiosmtpd.controller import Controller

    received: list[bytes] = []

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            received.append(envelope.content)
            return "250 OK"

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        sink = EmailSink(
            "127.0.0.1", port, "otpguard@example.com", ["ops@example.com"], starttls=False
        )
        await sink.send(NOTICE)
    finally:
        controller.stop()
    (raw,) = received
    mail = message_from_bytes(raw)
    assert mail["To"] == "ops@example.com"
    assert "ALERT hot_ip" in mail["Subject"]
    assert "25 code requests" in mail.get_payload()


async def test_log_sink(caplog: pytest.LogCaptureFixture) -> None:
    await LogSink().send(NOTICE)
    assert any(
        r.levelno == logging.WARNING and "ALERT hot_ip" in r.getMessage() for r in caplog.records
    )


async def test_failures_are_retried_with_exponential_backoff(
    http_receiver: tuple[str, Recorder],
) -> None:
    url, rec = http_receiver
    rec.statuses = [500, 503, 500]
    delays: list[float] = []

    async def record_sleep(seconds: float) -> None:
        delays.append(seconds)

    d = Dispatcher([WebhookSink(url, "w" * 20)], attempts=5, backoff=1.0, sleep=record_sleep)
    d.submit(NOTICE)
    await d.join()
    await d.aclose()
    assert len(rec.requests) == 4  # three failures, then delivered
    assert delays == [1.0, 2.0, 4.0]
    assert d.failed == 0


async def test_a_dead_sink_gives_up_and_never_blocks_submit() -> None:
    class Stuck:
        name = "stuck"

        def __init__(self) -> None:
            self.started = asyncio.Event()
            self.release = asyncio.Event()
            self.calls = 0

        async def send(self, notice: Notice) -> None:
            self.calls += 1
            self.started.set()
            await self.release.wait()
            raise ConnectionError("down")

    class Counting:
        name = "counting"

        def __init__(self) -> None:
            self.seen: list[Notice] = []

        async def send(self, notice: Notice) -> None:
            self.seen.append(notice)

    async def no_sleep(_: float) -> None:
        pass

    stuck, counting = Stuck(), Counting()
    d = Dispatcher([stuck, counting], attempts=2, queue_size=3, sleep=no_sleep)
    d.submit(NOTICE)
    await stuck.started.wait()
    for _ in range(5):  # returns at once although the first sink hangs
        d.submit(NOTICE)
    # One in flight and three queued per sink; two more each are dropped, not awaited.
    assert d.dropped == 4
    for _ in range(10):
        await asyncio.sleep(0)
    assert len(counting.seen) == 4  # the other sink is not held up by the stuck one
    stuck.release.set()
    await d.join()
    await d.aclose()
    assert stuck.calls == 2 * 4 and d.failed == 4


def test_sinks_from_section(settings_factory: Callable[..., Settings]) -> None:
    assert [s.name for s in sinks_from_section(settings_factory().alerts)] == ["log"]
    with pytest.raises(ConfigError, match="ALERT_WEBHOOK_SECRET"):
        sinks_from_section(
            settings_factory(alert_sinks=["webhook"], alert_webhook_url="http://x/").alerts
        )
    with pytest.raises(ConfigError, match="SLACK_URL"):
        sinks_from_section(settings_factory(alert_sinks=["slack"]).alerts)
    with pytest.raises(ConfigError, match="SMTP_HOST"):
        sinks_from_section(settings_factory(alert_sinks=["email"]).alerts)
    full = settings_factory(
        alert_sinks=["log", "webhook", "slack", "email"],
        alert_webhook_url="http://127.0.0.1/h",
        alert_webhook_secret="x" * 16,
        alert_slack_url="http://127.0.0.1/s",
        smtp_host="127.0.0.1",
        smtp_from="a@example.com",
        smtp_to=["b@example.com"],
    )
    assert [s.name for s in sinks_from_section(full.alerts)] == ["log", "webhook", "slack", "email"]
