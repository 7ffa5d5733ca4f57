"""``otpguard audit``: the founders' security checklist, run against the effective
configuration and, with ``--url``, against a running instance.

Each item prints as PASS, WARN or FAIL; WARN and FAIL carry a one-line fix. The
exit status is 1 when any item FAILs (so the command can gate a deployment),
0 otherwise; ``--json`` prints the same findings for machines.

Checklist item (founders' article)        check ids
---------------------------------------   -----------------------------------------
1 codes truly random                      codes.random, codes.length
2 expiry 3-5 minutes                      codes.expiry, codes.attempts
3 limit requests per number / IP          limits.phone, limits.ip, limits.checks,
                                          limits.global
4 codes not stored in plain text          storage.hmac, secrets.files
5 HTTPS everywhere                        https.enforced, https.proxies, https.hsts,
                                          remote.tls, remote.hsts, remote.plain_http
6 never return the code                   codes.never_returned, remote.code_never_returned
7 no premium-rate numbers                 policy.premium_rate, policy.countries
8 Twilio test mode in development         twilio.mode
9 monitor and alert                       monitoring.tracking, monitoring.alerts

The remote probe starts one verification to ``audit_test_number`` (default: the
Twilio magic number +15005550006, which only test credentials accept), reads
it back, checks one wrong code and cancels it, and inspects every response,
headers and body, for anything that could be the code. With ``--outbox`` (a
development file outbox) it compares against the code actually sent. Nothing
the audit prints contains a code or a secret.
"""

from __future__ import annotations

import argparse
import asyncio
import enum
import ipaddress
import json
import os
import re
import ssl
import stat
import sys
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from .codes import generate_code, is_trivial
from .config import Settings, load_settings
from .errors import ConfigError

TWILIO_MAGIC_VALID = "+15005550006"
CHECKLIST_TTL = 300  # "expire in 5 minutes or less"
CHECKLIST_SENDS = 3  # "3 times in 10 minutes per user"
CHECKLIST_WINDOW = 600
HSTS_MIN_AGE = 31_536_000  # one year: what browsers' preload lists ask for


class Status(enum.StrEnum):
    PASS = "PASS"  # noqa: S105 - a verdict, not a password
    WARN = "WARN"
    FAIL = "FAIL"


@dataclass(frozen=True)
class Finding:
    id: str
    status: Status
    detail: str
    fix: str = ""


def _ok(id_: str, detail: str) -> Finding:
    return Finding(id_, Status.PASS, detail)


def _warn(id_: str, detail: str, fix: str) -> Finding:
    return Finding(id_, Status.WARN, detail, fix)


def _fail(id_: str, detail: str, fix: str) -> Finding:
    return Finding(id_, Status.FAIL, detail, fix)


def _judge(status: Status, id_: str, detail: str, fix: str) -> Finding:
    """A finding whose level depends on the environment; a PASS carries no fix."""
    return Finding(id_, status, detail, "" if status is Status.PASS else fix)


# -- configuration checks ---------------------------------------------------------------


