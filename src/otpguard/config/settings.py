"""The one settings model: every ``OTPGUARD_FOO_BAR`` is the flat field ``foo_bar``,
validated once; the typed sections each component takes (``sections.py``) are
derived from it, once per settings object."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from ..codes import Keyring
from .sections import (
    admission_of,
    alerts_of,
    challenge_of,
    core_of,
    email_of,
    fraud_of,
    limits_of,
    twilio_of,
    webhooks_of,
)
from .windows import windows_of

# Codes people write for a country that ISO 3166-1 spells otherwise.
_NOT_ISO = {"UK": "GB", "EL": "GR"}


def _region_code(raw: str) -> str:
    """An ISO 3166-1 alpha-2 code that phone numbers can have (``phonenumbers`` knows
    which); ``UK`` is refused with its ISO spelling, since GB numbers would never match."""
    import phonenumbers  # loading settings alone does not load its number metadata

    code = raw.strip().upper()
    if code in _NOT_ISO:
        raise ValueError(f"{code!r} is not an ISO 3166-1 code: write {_NOT_ISO[code]}")
    if not re.fullmatch(r"[A-Z]{2}", code) or code not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(
            f"{code!r} is not an ISO 3166-1 alpha-2 country code with phone numbers (like GB)"
        )
    return code


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # -- core ---------------------------------------------------------------
    env: Literal["development", "production"] = "development"
    data_dir: Path = Path(".otpguard")
    store: str = ""  # default: sqlite:///<data_dir>/otpguard.db
    secret_keys: list[SecretStr] = Field(default_factory=list)
    # The form new code tags are signed in (codes.py): 1 only while instances of before
    # schema 17 still run beside this one (they cannot verify form 2); both verify.
    tag_form: int = Field(2, ge=1, le=2)
    code_length: int = Field(6, ge=6, le=10)
    code_ttl: int = Field(300, ge=60, le=600)
    max_attempts: int = Field(5, ge=1, le=10)
    # Every failing check takes at least this long, so that an unknown id or number,
    # a locked verification and a wrong code cannot be told apart by timing.
    failed_check_floor: float = Field(0.015, ge=0.0, le=1.0)
    resend_cooldown: int = Field(30, ge=0, le=600)
    resend_cooldown_max: int = Field(600, ge=0, le=86400)
    transport: Literal["console", "memory", "file", "twilio"] = "console"
    outbox_path: Path | None = None  # file transport; default <data_dir>/outbox.jsonl
    service_name: str = Field("otpguard", min_length=1, max_length=40)
    purge_interval: int = Field(60, ge=1)
    event_retention_days: int = Field(30, ge=1, le=3650)
    log_events: bool = True

    # -- rate limits (LIMIT/WINDOW;...) ---------------------------------------
    limit_phone: str = "3/10m;10/24h"
    limit_ip: str = "10/10m;50/24h"
    limit_network: str = "30/10m"
    # IPv6 only: one site commonly holds a /48, so a client rotating /56s and /64s
    # inside it is counted here too.
    limit_ipv6_48: str = "60/10m;300/24h"
    limit_account: str = "5/10m;20/24h"  # per end-user account_id (of one API key)
    # Hard caps on *all* sends (trusted numbers included), off by default: shared
    # capacity is the admission buckets' job below, paid for in conversions.
    limit_prefix: str = "off"
    limit_country: str = "off"
    limit_global: str = "off"
    # The email channel (docs/email.md): per mailbox (address without +tag) and a
    # hard cap per domain (off: the domain's admission bucket below is conversion-aware).
    limit_email: str = "3/10m;10/24h"
    limit_email_domain: str = "off"
    limit_failed_checks: str = "10/1h"
    limit_ip_failed_checks: str = "30/1h"

    # -- admission: shared capacity paid for in conversions (admission.py) ---
    # BASE/TAU;...: a base of unconverted sends, decaying with time constant TAU.
    admission_global: str = "100/10m;100/8h"
    admission_country: str = "80/10m;80/10h"
    admission_api_key: str = "150/10m;300/8h"
    admission_block_4: str = "12/12h"  # number blocks: E.164 minus its last 4 digits
    admission_block_5: str = "30/12h"  # ... minus its last 5 digits
    admission_block_6: str = "60/12h"  # ... minus its last 6 digits
    admission_email_domain: str = "80/10m;80/10h"  # one email domain's unconverted sends
    admission_share: float = Field(0.5, ge=0.0, le=10.0)  # room earned per approval
    admission_pressure: float = Field(0.2, ge=0.0, lt=1.0)  # the soft line a challenge guards
    trusted_days: int = Field(90, ge=0, le=3650)  # a number approved this recently is trusted

    # -- destination policy ------------------------------------------------
    allowed_countries: list[str] = Field(default_factory=lambda: ["GB"])
    default_region: str = "GB"
    allow_fixed_line_or_mobile: bool = True
    allow_voip: bool = False
    blocklist: list[str] = Field(default_factory=list)
    allowlist: list[str] = Field(default_factory=list)
    # Entries the run-time block and allow lists may hold (numberlists.py).
    number_list_max: int = Field(100_000, ge=1, le=10_000_000)

    # -- fraud rules ---------------------------------------------------------
    fraud_conversion_window: int = Field(3600, ge=60)
    fraud_conversion_min_sends: int = Field(30, ge=1)
    fraud_conversion_min_rate: float = Field(0.1, ge=0.0, le=1.0)
    fraud_conversion_suspend: int = Field(3600, ge=60)
    # Suspending a whole prefix or country on low conversion is an opt-in.
    fraud_suspend_on_low_conversion: bool = False
    # A send not checked within this many seconds counts as unconverted for the signal.
    fraud_observation_window: int = Field(60, ge=10, le=600)
    fraud_sequential_window: int = Field(600, ge=10)
    fraud_sequential_threshold: int = Field(5, ge=2)
    fraud_budget_global: str = "off"  # hard cost caps on all sends (opt-in)
    fraud_budget_country: str = "off"
    fraud_shadow: list[str] = Field(default_factory=list)

    # -- Twilio ------------------------------------------------------------
    twilio_account_sid: str = ""
    twilio_auth_token: SecretStr = SecretStr("")
    twilio_api_key: str = ""
    twilio_api_secret: SecretStr = SecretStr("")
    twilio_from: str = ""
    twilio_messaging_service_sid: str = ""
    twilio_whatsapp_from: str = ""
    twilio_whatsapp_content_sid: str = ""
    twilio_api_base: str = "https://api.twilio.com"
    twilio_test_credentials: bool = False
    twilio_connect_timeout: float = Field(3.0, gt=0, le=30)
    # Concurrent connections to Twilio; sends beyond it wait for a free connection.
    twilio_max_connections: int = Field(100, ge=1, le=10_000)
    twilio_timeout: float = Field(10.0, gt=0, le=60)
    undeliverable_ttl: int = Field(86400, ge=0)
    dev_allowed_numbers: list[str] = Field(default_factory=list)
    public_url: str = ""

    # -- email channel (docs/email.md) ----------------------------------------
    # "": the phone transport when it carries email (console, memory, file), else off.
    email_transport: Literal["", "console", "memory", "file", "smtp", "sendgrid"] = ""
    email_from: str = ""  # the sender address; the display name is the service name
    email_smtp_host: str = ""
    email_smtp_port: int = Field(587, ge=1, le=65535)
    email_smtp_tls: Literal["starttls", "implicit", "none"] = "starttls"
    email_smtp_user: str = ""
    email_smtp_password: SecretStr = SecretStr("")
    email_smtp_ca_file: Path | None = None  # a private CA the relay's certificate chains to
    email_smtp_timeout: float = Field(10.0, gt=0, le=60)
    email_sendgrid_api_key: SecretStr = SecretStr("")
    email_sendgrid_api_base: str = "https://api.sendgrid.com"
    email_sendgrid_timeout: float = Field(10.0, gt=0, le=60)
    email_refuse_disposable: bool = True  # the bundled list (disposable.py) and the extra
    email_disposable_domains: list[str] = Field(default_factory=list)
    email_allowed_domains: list[str] = Field(default_factory=list)  # empty: every domain
    email_require_mx: bool = False  # needs dnspython (pip install 'otpguard[email]')
    email_mx_nameservers: list[str] = Field(default_factory=list)  # default: the system's
    dev_allowed_emails: list[str] = Field(default_factory=list)  # addresses or @domains

    # Seconds an instance remembers an API key that authenticated (0: ask the store
    # on every request); a revoked key stops working within this time.
    api_key_cache_ttl: float = Field(5.0, ge=0.0, le=60.0)

    # -- HTTPS and proxies ---------------------------------------------------
    trusted_proxies: list[str] = Field(default_factory=list)
    tls_certfile: Path | None = None
    tls_keyfile: Path | None = None

    # -- monitoring and alerts -------------------------------------------------
    metrics_port: int | None = None  # serve /metrics on its own port instead
    alert_sinks: list[str] = Field(default_factory=lambda: ["log"])
    alert_webhook_url: str = ""
    alert_webhook_secret: SecretStr = SecretStr("")
    alert_slack_url: str = ""
    smtp_host: str = ""
    smtp_port: int = 587
    smtp_from: str = ""
    smtp_to: list[str] = Field(default_factory=list)
    smtp_user: str = ""
    smtp_password: SecretStr = SecretStr("")
    smtp_starttls: bool = True
    price_table: dict[str, float] = Field(default_factory=lambda: {"GB": 0.04, "US": 0.0083})
    default_price: float = 0.05
    price_currency: str = "USD"  # what price_table and default_price are written in (ISO 4217)
    alert_spike_factor: float = Field(4.0, gt=1)
    alert_spike_min: int = Field(50, ge=1)
    alert_number_threshold: int = Field(5, ge=1)
    alert_ip_threshold: int = Field(20, ge=1)
    alert_hot_window: int = Field(600, ge=60)
    alert_conversion_min_sends: int = Field(20, ge=1)
    alert_conversion_min_rate: float = Field(0.2, ge=0, le=1)
    alert_refused_destination_threshold: int = Field(5, ge=1)
    alert_delivery_failure_rate: float = Field(0.2, ge=0, le=1)
    alert_delivery_failure_min: int = Field(10, ge=1)
    alert_budget_ratio: float = Field(0.8, gt=0, le=1)
    alert_admission_threshold: int = Field(5, ge=1)
    alert_cooldown: int = Field(900, ge=0)
    alert_interval: int = Field(30, ge=1)
    alert_spike_window: int = Field(300, ge=60)  # the recent window of the spike rule
    alert_spike_baseline: int = Field(3600, ge=600)  # the trailing window it is compared to
    alert_conversion_window: int = Field(3600, ge=300)
    alert_provider_error_threshold: int = Field(5, ge=1)
    metrics_host: str = "127.0.0.1"  # the interface metrics_port listens on

    # -- audit ----------------------------------------------------------------
    audit_test_number: str = ""

    # -- challenge step (CAPTCHA; challenge.py, docs/abuse-defenses.md) ---------
    challenge_provider: Literal["off", "turnstile", "hcaptcha", "recaptcha"] = "off"
    challenge_site_key: str = Field("", max_length=200)  # public: the browser shows it
    challenge_secret: SecretStr = SecretStr("")
    challenge_verify_url: str = Field("", max_length=500)  # default: the provider's own
    challenge_mode: Literal["pressure", "always"] = "pressure"
    challenge_timeout: float = Field(3.0, gt=0, le=10)  # the whole siteverify call

    # -- webhooks to the integrating app (webhooks.py, docs/webhooks.md) ---------
    webhook_timeout: float = Field(5.0, gt=0, le=30)  # one POST, connect to last byte
    webhook_max_attempts: int = Field(8, ge=1, le=20)
    webhook_max_age: int = Field(86400, ge=60, le=7 * 86400)  # retried for at most this long
    webhook_retention_days: int = Field(7, ge=1, le=90)  # the delivery log's history
    webhook_max_pending: int = Field(10_000, ge=10)  # undelivered rows per endpoint
    webhook_refused_per_minute: int = Field(60, ge=0)  # ``refused`` hooks per endpoint/process
    webhook_allow_private: bool = False  # production: allow loopback/private targets

    # -- validators -------------------------------------------------------------

    @field_validator(
        "limit_phone",
        "limit_ip",
        "limit_network",
        "limit_account",
        "admission_global",
        "admission_country",
        "admission_api_key",
        "admission_block_4",
        "admission_block_5",
        "admission_block_6",
        "limit_ipv6_48",
        "limit_prefix",
        "limit_country",
        "limit_global",
        "limit_failed_checks",
        "limit_ip_failed_checks",
        "limit_email",
        "limit_email_domain",
        "admission_email_domain",
        "fraud_budget_global",
        "fraud_budget_country",
    )
    @classmethod
    def _windows(cls, v: str) -> str:
        windows_of(v)
        return v

    @field_validator("allowed_countries")
    @classmethod
    def _countries(cls, v: list[str]) -> list[str]:
        return [_region_code(c) for c in v]

    @field_validator("price_currency")
    @classmethod
    def _currency(cls, v: str) -> str:
        code = v.strip().upper()
        if not (len(code) == 3 and code.isascii() and code.isalpha()):
            raise ValueError(f"{v!r} is not an ISO 4217 currency code (like USD, GBP, EUR)")
        return code

    @field_validator("default_region")
    @classmethod
    def _region(cls, v: str) -> str:
        return _region_code(v)

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, v: list[str]) -> list[str]:
        for cidr in v:
            try:
                ipaddress.ip_network(cidr.strip(), strict=False)
            except ValueError:
                raise ValueError(f"{cidr!r} is not an IP network (like 10.0.0.0/8)") from None
        return [c.strip() for c in v]

    @field_validator("alert_sinks")
    @classmethod
    def _sinks(cls, v: list[str]) -> list[str]:
        allowed = {"log", "webhook", "slack", "email"}
        bad = [s for s in v if s not in allowed]
        if bad:
            raise ValueError(f"unknown alert sink(s) {bad}; choose from {sorted(allowed)}")
        return v

    @field_validator("fraud_shadow")
    @classmethod
    def _shadow(cls, v: list[str]) -> list[str]:
        allowed = {"low_conversion", "sequential_numbers", "budget_exhausted"}
        bad = [s for s in v if s not in allowed]
        if bad:
            raise ValueError(f"unknown fraud rule(s) {bad}; choose from {sorted(allowed)}")
        return v

    # -- derived ----------------------------------------------------------------

    @property
    def production(self) -> bool:
        return self.env == "production"

    @property
    def store_url(self) -> str:
        return self.store or f"sqlite:///{self.data_dir / 'otpguard.db'}"

    @property
    def outbox_file(self) -> Path:
        return self.outbox_path or self.data_dir / "outbox.jsonl"

    def keyring(self) -> Keyring:
        return Keyring.from_hex(
            [k.get_secret_value() for k in self.secret_keys], tag_form=self.tag_form
        )

    def redacted(self) -> dict[str, Any]:
        """The settings as a dict, secrets shown as '**********' (for dumps and audit)."""
        return self.model_dump(mode="json")

    def model_copy(
        self, *, update: Mapping[str, Any] | None = None, deep: bool = False
    ) -> Settings:
        """A copy with ``update`` applied; its sections are derived afresh."""
        copied = super().model_copy(update=update, deep=deep)
        for name in _SECTIONS:
            copied.__dict__.pop(name, None)
        return copied

    # -- sections (sections.py), each derived once --------------------------------

    core = cached_property(core_of)
    limits = cached_property(limits_of)
    fraud = cached_property(fraud_of)
    admission = cached_property(admission_of)
    twilio = cached_property(twilio_of)
    email = cached_property(email_of)
    alerts = cached_property(alerts_of)
    challenge = cached_property(challenge_of)
    webhooks = cached_property(webhooks_of)


_SECTIONS = tuple(n for n, v in vars(Settings).items() if isinstance(v, cached_property))
