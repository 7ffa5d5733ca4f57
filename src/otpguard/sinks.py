"""Where alerts go: the log (default), a signed webhook, Slack, email.

A :class:`Dispatcher` gives each sink its own bounded queue and worker task.
``submit`` never blocks and never awaits a sink, so a slow or failing receiver
cannot slow verification traffic or the alert evaluation; failures are retried
with exponential backoff, then dropped with an error in the log.

The webhook body is JSON, signed with HMAC-SHA256 over ``"<timestamp>.<body>"``
with ``alert_webhook_secret``::

    X-Otpguard-Timestamp: 1800000000
    X-Otpguard-Signature: sha256=<hex>

A receiver recomputes the HMAC, compares in constant time and rejects old
timestamps (:func:`verify_signature` does all three).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import math
import smtplib
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any, Protocol

import httpx

from .clock import Clock, system_clock
from .config import AlertsSection
from .errors import ConfigError, OtpguardError
from .stores.base import Alert

log = logging.getLogger("otpguard.alerts")

SIGNATURE_HEADER = "X-Otpguard-Signature"
TIMESTAMP_HEADER = "X-Otpguard-Timestamp"
HTTP_TIMEOUT = 5.0
SMTP_TIMEOUT = 10.0


class SinkFailed(OtpguardError):
    """An alert sink refused or could not take a notice (retried, never raised to callers)."""

    code = "alert_sink_failed"


@dataclass(frozen=True)
class Notice:
    """One alert changing state: ``opened`` or ``resolved``."""

    state: str
    alert: Alert

    def payload(self) -> dict[str, Any]:
        a = self.alert
        return {
            "source": "otpguard",
            "state": self.state,
            "alert": {
                "id": a.id,
                "rule": a.rule,
                "subject": a.subject,
                "status": a.status,
                "message": a.message,
                "opened_at": a.opened_at,
                "updated_at": a.updated_at,
                "resolved_at": a.resolved_at,
                "details": a.details,
            },
        }

    def text(self) -> str:
        a = self.alert
        head = "ALERT" if self.state == "opened" else "RESOLVED"
        return f"[otpguard] {head} {a.rule} ({a.subject}): {a.message}"


class Sink(Protocol):
    name: str

    async def send(self, notice: Notice) -> None:
        """Deliver or raise; the dispatcher retries."""
        ...


# -- signatures ---------------------------------------------------------------------


def sign(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_signature(
    secret: str,
    timestamp: str,
    body: bytes,
    signature: str,
    *,
    now: float | None = None,
    tolerance: float = 300.0,
) -> bool:
    """True when ``signature`` is ours for this body and the timestamp is recent."""
    try:
        ts = float(timestamp)
    except ValueError:
        return False
    current = time.time() if now is None else now
    if not math.isfinite(ts) or abs(current - ts) > tolerance:  # "nan" is never "too old"
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


# -- sinks ----------------------------------------------------------------------------


class LogSink:
    name = "log"

    async def send(self, notice: Notice) -> None:
        level = logging.WARNING if notice.state == "opened" else logging.INFO
        log.log(level, notice.text())


class WebhookSink:
    name = "webhook"

    def __init__(self, url: str, secret: str, *, clock: Clock = system_clock) -> None:
        self.url = url
        self.secret = secret
        self.clock = clock

    async def send(self, notice: Notice) -> None:
        body = json.dumps(notice.payload(), separators=(",", ":"), sort_keys=True).encode()
        ts = str(int(self.clock()))
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: ts,
            SIGNATURE_HEADER: sign(self.secret, ts, body),
        }
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:
            r = await client.post(self.url, content=body, headers=headers)
        if not 200 <= r.status_code < 300:
            raise SinkFailed(f"webhook answered HTTP {r.status_code}")


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class SlackSink:
    """Slack's incoming-webhook format: ``{"text": ...}``."""

    name = "slack"

    def __init__(self, url: str) -> None:
        self.url = url

    async def send(self, notice: Notice) -> None:
        icon = ":rotating_light:" if notice.state == "opened" else ":white_check_mark:"
        body = {"text": f"{icon} {_slack_escape(notice.text())}"}
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:
            r = await client.post(self.url, json=body)
        if not 200 <= r.status_code < 300:
            raise SinkFailed(f"Slack answered HTTP {r.status_code}")


class EmailSink:
    """Plain-text mail over SMTP (STARTTLS unless ``smtp_starttls`` is false)."""

    name = "email"

    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        recipients: Sequence[str],
        *,
        user: str = "",
        password: str = "",
        starttls: bool = True,
    ) -> None:
        self.host, self.port = host, port
        self.sender, self.recipients = sender, list(recipients)
        self.user, self.password, self.starttls = user, password, starttls

    def _send_sync(self, notice: Notice) -> None:
        msg = EmailMessage()
        msg["Subject"] = notice.text()[:200]
        msg["From"] = self.sender
        msg["To"] = ", ".join(self.recipients)
        msg.set_content(
            notice.text() + "\n\n" + json.dumps(notice.payload(), indent=2, sort_keys=True)
        )
        with smtplib.SMTP(self.host, self.port, timeout=SMTP_TIMEOUT) as smtp:
            if self.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if self.user:
                smtp.login(self.user, self.password)
            smtp.send_message(msg)

    async def send(self, notice: Notice) -> None:
        await asyncio.to_thread(self._send_sync, notice)


