"""Email codes through an SMTP relay, with ``aiosmtplib`` (``pip install 'otpguard[email]'``).

``OTPGUARD_EMAIL_SMTP_TLS`` picks how the connection is protected: ``starttls``
(the default, port 587: STARTTLS is required, a relay that does not offer it is
refused), ``implicit`` (TLS from the first byte, port 465) or ``none``
(development only; production refuses it at start-up). Certificates are always
verified, against the system's CAs or ``OTPGUARD_EMAIL_SMTP_CA_FILE``. With
``OTPGUARD_EMAIL_SMTP_USER`` the transport authenticates after TLS is up.

One connection per message: a code is one short mail, and no idle connection
can go stale between sends. Errors are translated once, at the boundary
(:func:`_translate`): nothing from the relay's replies, which may quote the
address, reaches an error message or a log. A failure before the message was
handed over (no connection, TLS, authentication, a refused sender or recipient,
a refused body) says nothing was sent; a connection lost or timed out while the
message was being handed over is an unknown outcome.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
from collections.abc import Iterator

import aiosmtplib

from ..config import EmailSection
from ..errors import UNKNOWN_OUTCOME, DeliveryError
from ..models import Channel
from .base import Message, Receipt, Transport
from .email_message import mime_message

log = logging.getLogger("otpguard.transports.smtp")


@contextlib.contextmanager
def _connecting() -> Iterator[None]:
    """Connect, TLS, EHLO, authentication: a failure here sent nothing."""
    try:
        yield
    except aiosmtplib.SMTPAuthenticationError as exc:
        raise DeliveryError(
            "not_configured", f"the SMTP relay refused the credentials ({exc.code})"
        ) from None
    except aiosmtplib.SMTPException as exc:
        raise DeliveryError(
            "network_error",
            f"could not open an SMTP session with the relay ({type(exc).__name__})",
            retryable=True,
        ) from None
    except (OSError, ssl.SSLError, TimeoutError) as exc:
        raise DeliveryError(
            "network_error", f"could not connect to the SMTP relay ({type(exc).__name__})"
        ) from None


@contextlib.contextmanager
def _handing_over() -> Iterator[None]:
    """MAIL, RCPT, DATA: a refusal sent nothing; a lost connection may have."""
    try:
        yield
    except aiosmtplib.SMTPRecipientsRefused as exc:
        codes = sorted({r.code for r in exc.recipients})
        reason = "invalid_address" if codes and codes[0] >= 500 else "provider_error"
        raise DeliveryError(
            reason, f"the SMTP relay refused the recipient ({codes})", provider_code=codes[0]
        ) from None
    except aiosmtplib.SMTPResponseException as exc:  # sender or body refused, with a reply
        raise DeliveryError(
            "provider_error", f"the SMTP relay refused the message ({exc.code})",
            provider_code=exc.code,
        ) from None  # fmt: skip
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        raise DeliveryError(
            UNKNOWN_OUTCOME,
            f"the SMTP relay did not answer ({type(exc).__name__}); the message may have been sent",
        ) from None


class SmtpTransport(Transport):
    name = "smtp"
    reaches_real_phones = True  # a relay reaches real mailboxes
    channels = frozenset({Channel.EMAIL})

    def __init__(self, section: EmailSection) -> None:
        self.relay = section.smtp
        self.sender = section.from_
        self._tls_context: ssl.SSLContext | None = None

    def problems(self) -> list[str]:
        """What keeps this transport from sending (start-up names them all)."""
        s, out = self.relay, []
        if not s.host:
            out.append("OTPGUARD_EMAIL_SMTP_HOST is not set")
        if s.user and not s.password.get_secret_value():
            out.append("OTPGUARD_EMAIL_SMTP_USER is set without OTPGUARD_EMAIL_SMTP_PASSWORD")
        if s.ca_file is not None and not s.ca_file.is_file():
            out.append(f"OTPGUARD_EMAIL_SMTP_CA_FILE: {s.ca_file} is not a file")
        return out

    def _context(self) -> ssl.SSLContext:
        if self._tls_context is None:
            ca = self.relay.ca_file
            self._tls_context = ssl.create_default_context(cafile=str(ca) if ca else None)
        return self._tls_context

    def _client(self) -> aiosmtplib.SMTP:
        s = self.relay
        mode = s.tls
        return aiosmtplib.SMTP(
            hostname=s.host,
            port=s.port,
            username=s.user or None,
            password=s.password.get_secret_value() or None,
            local_hostname=self.sender.rpartition("@")[2] or "localhost",
            timeout=s.timeout,
            use_tls=mode == "implicit",
            start_tls=mode == "starttls",
            tls_context=self._context() if mode != "none" else None,
        )

    async def send(self, message: Message) -> Receipt:
        mail = mime_message(message, self.sender)
        client = self._client()
        with _connecting():
            await client.connect()
        try:
            with _handing_over():
                await client.send_message(mail, sender=self.sender, recipients=[message.to])
        finally:
            with contextlib.suppress(aiosmtplib.SMTPException, OSError, TimeoutError):
                await client.quit()
        message_id = str(mail["Message-ID"]).strip("<>")
        log.info("smtp relay accepted email for verification %s", message.verification_id)
        return Receipt(provider="smtp", provider_id=message_id)
