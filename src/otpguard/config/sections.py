"""The settings in typed, frozen sections, one per component (httpx's ``_config.py``).

:class:`~otpguard.config.Settings` stays the one loader with flat fields (every
``OTPGUARD_FOO_BAR`` is field ``foo_bar``); each section is derived from it once
(``settings.limits``, ``settings.twilio``, ...) and is what a component takes:

=========== ================================== ============================================
section     settings                           taken by
=========== ================================== ============================================
core        env, store, codes, HTTPS, metrics  the web app and its middleware
limits      ``limit_*``, ``resend_cooldown*``  ``limits.py``, ``guards.LimitGuard``
fraud       ``fraud_*``                        ``fraud.py``, the sequential and budget guards
admission   ``admission_*``, ``trusted_days``  ``guards.AdmissionGuard``
twilio      ``twilio_*``, ``public_url``       ``transports/twilio.py``
email       ``email_*``, ``dev_allowed_emails`` the SMTP and SendGrid transports, the policy
alerts      ``alert_*``, ``smtp_*``, prices    ``sinks.py``, ``alerts.py``
challenge   ``challenge_*``                    ``challenge.py``
webhooks    ``webhook_*``                      ``webhook_delivery.py``
=========== ================================== ============================================

A section's field ``x`` is the setting ``<prefix>x`` (``twilio.from_`` is
``twilio_from``, ``limits.global_`` is ``limit_global``); every window setting is
already parsed into :data:`~otpguard.config.windows.Windows`, lists are tuples.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import SecretStr

from ..models import Channel
from .windows import Windows, windows_of

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

    from .settings import Settings

S = TypeVar("S", bound="DataclassInstance")


def pick(cls: type[S], settings: Settings, prefix: str, **given: Any) -> S:
    """A section of ``cls`` whose field ``x`` is the setting ``prefix + x`` (a trailing
    ``_`` dropped), unless ``given``: window specs parsed, lists made tuples."""
    values = dict(given)
    # Field types are strings here (postponed annotations), compared as written.
    for f in dataclasses.fields(cls):
        if f.name in values:
            continue
        raw = getattr(settings, prefix + f.name.rstrip("_"))
        if f.type == "Windows":
            raw = windows_of(raw)
        elif str(f.type).startswith("tuple["):
            raw = tuple(raw)
        elif str(f.type).startswith("frozenset["):
            raw = frozenset(raw)
        values[f.name] = raw
    return cls(**values)


@dataclasses.dataclass(frozen=True, slots=True)
class CoreSection:
    production: bool
    data_dir: Path
    store_url: str
    code_length: int
    code_ttl: int
    max_attempts: int
    failed_check_floor: float
    transport: str
    outbox_file: Path
    service_name: str
    purge_interval: int
    event_retention_days: int
    log_events: bool
    api_key_cache_ttl: float
    trusted_proxies: tuple[str, ...]
    tls_certfile: Path | None
    tls_keyfile: Path | None
    public_url: str
    metrics_port: int | None
    metrics_host: str


@dataclasses.dataclass(frozen=True, slots=True)
class LimitsSection:
    phone: Windows
    ip: Windows
    network: Windows
    ipv6_48: Windows
    account: Windows
    prefix: Windows
    country: Windows
    global_: Windows
    email: Windows
    email_domain: Windows
    failed_checks: Windows
    ip_failed_checks: Windows
    resend_cooldown: int
    resend_cooldown_max: int

    def all_windows(self) -> Windows:
        """Every rate window, of every rule (the purge horizon is the longest)."""
        return tuple(w for f in dataclasses.fields(self) if f.type == "Windows"
                     for w in getattr(self, f.name))  # fmt: skip


@dataclasses.dataclass(frozen=True, slots=True)
class FraudSection:
    conversion_window: int
    conversion_min_sends: int
    conversion_min_rate: float
    conversion_suspend: int
    suspend_on_low_conversion: bool
    observation_window: int
    sequential_window: int
    sequential_threshold: int
    budget_global: Windows
    budget_country: Windows
    shadow: frozenset[str]


@dataclasses.dataclass(frozen=True, slots=True)
class AdmissionSection:
    """Buckets as windows: ``limit`` is a bucket's base, ``seconds`` its time constant."""

    global_: Windows
    country: Windows
    api_key: Windows
    block_4: Windows
    block_5: Windows
    block_6: Windows
    email_domain: Windows
    share: float
    pressure: float
    trusted_days: int

    def blocks(self, digits: int) -> Windows:
        """The buckets of number blocks cut ``digits`` digits from the end (4, 5, 6)."""
        return {4: self.block_4, 5: self.block_5, 6: self.block_6}[digits]


@dataclasses.dataclass(frozen=True, slots=True)
class TwilioSection:
    account_sid: str
    auth_token: SecretStr
    api_key: str
    api_secret: SecretStr
    from_: str
    messaging_service_sid: str
    whatsapp_from: str
    whatsapp_content_sid: str
    api_base: str
    test_credentials: bool
    connect_timeout: float
    max_connections: int
    timeout: float
    public_url: str

    def channels_in_use(self) -> list[Channel]:
        """SMS always; WhatsApp as soon as any WhatsApp setting is given (a sender
        without a template fails every send)."""
        channels = [Channel.SMS]
        if self.whatsapp_from or self.whatsapp_content_sid:
            channels.append(Channel.WHATSAPP)
        return channels