def max_in_window(windows: Iterable[tuple[int, int]], span: int) -> int | None:
    """The most events the sliding windows let through in any ``span`` seconds (None: no cap)."""
    caps = [limit * -(-span // window) for limit, window in windows]  # ceil(span / window)
    return min(caps) if caps else None


def check_codes(settings: Settings, samples: int = 2000) -> Iterator[Finding]:
    n = settings.code_length
    codes = [generate_code(n) for _ in range(samples)]
    digits = "".join(codes)
    freq = [digits.count(str(d)) / len(digits) for d in range(10)]
    bad = [c for c in codes if len(c) != n or not c.isascii() or not c.isdigit() or is_trivial(c)]
    distinct = len(set(codes)) / samples
    if bad or min(freq) < 0.07 or max(freq) > 0.13 or distinct < 0.98:
        yield _fail(
            "codes.random",
            f"{samples} sample codes look non-random (digit frequencies "
            f"{min(freq):.3f}-{max(freq):.3f}, {distinct:.1%} distinct, {len(bad)} malformed)",
            "reinstall otpguard: codes must come from the `secrets` module",
        )
    else:
        yield _ok(
            "codes.random",
            f"from `secrets`, uniform digits ({samples} samples: frequencies "
            f"{min(freq):.3f}-{max(freq):.3f}), trivial codes like 123456 redrawn",
        )
    yield _ok("codes.length", f"{n} digits (at least 6)")
    if settings.code_ttl <= CHECKLIST_TTL:
        yield _ok("codes.expiry", f"codes expire after {settings.code_ttl} s (at most 5 minutes)")
    else:
        yield _warn(
            "codes.expiry",
            f"codes live {settings.code_ttl} s, longer than the checklist's 5 minutes",
            "set OTPGUARD_CODE_TTL=300 (or less)",
        )
    if settings.max_attempts <= 5:
        yield _ok(
            "codes.attempts", f"a verification locks after {settings.max_attempts} wrong codes"
        )
    else:
        yield _warn(
            "codes.attempts",
            f"{settings.max_attempts} wrong codes allowed per verification",
            "set OTPGUARD_MAX_ATTEMPTS=5 (or less)",
        )


def check_limits(settings: Settings) -> Iterator[Finding]:
    per_number = max_in_window(settings.windows("limit_phone"), CHECKLIST_WINDOW)
    if per_number is None:
        yield _fail(
            "limits.phone",
            "no send limit per number: one number can be sent codes without end",
            "set OTPGUARD_LIMIT_PHONE=3/10m;10/24h",
        )
    elif per_number > CHECKLIST_SENDS:
        yield _warn(
            "limits.phone",
            f"up to {per_number} sends per number in 10 minutes ({settings.limit_phone}); "
            "the checklist says 3",
            "set OTPGUARD_LIMIT_PHONE=3/10m;10/24h",
        )
    else:
        cooldown = f", resends {settings.resend_cooldown} s apart and doubling"
        yield _ok(
            "limits.phone",
            f"at most {per_number} sends per number in 10 minutes ({settings.limit_phone})"
            + (cooldown if settings.resend_cooldown else ""),
        )
    per_ip = max_in_window(settings.windows("limit_ip"), CHECKLIST_WINDOW)
    per_net = max_in_window(settings.windows("limit_network"), CHECKLIST_WINDOW)
    if per_ip is None:
        yield _fail(
            "limits.ip",
            "no send limit per client IP",
            "set OTPGUARD_LIMIT_IP=10/10m;50/24h (and pass client_ip in API calls)",
        )
    elif per_net is None:
        yield _warn(
            "limits.ip",
            f"per IP {settings.limit_ip}, but no limit per network (/24, /56)",
            "set OTPGUARD_LIMIT_NETWORK=30/10m",
        )
    elif max_in_window(settings.windows("limit_ipv6_48"), CHECKLIST_WINDOW) is None:
        yield _warn(
            "limits.ip",
            f"per IP (IPv4 address, IPv6 /64) {settings.limit_ip}, per network "
            f"(IPv4 /24, IPv6 /56) {settings.limit_network}, but no limit per IPv6 /48",
            "set OTPGUARD_LIMIT_IPV6_48=60/10m;300/24h",
        )
    else:
        yield _ok(
            "limits.ip",
            f"per IP (IPv4 address, IPv6 /64) {settings.limit_ip}, per network "
            f"(IPv4 /24, IPv6 /56) {settings.limit_network}, per IPv6 /48 "
            f"{settings.limit_ipv6_48}; client_ip as your backend passes it, trusted "
            "(docs/hardening.md)",
        )
    if settings.windows("limit_failed_checks") and settings.windows("limit_ip_failed_checks"):
        yield _ok(
            "limits.checks",
            f"wrong codes limited per number ({settings.limit_failed_checks}) "
            f"and per IP ({settings.limit_ip_failed_checks})",
        )
    else:
        yield _warn(
            "limits.checks",
            "wrong codes are not limited across verifications (per number and per IP)",
            "set OTPGUARD_LIMIT_FAILED_CHECKS=10/1h and OTPGUARD_LIMIT_IP_FAILED_CHECKS=30/1h",
        )
    if settings.windows("admission_global") or settings.windows("limit_global"):
        yield _ok(
            "limits.global",
            "a global ceiling on unconverted sends "
            f"(OTPGUARD_ADMISSION_GLOBAL={settings.admission_global}; "
            f"hard cap OTPGUARD_LIMIT_GLOBAL={settings.limit_global})",
        )
    else:
        yield _warn(
            "limits.global",
            "no global ceiling on sends: a distributed attack is bounded only by your bill",
            "set OTPGUARD_ADMISSION_GLOBAL=100/10m;100/8h (or a hard OTPGUARD_LIMIT_GLOBAL)",
        )


def _key_strength(raw: bytes) -> str | None:
    """Why a key is weak, or None. Random keys have many distinct bytes."""
    if len(raw) < 32:
        return f"{len(raw)} bytes (at least 32 needed)"
    if len(set(raw)) < len(raw) // 2:
        return f"only {len(set(raw))} distinct byte values in {len(raw)}: not random"
    return None


def _hex_keys(settings: Settings) -> tuple[list[str], str]:
    if settings.secret_keys:
        return [k.get_secret_value() for k in settings.secret_keys], "OTPGUARD_SECRET_KEYS"
    key_file = settings.data_dir / "secret.key"
    if not settings.production and key_file.is_file():
        return [key_file.read_text().strip()], str(key_file)
    return [], ""


def check_storage(settings: Settings) -> Iterator[Finding]:
    keys, source = _hex_keys(settings)
    if not keys:
        if settings.production:
            yield _fail(
                "storage.hmac",
                "no HMAC key: production refuses to start",
                "run `otpguard init --production` and set OTPGUARD_SECRET_KEYS",
            )
        else:
            yield _warn(
                "storage.hmac",
                f"no key yet: development creates one in {settings.data_dir / 'secret.key'} "
                "on first start",
                "set OTPGUARD_SECRET_KEYS (run `otpguard init`) to keep codes valid "
                "across data directories",
            )
        return
    problems = []
    for i, h in enumerate(keys, 1):
        try:
            raw = bytes.fromhex(h.strip())
        except ValueError:
            problems.append(f"key #{i} is not hex")
            continue
        why = _key_strength(raw)
        if why:
            problems.append(f"key #{i}: {why}")
    if problems:
        yield _fail(
            "storage.hmac",
            f"weak HMAC key ({source}): " + "; ".join(problems),
            "generate a key with `otpguard init` and put it first in OTPGUARD_SECRET_KEYS",
        )
        return
    ring = settings.keyring() if settings.secret_keys else None
    ids = f", signing key id {ring.signing_key_id}" if ring else ""
    yield _ok(
        "storage.hmac",
        f"only HMAC-SHA256 tags of codes are stored, bound to verification, number and "
        f"channel; {len(keys)} key(s) of 32+ random bytes from {source}{ids}",
    )


def _group_or_world(path: Path) -> bool:
    return bool(path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO))


def check_secret_files(settings: Settings, config_path: Path | None) -> Iterator[Finding]:
    files = [p for p in (config_path, settings.data_dir / "secret.key") if p and p.is_file()]
    loose = [p for p in files if _group_or_world(p)]
    if loose:
        names = ", ".join(f"{p} ({oct(p.stat().st_mode & 0o777)})" for p in loose)
        yield _judge(
            Status.FAIL if settings.production else Status.WARN,
            "secrets.files",
            f"readable by other users: {names}",
            "chmod 600 " + " ".join(str(p) for p in loose),
        )
    elif files:
        yield _ok(
            "secrets.files", "files holding keys are mode 0600: " + ", ".join(map(str, files))
        )
    else:
        yield _ok("secrets.files", "no config or key file on disk to check")


def check_https(settings: Settings) -> Iterator[Finding]:
    tls = bool(settings.tls_certfile and settings.tls_keyfile)
    if tls:
        try:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(str(settings.tls_certfile), str(settings.tls_keyfile))
        except (OSError, ssl.SSLError) as exc:
            yield _fail(
                "https.enforced",
                f"the TLS certificate or key cannot be loaded ({type(exc).__name__})",
                "check OTPGUARD_TLS_CERTFILE/OTPGUARD_TLS_KEYFILE: PEM files, key matching cert",
            )
            tls = False
    if tls or settings.trusted_proxies:
        how = "TLS served by otpguard" if tls else "TLS terminated by trusted proxies"
        scope = "plain-HTTP API requests get 403 https_required"
        if settings.production:
            yield _ok("https.enforced", f"{how}; {scope}")
        else:
            yield _warn(
                "https.enforced",
                f"{how}, but development allows plain HTTP",
                "set OTPGUARD_ENV=production for real traffic",
            )
    elif settings.production:
        yield _fail(
            "https.enforced",
            "neither TLS nor a TLS-terminating proxy: production refuses to start",
            "pass --certfile/--keyfile or set OTPGUARD_TRUSTED_PROXIES to your proxies' CIDRs",
        )
    else:
        yield _warn(
            "https.enforced",
            "development: plain HTTP is accepted",
            "in production, serve --certfile/--keyfile or set OTPGUARD_TRUSTED_PROXIES",
        )
    wide = []
    for cidr in settings.trusted_proxies:
        net = ipaddress.ip_network(cidr, strict=False)
        if net.prefixlen < (8 if net.version == 4 else 32):
            wide.append(cidr)
    if wide:
        yield _fail(
            "https.proxies",
            f"trusted proxies too broad ({', '.join(wide)}): anyone there can forge "
            "X-Forwarded-For/-Proto",
            "list only your load balancers' addresses in OTPGUARD_TRUSTED_PROXIES",
        )
    elif settings.trusted_proxies:
        yield _ok(
            "https.proxies",
            "X-Forwarded-* honoured only from " + ", ".join(settings.trusted_proxies),
        )
    else:
        yield _ok("https.proxies", "no proxies trusted: X-Forwarded-* headers are ignored")
    from .web import app as web_app

    if "otpguard.web.https:install" in web_app.EXTENSIONS:
        yield _ok(
            "https.hsts",
            "Strict-Transport-Security: max-age=63072000; includeSubDomains on HTTPS responses",
        )
    else:
        yield _fail(
            "https.hsts",
            "the HTTPS middleware is not installed",
            "reinstall otpguard (otpguard.web.https:install must be in EXTENSIONS)",
        )


_CODE_KEYS = re.compile(r"(^|_)(code|otp|pin|passcode)$", re.IGNORECASE)


def check_never_returned() -> Iterator[Finding]:
    from .web import api

    leaky = [
        f"{model.__name__}.{name}"
        for model in (api.VerificationOut, api.CheckOut)
        for name in model.model_fields
        if _CODE_KEYS.search(name)
    ]
    if leaky:
        yield _fail(
            "codes.never_returned",
            "API responses have code-like fields: " + ", ".join(leaky),
            "remove them: only the phone may ever see the code",
        )
    else:
        yield _ok(
            "codes.never_returned",
            "no response model, log line or event carries a code; only HMAC tags are kept",
        )


def check_policy(settings: Settings) -> Iterator[Finding]:
    import phonenumbers
    from phonenumbers import PhoneNumberType

    from .models import Channel
    from .phone import DestinationPolicy, parse

    try:
        policy = DestinationPolicy.from_settings(settings)
    except ConfigError as exc:
        yield _fail("policy.premium_rate", f"the destination policy is invalid: {exc.message}", "")
        return
    let_through = []
    probed = 0
    for region in sorted(policy.allowed_countries) or ["GB"]:
        for kind in (PhoneNumberType.PREMIUM_RATE, PhoneNumberType.SHARED_COST):
            example = phonenumbers.example_number_for_type(region, kind)
            if example is None:
                continue
            number = parse(phonenumbers.format_number(example, 0), region)
            probed += 1
            for ch in Channel:
                if policy.decide(number, ch).allowed:
                    let_through.append(f"{number.type} {region} via {ch.value}")
    if let_through:
        yield _fail(
            "policy.premium_rate",
            "premium-rate/shared-cost numbers would be sent codes: " + ", ".join(let_through),
            "remove them from OTPGUARD_ALLOWLIST; never allow premium_rate",
        )
    else:
        extra = "; VoIP allowed" if settings.allow_voip else ""
        yield _ok(
            "policy.premium_rate",
            f"premium-rate and shared-cost numbers refused on every channel "
            f"({probed} example number(s) probed){extra}",
        )
    countries = sorted(policy.allowed_countries)
    if not countries:
        yield _warn(
            "policy.countries",
            "no country allowed: every send is refused",
            "set OTPGUARD_ALLOWED_COUNTRIES to the countries your customers live in",
        )
    elif len(countries) > 20:
        yield _warn(
            "policy.countries",
            f"{len(countries)} countries allowed: SMS pumping thrives on wide lists",
            "allow only the countries your customers live in (OTPGUARD_ALLOWED_COUNTRIES)",
        )
    else:
        yield _ok("policy.countries", "codes go only to " + ", ".join(countries))


def check_twilio(settings: Settings) -> Iterator[Finding]:
    t = settings.transport
    if not settings.production:
        if t in ("console", "memory", "file"):
            yield _ok("twilio.mode", f"development on the {t} transport: no real SMS")
        elif settings.twilio_test_credentials:
            yield _ok("twilio.mode", "development with Twilio test credentials")
        else:
            yield _warn(
                "twilio.mode",
                "development with live Twilio credentials (only magic and "
                "OTPGUARD_DEV_ALLOWED_NUMBERS numbers are reached)",
                "use OTPGUARD_TRANSPORT=console or Twilio test credentials "
                "(OTPGUARD_TWILIO_TEST_CREDENTIALS=true)",
            )
        return
    if t != "twilio":
        yield _fail(
            "twilio.mode",
            f"production on the {t} transport",
            "set OTPGUARD_TRANSPORT=twilio with live credentials",
        )
        return
    if settings.twilio_test_credentials:
        yield _fail(
            "twilio.mode",
            "production with Twilio test credentials: no message is delivered",
            "unset OTPGUARD_TWILIO_TEST_CREDENTIALS and use live credentials",
        )
        return
    try:
        from .models import Channel
        from .transports.twilio import TwilioTransport

        problems = TwilioTransport.from_settings(settings).problems([Channel.SMS])
    except ConfigError as exc:
        problems = [exc.message]
    if problems:
        yield _fail("twilio.mode", "Twilio not ready: " + "; ".join(problems), problems[0])
    else:
        yield _ok("twilio.mode", "production on Twilio with live credentials and a sender")


def check_monitoring(settings: Settings) -> Iterator[Finding]:
    retention = f"every decision stored as an event ({settings.event_retention_days} days)"
    if settings.log_events:
        yield _ok("monitoring.tracking", retention + " and logged as JSON")
    else:
        yield _warn(
            "monitoring.tracking",
            retention + ", not logged",
            "set OTPGUARD_LOG_EVENTS=true to ship events with your logs",
        )
    try:
        from .sinks import sinks_from_settings

        sinks_from_settings(settings)
    except ConfigError as exc:
        yield _fail(
            "monitoring.alerts", f"an alert sink is misconfigured: {exc.message}", exc.message
        )
        return
    except ModuleNotFoundError:
        pass
    sinks = list(dict.fromkeys(settings.alert_sinks))
    if not sinks:
        yield _judge(
            Status.FAIL if settings.production else Status.WARN,
            "monitoring.alerts",
            "no alert sink: spikes and fraud go unnoticed",
            "set OTPGUARD_ALERT_SINKS=log,webhook (or slack, email)",
        )
    elif sinks == ["log"]:
        yield _judge(
            Status.WARN if settings.production else Status.PASS,
            "monitoring.alerts",
            "alerts go to the log only",
            "add a sink someone reads: OTPGUARD_ALERT_SINKS=log,slack (or webhook, email)",
        )
    else:
        yield _ok("monitoring.alerts", "alerts go to " + ", ".join(sinks))


def check_startup(settings: Settings) -> Iterator[Finding]:
    from .startup import startup_problems

    problems = startup_problems(settings)
    if problems:
        yield _fail(
            "config.startup",
            f"`otpguard serve` would refuse to start ({len(problems)} problem(s)): "
            + "; ".join(problems),
            "fix every problem listed",
        )
    else:
        mode = "production start-up checks pass" if settings.production else "development"
        yield _ok("config.startup", mode)


def audit_settings(settings: Settings, config_path: Path | None = None) -> list[Finding]:
    """Every configuration check, in checklist order."""
    return [
        *check_startup(settings),
        *check_codes(settings),
        *check_limits(settings),
        *check_storage(settings),
        *check_secret_files(settings, config_path),
        *check_https(settings),
        *check_never_returned(),
        *check_policy(settings),
        *check_twilio(settings),
        *check_monitoring(settings),
    ]


# -- remote checks ------------------------------------------------------------------------

_ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)?$")
_ID = re.compile(r"^VE[0-9a-f]{32}$")
_DIGITS = re.compile(r"(?<!\d)\d{6,10}(?!\d)")
_SKIP_HEADERS = {"date", "content-length", "strict-transport-security"}


