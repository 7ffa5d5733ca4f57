"""A local SMTP relay for the email channel's tests: ``aiosmtpd`` on 127.0.0.1, with a
certificate from a private CA (``trustme``), authentication and an inbox.

    with LocalRelay(tmp_path, tls="starttls") as relay:
        settings = make_settings(tmp_path, **relay.settings())
        ...
        relay.inbox[-1]                      # the parsed email.message.EmailMessage

What it does, like a submission server: with ``tls="starttls"`` it offers
STARTTLS and refuses MAIL before it (and AUTH before TLS); with ``"implicit"`` it
speaks TLS from the first byte; ``"none"`` is plain SMTP. AUTH PLAIN/LOGIN is
required when ``user`` is set and refuses any other password. A recipient listed
in ``refuse`` is answered ``550 5.1.1``. Every accepted message is kept parsed in
``inbox`` together with its envelope (``envelopes``). With ``relay.drop_after_data``
the relay keeps the message, then drops the connection instead of answering (the
client cannot tell whether it was accepted).
"""

from __future__ import annotations

import email
import email.policy
import ssl
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Literal

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from .needs import free_port

USER = "relay-user"
PASSWORD = "relay-password-0123456789"
TlsMode = Literal["starttls", "implicit", "none"]


class _Handler:
    def __init__(self, refuse: set[str]) -> None:
        self.refuse = refuse
        self.drop_after_data = False
        self.inbox: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []

    async def handle_RCPT(
        self, server: Any, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address in self.refuse:
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        self.inbox.append(msg)
        self.envelopes.append((str(envelope.mail_from), list(envelope.rcpt_tos)))
        if self.drop_after_data:
            server.transport.close()  # taken, never acknowledged
        return "250 2.0.0 OK queued"


class _Authenticator:
    def __call__(
        self, server: Any, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = (
            isinstance(data, LoginPassword)
            and data.login == USER.encode()
            and data.password == PASSWORD.encode()
        )
        return AuthResult(success=ok, handled=False)


class LocalRelay:
    def __init__(
        self,
        tmp_path: Path,
        *,
        tls: TlsMode = "starttls",
        user: str | None = USER,
        refuse: set[str] | None = None,
    ) -> None:
        self.tls = tls
        self.user = user
        self.port = free_port()
        self.ca_file = tmp_path / "relay-ca.pem"
        ca = trustme.CA()
        ca.cert_pem.write_to_path(str(self.ca_file))
        self.server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("localhost", "127.0.0.1").configure_cert(self.server_context)
        self.handler = _Handler(refuse or set())
        kwargs: dict[str, Any] = {}
        if tls == "starttls":
            kwargs.update(tls_context=self.server_context, require_starttls=True)
        elif tls == "implicit":
            kwargs.update(ssl_context=self.server_context)
        if user is not None:
            kwargs.update(
                authenticator=_Authenticator(),
                auth_required=True,
                # aiosmtpd only counts STARTTLS as TLS: over implicit TLS it would not
                # offer AUTH at all (the connection is encrypted from the first byte).
                auth_require_tls=tls == "starttls",
            )
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port, **kwargs)

    @property
    def inbox(self) -> list[EmailMessage]:
        return self.handler.inbox

    @property
    def envelopes(self) -> list[tuple[str, list[str]]]:
        return self.handler.envelopes

    def settings(self, **overrides: Any) -> dict[str, Any]:
        """The OTPGUARD_EMAIL_* settings that send through this relay."""
        out: dict[str, Any] = {
            "email_transport": "smtp",
            "email_from": "codes@example.com",
            "email_smtp_host": "localhost",
            "email_smtp_port": self.port,
            "email_smtp_tls": self.tls,
            "email_smtp_ca_file": self.ca_file,
            "email_smtp_timeout": 10.0,
        }
        if self.user is not None:
            out.update(email_smtp_user=USER, email_smtp_password=PASSWORD)
        out.update(overrides)
        return out

    def __enter__(self) -> LocalRelay:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()


def code_in(msg: EmailMessage) -> str:
    """The code, read from the plain-text part the way a person reads it."""
    part = msg.get_body(preferencelist=("plain",))
    assert part is not None
    text = part.get_content()
    digits = [w for w in text.split() if w.isdigit() and 6 <= len(w) <= 10]
    assert len(digits) == 1, text
    return digits[0]
