"""Typed settings, validated at start-up.

Sources, later ones winning: defaults, a TOML file (``OTPGUARD_CONFIG``, else
``./otpguard.toml`` when it exists), then environment variables. Every field
``foo_bar`` is read from ``OTPGUARD_FOO_BAR``; Twilio credentials also from the
SDK's own names (``TWILIO_ACCOUNT_SID``, ``TWILIO_AUTH_TOKEN``, ``TWILIO_API_KEY``,
``TWILIO_API_SECRET``). Lists are comma-separated in the environment; maps are
``KEY=VALUE`` pairs separated by commas.

Errors name the variable and say what to set. Secrets are ``SecretStr`` so a
dump of the settings never shows them.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from .codes import Keyring, new_secret_hex
from .errors import ConfigError

log = logging.getLogger("otpguard.config")

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_WINDOW_RE = re.compile(r"^\s*([0-9]+)\s*/\s*([0-9]*)\s*([smhd])\s*$", re.ASCII)

# Fields read from the Twilio SDK's own variable names as well as OTPGUARD_*.
_ALIASES = {
    "twilio_account_sid": "TWILIO_ACCOUNT_SID",
    "twilio_auth_token": "TWILIO_AUTH_TOKEN",
    "twilio_api_key": "TWILIO_API_KEY",
    "twilio_api_secret": "TWILIO_API_SECRET",
}


def parse_windows(spec: str) -> list[tuple[int, int]]:
    """``"3/10m;10/24h"`` -> ``[(3, 600), (10, 86400)]``; ``""`` or ``"off"`` -> ``[]``."""
    spec = spec.strip()
    if spec.lower() in ("", "off", "none"):
        return []
    out = []
    for part in spec.split(";"):
        m = _WINDOW_RE.match(part)
        if not m:
            raise ValueError(
                f"{part.strip()!r} is not a limit; write LIMIT/WINDOW like 3/10m or 10/24h "
                "(units s, m, h, d), several separated by ';'"
            )
        limit, n, unit = int(m.group(1)), int(m.group(2) or 1), m.group(3)
        if n <= 0:
            raise ValueError(f"{part.strip()!r}: the window must be positive")
        out.append((limit, n * _UNITS[unit]))
    return out


@functools.lru_cache(maxsize=64)
def _parsed_windows(spec: str) -> tuple[tuple[int, int], ...]:
    """``parse_windows``, once per spec: the limits are read on every send."""
    return tuple(parse_windows(spec))


# Codes people write for a country that ISO 3166-1 spells otherwise.
_NOT_ISO = {"UK": "GB", "EL": "GR"}


def _region_code(raw: str) -> str:
    """An ISO 3166-1 alpha-2 code that phone numbers can have (``phonenumbers`` knows
    which); ``UK`` is refused with its ISO spelling, since GB numbers would never match."""
    import phonenumbers

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
        parse_windows(v)
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

    def windows(self, name: str) -> list[tuple[int, int]]:
        """Parsed windows of a ``limit_*`` or ``fraud_budget_*`` setting."""
        return list(_parsed_windows(str(getattr(self, name))))

    def keyring(self) -> Keyring:
        return Keyring.from_hex([k.get_secret_value() for k in self.secret_keys])

    def redacted(self) -> dict[str, Any]:
        """The settings as a dict, secrets shown as '**********' (for dumps and audit)."""
        return self.model_dump(mode="json")


#: OTPGUARD_* names that are not server settings: the config file's path, and what
#: client apps and examples read (the server's URL and their API key).
NOT_SERVER_SETTINGS = frozenset(
    {
        "OTPGUARD_CONFIG",
        "OTPGUARD_URL",
        "OTPGUARD_API_KEY",
        "OTPGUARD_KEY_ID",
        "OTPGUARD_VERIFY_SERVICE_SID",
    }
)


def _split_list(raw: str) -> list[str]:
    return [p.strip() for p in raw.split(",") if p.strip()]


def _split_map(raw: str) -> dict[str, str]:
    out = {}
    for pair in _split_list(raw):
        k, sep, v = pair.partition("=")
        if not sep:
            raise ConfigError(f"{pair!r} is not KEY=VALUE")
        out[k.strip()] = v.strip()
    return out


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, info in Settings.model_fields.items():
        raw = env.get(f"OTPGUARD_{name.upper()}")
        if raw is None and name in _ALIASES:
            raw = env.get(_ALIASES[name])
        if raw is None:
            continue
        ann = str(info.annotation)
        if ann.startswith("list["):
            values[name] = _split_list(raw)
        elif ann.startswith("dict["):
            values[name] = _split_map(raw)
        else:
            values[name] = raw
    unknown = [
        k
        for k in env
        if k.startswith("OTPGUARD_")
        and k[9:].lower() not in Settings.model_fields
        and k not in NOT_SERVER_SETTINGS
    ]
    if unknown:
        raise ConfigError(
            f"unknown setting(s) {', '.join(sorted(unknown))}; check the spelling against "
            "the README's configuration table"
        )
    return values


def _format_errors(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        field = str(err["loc"][0]) if err["loc"] else "?"
        var = f"OTPGUARD_{field.upper()}"
        if field in _ALIASES:
            var += f" (or {_ALIASES[field]})"
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"{var}: {msg}")
    return "invalid configuration:\n  " + "\n  ".join(lines)


def load_settings(
    env: Mapping[str, str] | None = None,
    config_file: Path | None = None,
    **overrides: Any,
) -> Settings:
    """Read the TOML file and the environment, apply ``overrides``, validate."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    path = config_file or (Path(env["OTPGUARD_CONFIG"]) if env.get("OTPGUARD_CONFIG") else None)
    if path is None and Path("otpguard.toml").is_file():
        path = Path("otpguard.toml")
    if path is not None:
        try:
            with path.open("rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist (OTPGUARD_CONFIG)") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
        data = data.get("otpguard", data)
        unknown = [k for k in data if k not in Settings.model_fields]
        if unknown:
            raise ConfigError(f"{path}: unknown setting(s) {', '.join(sorted(unknown))}")
        values.update(data)
    values.update(_from_env(env))
    values.update(overrides)
    try:
        return Settings(**values)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc)) from None


def ensure_dev_key(settings: Settings) -> Settings:
    """Development without OTPGUARD_SECRET_KEYS: create and keep a key in the data directory."""
    if settings.secret_keys or settings.production:
        return settings
    key_file = settings.data_dir / "secret.key"
    if key_file.exists():
        key = key_file.read_text().strip()
    else:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        key = new_secret_hex()
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(key + "\n")
        log.warning(
            "development mode: no OTPGUARD_SECRET_KEYS set; created a key in %s. "
            "Production needs OTPGUARD_SECRET_KEYS (run `otpguard init`).",
            key_file,
        )
    return settings.model_copy(update={"secret_keys": [SecretStr(key)]})