def _leaks(value: Any, key: str = "") -> list[str]:
    """Where a JSON document holds something that could be a code."""
    if isinstance(value, dict):
        return [w for k, v in value.items() for w in _leaks(v, f"{key}.{k}" if key else k)]
    if isinstance(value, list):
        return [w for i, v in enumerate(value) for w in _leaks(v, f"{key}[{i}]")]
    leaf = key.rsplit(".", 1)[-1]
    if isinstance(value, bool) or value is None:
        return []
    text = str(value)
    if isinstance(value, str) and (_ISO.match(text) or (leaf == "id" and _ID.match(text))):
        return []
    if _DIGITS.search(text) or (_CODE_KEYS.search(leaf) and any(c.isdigit() for c in text)):
        return [key or "body"]
    return []


def response_leaks(r: httpx.Response, code: str | None = None) -> list[str]:
    """Fields or headers of ``r`` that hold (or could hold) a code."""
    where: list[str] = []
    raw = r.content.decode("utf-8", "replace")
    for name, value in r.headers.items():
        suspicious = name.lower() not in _SKIP_HEADERS and _DIGITS.search(value)
        if (code and code in value) or suspicious:
            where.append(f"header {name}")
    if code and code in raw:
        where.append("body")
    try:
        where += _leaks(r.json())
    except ValueError:
        if _DIGITS.search(raw):
            where.append("body")
    return sorted(set(where))