@dataclasses.dataclass(frozen=True, slots=True)
class SmtpRelay:
    """The email channel's relay (``email_smtp_*``)."""

    host: str
    port: int
    tls: Literal["starttls", "implicit", "none"]
    user: str
    password: SecretStr
    ca_file: Path | None
    timeout: float


@dataclasses.dataclass(frozen=True, slots=True)
class SendGridAccount:
    """The email channel's SendGrid account (``email_sendgrid_*``)."""

    api_key: SecretStr
    api_base: str
    timeout: float


@dataclasses.dataclass(frozen=True, slots=True)
class EmailSection:
    production: bool
    transport: str
    from_: str
    smtp: SmtpRelay
    sendgrid: SendGridAccount
    refuse_disposable: bool
    disposable_domains: tuple[str, ...]
    allowed_domains: tuple[str, ...]
    require_mx: bool
    mx_nameservers: tuple[str, ...]
    dev_allowed: tuple[str, ...]  # OTPGUARD_DEV_ALLOWED_EMAILS


@dataclasses.dataclass(frozen=True, slots=True)
class AlertMail:
    """The email alert sink's relay (``smtp_*``, not the email channel's)."""

    host: str
    port: int
    from_: str
    to: tuple[str, ...]
    user: str
    password: SecretStr
    starttls: bool


@dataclasses.dataclass(frozen=True, slots=True)
class AlertsSection:
    sinks: tuple[str, ...]
    webhook_url: str
    webhook_secret: SecretStr
    slack_url: str
    mail: AlertMail
    price_table: Mapping[str, float]
    default_price: float
    price_currency: str
    budget_global: Windows  # the budgets the budget rule watches (fraud_budget_*)
    budget_country: Windows
    budget_countries: tuple[str, ...]  # whose country budget it watches (allowed_countries)
    conversion_counters_window: int  # the conversion watch's counters (fraud_conversion_window)
    spike_factor: float
    spike_min: int
    spike_window: int
    spike_baseline: int
    number_threshold: int
    ip_threshold: int
    hot_window: int
    conversion_min_sends: int
    conversion_min_rate: float
    conversion_window: int
    refused_destination_threshold: int
    delivery_failure_rate: float
    delivery_failure_min: int
    budget_ratio: float
    admission_threshold: int
    provider_error_threshold: int
    cooldown: int
    interval: int


@dataclasses.dataclass(frozen=True, slots=True)
class ChallengeSection:
    production: bool
    provider: Literal["off", "turnstile", "hcaptcha", "recaptcha"]
    site_key: str
    secret: SecretStr
    verify_url: str
    mode: Literal["pressure", "always"]
    timeout: float


@dataclasses.dataclass(frozen=True, slots=True)
class WebhooksSection:
    production: bool
    timeout: float
    max_attempts: int
    max_age: int
    retention_days: int
    max_pending: int
    refused_per_minute: int
    allow_private: bool


def core_of(s: Settings) -> CoreSection:
    return pick(CoreSection, s, "", production=s.production, outbox_file=s.outbox_file,
                store_url=s.store_url)  # fmt: skip


def limits_of(s: Settings) -> LimitsSection:
    return pick(LimitsSection, s, "limit_", resend_cooldown=s.resend_cooldown,
                resend_cooldown_max=s.resend_cooldown_max)  # fmt: skip


def fraud_of(s: Settings) -> FraudSection:
    return pick(FraudSection, s, "fraud_")


def admission_of(s: Settings) -> AdmissionSection:
    return pick(AdmissionSection, s, "admission_", trusted_days=s.trusted_days)


def twilio_of(s: Settings) -> TwilioSection:
    return pick(TwilioSection, s, "twilio_", public_url=s.public_url)


def email_of(s: Settings) -> EmailSection:
    return pick(
        EmailSection,
        s,
        "email_",
        production=s.production,
        smtp=pick(SmtpRelay, s, "email_smtp_"),
        sendgrid=pick(SendGridAccount, s, "email_sendgrid_"),
        dev_allowed=tuple(s.dev_allowed_emails),
    )


def alerts_of(s: Settings) -> AlertsSection:
    return pick(
        AlertsSection,
        s,
        "alert_",
        mail=pick(AlertMail, s, "smtp_"),
        price_table=MappingProxyType(dict(s.price_table)),  # read-only, as the section
        default_price=s.default_price,
        price_currency=s.price_currency,
        budget_global=windows_of(s.fraud_budget_global),
        budget_country=windows_of(s.fraud_budget_country),
        budget_countries=tuple(s.allowed_countries),
        conversion_counters_window=s.fraud_conversion_window,
    )


def challenge_of(s: Settings) -> ChallengeSection:
    return pick(ChallengeSection, s, "challenge_", production=s.production)


def webhooks_of(s: Settings) -> WebhooksSection:
    return pick(WebhooksSection, s, "webhook_", production=s.production)