def sinks_from_section(alerts: AlertsSection, *, clock: Clock = system_clock) -> list[Sink]:
    """The configured sinks; a sink without the settings it needs is a ConfigError."""
    out: list[Sink] = []
    for name in dict.fromkeys(alerts.sinks):
        if name == "log":
            out.append(LogSink())
        elif name == "webhook":
            secret = alerts.webhook_secret.get_secret_value()
            if not alerts.webhook_url or len(secret) < 16:
                raise ConfigError(
                    "the webhook alert sink needs OTPGUARD_ALERT_WEBHOOK_URL and "
                    "OTPGUARD_ALERT_WEBHOOK_SECRET (at least 16 characters) to sign its bodies"
                )
            out.append(WebhookSink(alerts.webhook_url, secret, clock=clock))
        elif name == "slack":
            if not alerts.slack_url:
                raise ConfigError("the slack alert sink needs OTPGUARD_ALERT_SLACK_URL")
            out.append(SlackSink(alerts.slack_url))
        elif name == "email":
            mail = alerts.mail
            if not (mail.host and mail.from_ and mail.to):
                raise ConfigError(
                    "the email alert sink needs OTPGUARD_SMTP_HOST, OTPGUARD_SMTP_FROM and "
                    "OTPGUARD_SMTP_TO"
                )
            out.append(
                EmailSink(
                    mail.host,
                    mail.port,
                    mail.from_,
                    list(mail.to),
                    user=mail.user,
                    password=mail.password.get_secret_value(),
                    starttls=mail.starttls,
                )
            )
    return out


# -- the dispatcher -----------------------------------------------------------------------

Sleep = Callable[[float], Awaitable[None]]


class Dispatcher:
    """A bounded queue and a worker per sink; retries with exponential backoff."""

    def __init__(
        self,
        sinks: Sequence[Sink],
        *,
        attempts: int = 5,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
        queue_size: int = 1000,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.sinks = list(sinks)
        self.attempts = max(1, attempts)
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.queue_size = queue_size
        self.sleep = sleep
        self.dropped = 0
        self.failed = 0
        self._queues: list[asyncio.Queue[Notice]] = []
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def running(self) -> bool:
        return bool(self._tasks)

    def start(self) -> None:
        """Start the workers in the running loop (idempotent)."""
        if self._tasks:
            return
        self._queues = [asyncio.Queue(self.queue_size) for _ in self.sinks]
        self._tasks = [
            asyncio.create_task(self._worker(sink, q), name=f"otpguard-alert-sink-{sink.name}")
            for sink, q in zip(self.sinks, self._queues, strict=True)
        ]

    def submit(self, notice: Notice) -> None:
        """Queue for every sink; never blocks. A full queue drops the notice (logged)."""
        if not self._tasks:
            self.start()
        for sink, q in zip(self.sinks, self._queues, strict=True):
            try:
                q.put_nowait(notice)
            except asyncio.QueueFull:
                self.dropped += 1
                log.error("alert sink %s is backed up; dropped: %s", sink.name, notice.text())

    async def join(self) -> None:
        """Wait until every queued notice was delivered or given up (for tests, shutdown)."""
        for q in self._queues:
            await q.join()

    async def aclose(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks = []

    async def run(self, stop: asyncio.Event) -> None:
        """An ``app.state.jobs`` job: work until ``stop``, then give queues a moment."""
        self.start()
        await stop.wait()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.join(), timeout=2)
        await self.aclose()

    async def _worker(self, sink: Sink, q: asyncio.Queue[Notice]) -> None:
        while True:
            notice = await q.get()
            try:
                await self._deliver(sink, notice)
            finally:
                q.task_done()

    async def _deliver(self, sink: Sink, notice: Notice) -> None:
        for attempt in range(self.attempts):
            try:
                await sink.send(notice)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure of a sink is retried, never propagated
                # The type only: messages of HTTP/SMTP errors may carry URLs with tokens.
                log.warning(
                    "alert sink %s failed (%s), attempt %d of %d",
                    sink.name,
                    type(exc).__name__,
                    attempt + 1,
                    self.attempts,
                )
                if attempt + 1 < self.attempts:
                    await self.sleep(min(self.max_backoff, self.backoff * 2**attempt))
        self.failed += 1
        log.error("alert sink %s gave up on: %s", sink.name, notice.text())