@dataclass
class Remote:
    url: str
    api_key: str | None
    http_url: str | None = None
    verify: ssl.SSLContext | bool = True
    outbox: Path | None = None
    test_number: str = TWILIO_MAGIC_VALID
    timeout: float = 10.0


def _plain_url(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(("http", netloc, "", "", ""))


async def _tls_checks(client: httpx.AsyncClient, remote: Remote) -> list[Finding]:
    out: list[Finding] = []
    if not remote.url.startswith("https://"):
        return [
            _fail("remote.tls", f"{remote.url} is plain HTTP", "audit the https:// address"),
        ]
    try:
        r = await client.get(remote.url + "/healthz")
    except httpx.HTTPError as exc:
        return [
            _fail(
                "remote.tls",
                f"no verified TLS connection to {remote.url} ({type(exc).__name__})",
                "check the certificate (pass --cacert for a private CA) and the address",
            )
        ]
    out.append(_ok("remote.tls", f"TLS with a verified certificate at {remote.url}"))
    hsts = r.headers.get("strict-transport-security", "")
    m = re.search(r"max-age=([0-9]+)", hsts)
    if not m:
        out.append(
            _fail(
                "remote.hsts",
                "no Strict-Transport-Security header on an HTTPS response",
                "serve through otpguard's HTTPS middleware, or add HSTS at your proxy",
            )
        )
    elif int(m.group(1)) < HSTS_MIN_AGE or "includesubdomains" not in hsts.lower():
        out.append(
            _warn(
                "remote.hsts",
                f"weak HSTS: {hsts}",
                "send max-age=63072000; includeSubDomains (a proxy may be overriding it)",
            )
        )
    else:
        out.append(_ok("remote.hsts", f"Strict-Transport-Security: {hsts}"))
    want = {"x-content-type-options": "nosniff", "cache-control": "no-store"}
    missing = [k for k, v in want.items() if v not in r.headers.get(k, "")]
    if missing:
        out.append(
            _warn(
                "remote.headers",
                "missing security headers: " + ", ".join(missing),
                "do not let your proxy strip otpguard's response headers",
            )
        )
    else:
        out.append(_ok("remote.headers", "nosniff, no-store and the other security headers set"))
    return out


async def _plain_http_check(client: httpx.AsyncClient, remote: Remote) -> Finding:
    base = remote.http_url or _plain_url(remote.url)
    url = base + "/v1/verifications"

    async def probe(headers: dict[str, str]) -> httpx.Response | None:
        try:
            return await client.post(url, json={}, headers=headers)
        except httpx.HTTPError:
            return None

    spoofed = await probe({"X-Forwarded-Proto": "https"})
    if spoofed is None:
        return _ok("remote.plain_http", f"nothing answers plain HTTP at {base}")
    if spoofed.is_redirect:
        return _warn(
            "remote.plain_http",
            f"plain-HTTP API requests at {base} are redirected, not refused: clients "
            "that send keys in clear never notice",
            "refuse plain HTTP with 403 at your proxy, or let otpguard answer it",
        )
    code = _error_code(spoofed)
    if spoofed.status_code == 403 and code == "https_required":
        return _ok(
            "remote.plain_http",
            f"plain HTTP at {base} refused with 403 https_required, even with a forged "
            "X-Forwarded-Proto",
        )
    plain = await probe({})
    if plain is not None and plain.status_code == 403 and _error_code(plain) == "https_required":
        return _warn(
            "remote.plain_http",
            "plain HTTP is refused, but this host's X-Forwarded-Proto is trusted",
            "run the audit from outside OTPGUARD_TRUSTED_PROXIES",
        )
    return _fail(
        "remote.plain_http",
        f"the API answers plain HTTP at {base} (HTTP {spoofed.status_code})",
        "set OTPGUARD_ENV=production, or stop forwarding plain HTTP to otpguard",
    )


def _error_code(r: httpx.Response) -> str | None:
    try:
        body = r.json()
    except ValueError:
        return None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        code = body["error"].get("code")
        return code if isinstance(code, str) else None
    return None


def _sent_code(outbox: Path | None, verification_id: str) -> str | None:
    if outbox is None:
        return None
    from .transports.file import read_outbox

    for msg in reversed(read_outbox(outbox)):
        if msg.get("verification_id") == verification_id:
            return msg.get("code")
    return None


async def _auth_check(client: httpx.AsyncClient, remote: Remote) -> Finding:
    r = await client.get(remote.url + "/v1/verifications/VE" + "0" * 32)
    if r.status_code == 401:
        return _ok("remote.auth", "the API refuses requests without an API key (401)")
    return _fail(
        "remote.auth",
        f"a request without an API key got HTTP {r.status_code}",
        "put otpguard's /v1 API behind its API keys; do not strip Authorization at the proxy",
    )


async def _code_probe(client: httpx.AsyncClient, remote: Remote) -> Finding:
    id_ = "remote.code_never_returned"
    if not remote.api_key:
        return _warn(
            id_,
            "skipped: no API key",
            "pass --api-key-file (or set OTPGUARD_API_KEY) to probe the API",
        )
    auth = {"Authorization": f"Bearer {remote.api_key}"}
    r = await client.post(
        remote.url + "/v1/verifications",
        json={"to": remote.test_number, "channel": "sms"},
        headers=auth,
    )
    if r.status_code >= 500:
        return _fail(id_, f"starting a verification failed with HTTP {r.status_code}", "see logs")
    leaks = response_leaks(r)
    if r.status_code != 201:
        detail = (
            f"the probe to {remote.test_number} was refused ({_error_code(r) or r.status_code})"
        )
        if leaks:
            return _fail(id_, detail + "; the refusal held digits at " + ", ".join(leaks), "")
        return _warn(
            id_,
            detail + ", so no response holding a live code could be inspected",
            "set OTPGUARD_AUDIT_TEST_NUMBER to a number your policy allows "
            "(a Twilio magic number with test credentials)",
        )
    vid = str(r.json().get("id", ""))
    responses = [("start", r)]
    if re.fullmatch(r"[A-Za-z0-9_-]{1,64}", vid):
        base = f"{remote.url}/v1/verifications"
        responses.append(("get", await client.get(f"{base}/{vid}", headers=auth)))
        responses.append(
            (
                "check",
                await client.post(
                    f"{base}/check", json={"id": vid, "code": "000000"}, headers=auth
                ),
            )
        )
        responses.append(("cancel", await client.post(f"{base}/{vid}/cancel", headers=auth)))
    code = _sent_code(remote.outbox, vid)
    found = [f"{name}: {w}" for name, resp in responses for w in response_leaks(resp, code)]
    how = "compared with the code sent" if code else "scanned for code-like digits"
    if found:
        return _fail(
            id_,
            "a response may carry the code: " + ", ".join(found),
            "remove the code from every response; only the phone may see it",
        )
    return _ok(
        id_,
        f"start, get, check and cancel responses (headers and bodies) {how}: no code",
    )


async def audit_remote(remote: Remote) -> list[Finding]:
    remote.url = remote.url.rstrip("/")
    async with httpx.AsyncClient(
        verify=remote.verify, timeout=remote.timeout, follow_redirects=False
    ) as client:
        out = await _tls_checks(client, remote)
        out.append(await _plain_http_check(client, remote))
        if out[0].status is Status.FAIL:
            return out
        out.append(await _auth_check(client, remote))
        out.append(await _code_probe(client, remote))
    return out


# -- output and the command ----------------------------------------------------------------


def summary(findings: list[Finding]) -> dict[str, int]:
    return {s.value.lower(): sum(f.status is s for f in findings) for s in Status}


def render_text(findings: list[Finding], title: str) -> str:
    width = max((len(f.id) for f in findings), default=10)
    lines = [title, ""]
    for f in findings:
        lines.append(f"{f.status.value}  {f.id:<{width}}  {f.detail}")
        if f.fix:
            lines.append(f"{'':6}{'':<{width}}  fix: {f.fix}")
    s = summary(findings)
    lines += ["", f"{s['pass']} passed, {s['warn']} warnings, {s['fail']} failed"]
    return "\n".join(lines)


def render_json(findings: list[Finding], title: str) -> str:
    return json.dumps(
        {
            "title": title,
            "ok": not any(f.status is Status.FAIL for f in findings),
            "summary": summary(findings),
            "checks": [asdict(f) | {"status": f.status.value} for f in findings],
        },
        indent=2,
    )


def _config_path(args: argparse.Namespace) -> Path | None:
    if getattr(args, "config", None):
        return Path(args.config)
    if os.environ.get("OTPGUARD_CONFIG"):
        return Path(os.environ["OTPGUARD_CONFIG"])
    default = Path("otpguard.toml")
    return default if default.is_file() else None


def _read_key(args: argparse.Namespace) -> str | None:
    if args.api_key_file:
        text = sys.stdin.read() if args.api_key_file == "-" else Path(args.api_key_file).read_text()
        return text.strip() or None
    key: str | None = args.api_key or os.environ.get("OTPGUARD_API_KEY") or None
    return key


def cmd_audit(args: argparse.Namespace) -> int:
    config_path = _config_path(args)
    from .cli import with_tls_flags

    settings = with_tls_flags(load_settings(config_file=config_path), args)
    findings = audit_settings(settings, config_path)
    title = f"otpguard audit: {settings.env} configuration" + (
        f" ({config_path})" if config_path else ""
    )
    if args.url:
        verify: ssl.SSLContext | bool = True
        if args.cacert:
            verify = ssl.create_default_context(cafile=args.cacert)
        remote = Remote(
            url=args.url,
            api_key=_read_key(args),
            http_url=args.http_url,
            verify=verify,
            outbox=Path(args.outbox) if args.outbox else None,
            test_number=settings.audit_test_number or TWILIO_MAGIC_VALID,
        )
        findings += asyncio.run(audit_remote(remote))
        title += f" and {args.url}"
    print(render_json(findings, title) if args.json else render_text(findings, title))
    return 1 if any(f.status is Status.FAIL for f in findings) else 0


def add_parser(subparsers: Any) -> None:
    """Add ``otpguard audit`` to the CLI (called by ``otpguard.cli.build_parser``)."""
    a = subparsers.add_parser(
        "audit",
        help="run the security checklist on the configuration (and a running instance)",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    a.add_argument("--json", action="store_true", help="machine-readable output")
    a.add_argument("--url", help="also probe a running instance, e.g. https://otp.example.com")
    a.add_argument(
        "--api-key-file",
        help="file holding an API key for the probe ('-' reads stdin)",
    )
    a.add_argument("--api-key", help="the API key itself (visible in `ps`: prefer --api-key-file)")
    a.add_argument("--cacert", help="CA bundle to verify the instance's certificate")
    a.add_argument(
        "--http-url",
        help="plain-HTTP address to probe (default: the --url host and port over http://)",
    )
    a.add_argument("--outbox", help="development file outbox: compare against the code sent")
    a.add_argument("--certfile", help="as `otpguard serve --certfile`")
    a.add_argument("--keyfile", help="as `otpguard serve --keyfile`")
    a.set_defaults(func=cmd_audit)
