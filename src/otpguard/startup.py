"""Start-up checks: everything ``otpguard serve`` (and ``purge``, ``audit``,
``create_app``, ``open_verifier``) validates before any side effect.

:func:`startup_problems` lists every problem at once (store URL, destination policy,
development numbers, alert sinks, the challenge provider, the Twilio transport,
the email channel's settings and transport, production's safety rules);
:func:`check_startup` raises one :class:`~otpguard.errors.ConfigError` naming all of
them, and only then gives development its key file. Nothing here opens a connection,
creates a file or prints: a configuration that would be refused leaves no trace.

``otpguard audit`` reports the same list as its ``config.startup`` item
(``audit.checks_policy.check_config``), so the audit fails on exactly what serving
would refuse. Each component's own check takes its section (``settings.email``,
``settings.twilio``, ...); this module is where they are gathered.
"""

from __future__ import annotations

from .challenge import challenge_problems
from .config import EmailSection, Settings, ensure_dev_key
from .email_address import parse as parse_address
from .email_policy import EmailPolicy, dev_allowed
from .errors import ConfigError, InvalidRequest
from .phone import DestinationPolicy, parse
from .sinks import sinks_from_section
from .stores import store_from_url
from .transports.sendgrid import SendGridTransport


def production_problems(settings: Settings) -> list[str]:
    """Why production must refuse to start with these settings (empty when safe)."""
    problems: list[str] = []
    if not settings.production:
        return problems
    if not settings.secret_keys:
        problems.append(
            "OTPGUARD_SECRET_KEYS is not set: production needs a key of at least 32 random "
            "bytes in hex (run `otpguard init`)"
        )
    if settings.transport != "twilio":
        problems.append(
            f"OTPGUARD_TRANSPORT={settings.transport} is for development only; "
            "production needs OTPGUARD_TRANSPORT=twilio"
        )
    if settings.twilio_test_credentials:
        problems.append(
            "OTPGUARD_TWILIO_TEST_CREDENTIALS=true is for development; unset it in production"
        )
    if not settings.trusted_proxies and not (settings.tls_certfile and settings.tls_keyfile):
        problems.append(
            "production serves HTTPS only: pass --certfile/--keyfile (OTPGUARD_TLS_CERTFILE, "
            "OTPGUARD_TLS_KEYFILE) or list your TLS-terminating proxies in "
            "OTPGUARD_TRUSTED_PROXIES (CIDRs)"
        )
    return problems


def email_problems(email: EmailSection) -> list[str]:
    """The email channel's settings: its domain lists, its sender and transport, and
    in production TLS to the relay and no development transport."""
    problems: list[str] = []
    for check in (EmailPolicy.from_section, dev_allowed):
        try:
            check(email)
        except ConfigError as exc:
            problems.append(exc.message)
    name = email.transport
    if name in ("smtp", "sendgrid"):
        try:
            parse_address(email.from_)
        except InvalidRequest:
            problems.append(
                f"OTPGUARD_EMAIL_TRANSPORT={name} needs OTPGUARD_EMAIL_FROM, the sender "
                "address (like codes@example.com)"
            )
    problems += _email_transport_problems(email)
    if email.require_mx:
        try:
            import dns.asyncresolver  # noqa: F401 - an optional extra: only whether it is installed
        except ImportError:
            problems.append("OTPGUARD_EMAIL_REQUIRE_MX=true needs dnspython: pip install "
                            "'otpguard[email]'")  # fmt: skip
    if email.production:
        if name in ("console", "memory", "file"):
            problems.append(
                f"OTPGUARD_EMAIL_TRANSPORT={name} is for development only; production needs "
                "smtp or sendgrid (or leave it unset: no email channel)"
            )
        if name == "smtp" and email.smtp.tls == "none":
            problems.append(
                "OTPGUARD_EMAIL_SMTP_TLS=none sends codes in clear text; production needs "
                "starttls or implicit"
            )
        if name == "sendgrid" and not email.sendgrid.api_base.startswith("https://"):
            problems.append("OTPGUARD_EMAIL_SENDGRID_API_BASE must be https:// in production")
    return problems


def _email_transport_problems(email: EmailSection) -> list[str]:
    """What the chosen relay transport itself says is missing."""
    if email.transport == "smtp":
        try:
            from .transports.smtp import SmtpTransport  # aiosmtplib is an optional extra
        except ImportError:
            return ["OTPGUARD_EMAIL_TRANSPORT=smtp needs aiosmtplib: pip install "
                    "'otpguard[email]'"]  # fmt: skip
        return [f"the smtp transport is not ready: {p}" for p in SmtpTransport(email).problems()]
    if email.transport == "sendgrid":
        return [f"the sendgrid transport is not ready: {p}"
                for p in SendGridTransport(email).problems()]  # fmt: skip
    return []


def startup_problems(settings: Settings) -> list[str]:
    """Every reason serving must refuse these settings (empty when it may start)."""
    problems: list[str] = []
    try:
        store_from_url(settings.core.store_url)  # parses the URL; connects to nothing
    except ConfigError as exc:
        problems.append(exc.message)
    try:
        DestinationPolicy.from_settings(settings)
    except ConfigError as exc:
        problems.append(exc.message)
    for raw in settings.dev_allowed_numbers:
        try:
            parse(raw, settings.default_region)
        except InvalidRequest as exc:
            problems.append(f"OTPGUARD_DEV_ALLOWED_NUMBERS: {exc.message}")
    try:
        sinks_from_section(settings.alerts)  # builds the sinks; sends nothing
    except ConfigError as exc:
        problems.append(exc.message)
    if settings.secret_keys:
        try:
            settings.keyring()
        except ConfigError as exc:
            problems.append(exc.message)
    problems += production_problems(settings)
    problems += challenge_problems(settings.challenge)
    problems += email_problems(settings.email)
    if settings.transport == "twilio":
        from .transports.twilio import TwilioTransport  # only when chosen: the SDK is heavy

        problems += [
            f"the twilio transport is not ready: {p}"
            for p in TwilioTransport(settings.twilio).problems(settings.twilio.channels_in_use())
        ]
    return problems


def check_startup(settings: Settings) -> Settings:
    """Validate for serving, naming every problem at once; then give development a key."""
    problems = startup_problems(settings)
    if problems:
        where = " in production" if settings.production else ""
        raise ConfigError(f"refusing to start{where}:\n  - " + "\n  - ".join(problems))
    return ensure_dev_key(settings)
