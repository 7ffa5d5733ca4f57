"""Configuration checks: codes, limits, storage and secrets, HTTPS."""

from __future__ import annotations

import ipaddress
import ssl
import stat
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from ..codes import generate_code, is_trivial
from ..config import Settings
from .findings import AuditItem, Verdict, fail, judge, ok, warn

CHECKLIST_TTL = 300  # "expire in 5 minutes or less"
CHECKLIST_SENDS = 3  # "3 times in 10 minutes per user"
CHECKLIST_WINDOW = 600
DAY = 86_400
# The chance, per number and day, that an attacker guesses a code within the limits:
# above 1 in 10,000 warns, above 1 in 1,000 fails.
GUESS_ODDS_WARN = 1e-4
GUESS_ODDS_FAIL = 1e-3


def max_in_window(windows: Iterable[tuple[int, int]], span: int) -> int | None:
    """The most events the sliding windows let through in any ``span`` seconds (None: no cap)."""
    caps = [limit * -(-span // window) for limit, window in windows]  # ceil(span / window)
    return min(caps) if caps else None


def check_codes(
    settings: Settings, samples: int = 2000, generate: Callable[[int], str] = generate_code
) -> Iterator[AuditItem]:
    """codes.random on ``samples`` codes from ``generate``; expiry; attempts."""
    n = settings.code_length
    codes = [generate(n) for _ in range(samples)]
    digits = "".join(codes)
    freq = [digits.count(str(d)) / len(digits) for d in range(10)]
    bad = [c for c in codes if len(c) != n or not c.isascii() or not c.isdigit() or is_trivial(c)]
    distinct = len(set(codes)) / samples
    if bad or min(freq) < 0.07 or max(freq) > 0.13 or distinct < 0.98:
        yield fail(
            "codes.random",
            f"{samples} sample codes look non-random (digit frequencies "
            f"{min(freq):.3f}-{max(freq):.3f}, {distinct:.1%} distinct, {len(bad)} malformed)",
            "reinstall otpguard: codes must come from the `secrets` module",
        )
    else:
        yield ok(
            "codes.random",
            f"from `secrets`, uniform digits ({samples} samples: frequencies "
            f"{min(freq):.3f}-{max(freq):.3f}), trivial codes like 123456 redrawn",
        )
    yield check_guess_odds(settings)
    if settings.code_ttl <= CHECKLIST_TTL:
        yield ok("codes.expiry", f"codes expire after {settings.code_ttl} s (at most 5 minutes)")
    else:
        yield warn(
            "codes.expiry",
            f"codes live {settings.code_ttl} s, longer than the checklist's 5 minutes",
            "set OTPGUARD_CODE_TTL=300 (or less)",
        )
    if settings.max_attempts <= 5:
        yield ok(
            "codes.attempts", f"a verification locks after {settings.max_attempts} wrong codes"
        )
    else:
        yield warn(
            "codes.attempts",
            f"{settings.max_attempts} wrong codes allowed per verification",
            "set OTPGUARD_MAX_ATTEMPTS=5 (or less)",
        )


def guesses_per_day(settings: Settings) -> int | None:
    """The most codes one number's attacker can try in a day (None: no cap): sends
    times attempts per verification, or the cap on wrong codes per number if lower."""
    sends = max_in_window(settings.limits.phone, DAY)
    caps = [
        c
        for c in (
            None if sends is None else sends * settings.max_attempts,
            max_in_window(settings.limits.failed_checks, DAY),
        )
        if c is not None
    ]
    return min(caps) if caps else None


def check_guess_odds(settings: Settings) -> AuditItem:
    """codes.length: is the code long enough for the limits around it?"""
    n = settings.code_length
    guesses = guesses_per_day(settings)
    fix = (
        "raise OTPGUARD_CODE_LENGTH, or lower OTPGUARD_LIMIT_PHONE, OTPGUARD_MAX_ATTEMPTS "
        "or OTPGUARD_LIMIT_FAILED_CHECKS"
    )
    if guesses is None:
        return fail("codes.length", f"{n} digits, but guesses per number are not capped", fix)
    odds = guesses / 10**n
    status = (
        Verdict.FAIL
        if odds > GUESS_ODDS_FAIL
        else Verdict.WARN
        if odds > GUESS_ODDS_WARN
        else Verdict.PASS
    )
    return judge(
        status,
        "codes.length",
        f"{n} digits; at most {guesses} guesses per number a day: "
        f"1 in {max(1, round(1 / odds)):,} to guess one",
        fix,
    )


def check_limits(settings: Settings) -> Iterator[AuditItem]:
    """limits.phone, limits.ip, limits.checks, limits.global."""
    yield _phone_limit(settings)
    yield _ip_limits(settings)
    yield _failed_check_limits(settings)
    yield _global_limit(settings)


def _phone_limit(settings: Settings) -> AuditItem:
    per_number = max_in_window(settings.limits.phone, CHECKLIST_WINDOW)
    fix = "set OTPGUARD_LIMIT_PHONE=3/10m;10/24h"
    if per_number is None:
        detail = "no send limit per number: one number can be sent codes without end"
        return fail("limits.phone", detail, fix)
    elif per_number > CHECKLIST_SENDS:
        return warn(
            "limits.phone",
            f"up to {per_number} sends per number in 10 minutes ({settings.limit_phone}); "
            "the checklist says 3",
            fix,
        )
    else:
        cooldown = f", resends {settings.resend_cooldown} s apart and doubling"
        return ok(
            "limits.phone",
            f"at most {per_number} sends per number in 10 minutes ({settings.limit_phone})"
            + (cooldown if settings.resend_cooldown else ""),
        )


def _ip_limits(settings: Settings) -> AuditItem:
    per_ip = max_in_window(settings.limits.ip, CHECKLIST_WINDOW)
    per_net = max_in_window(settings.limits.network, CHECKLIST_WINDOW)
    if per_ip is None:
        return fail(
            "limits.ip",
            "no send limit per client IP",
            "set OTPGUARD_LIMIT_IP=10/10m;50/24h (and pass client_ip in API calls)",
        )
    elif per_net is None:
        return warn(
            "limits.ip",
            f"per IP {settings.limit_ip}, but no limit per network (/24, /56)",
            "set OTPGUARD_LIMIT_NETWORK=30/10m",
        )
    elif max_in_window(settings.limits.ipv6_48, CHECKLIST_WINDOW) is None:
        return warn(
            "limits.ip",
            f"per IP (IPv4 address, IPv6 /64) {settings.limit_ip}, per network "
            f"(IPv4 /24, IPv6 /56) {settings.limit_network}, but no limit per IPv6 /48",
            "set OTPGUARD_LIMIT_IPV6_48=60/10m;300/24h",
        )
    else:
        return ok(
            "limits.ip",
            f"per IP (IPv4 address, IPv6 /64) {settings.limit_ip}, per network "
            f"(IPv4 /24, IPv6 /56) {settings.limit_network}, per IPv6 /48 "
            f"{settings.limit_ipv6_48}; client_ip as your backend passes it, trusted "
            "(docs/hardening.md)",
        )


def _failed_check_limits(settings: Settings) -> AuditItem:
    if settings.limits.failed_checks and settings.limits.ip_failed_checks:
        return ok(
            "limits.checks",
            f"wrong codes limited per number ({settings.limit_failed_checks}) "
            f"and per IP ({settings.limit_ip_failed_checks})",
        )
    else:
        return warn(
            "limits.checks",
            "wrong codes are not limited across verifications (per number and per IP)",
            "set OTPGUARD_LIMIT_FAILED_CHECKS=10/1h and OTPGUARD_LIMIT_IP_FAILED_CHECKS=30/1h",
        )


def _global_limit(settings: Settings) -> AuditItem:
    if settings.admission.global_ or settings.limits.global_:
        return ok(
            "limits.global",
            "a global ceiling on unconverted sends "
            f"(OTPGUARD_ADMISSION_GLOBAL={settings.admission_global}; "
            f"hard cap OTPGUARD_LIMIT_GLOBAL={settings.limit_global})",
        )
    else:
        return warn(
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


def check_storage(settings: Settings) -> Iterator[AuditItem]:
    keys, source = _hex_keys(settings)
    if not keys:
        if settings.production:
            yield fail(
                "storage.hmac",
                "no HMAC key: production refuses to start",
                "run `otpguard init --production` and set OTPGUARD_SECRET_KEYS",
            )
        else:
            yield warn(
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
        yield fail(
            "storage.hmac",
            f"weak HMAC key ({source}): " + "; ".join(problems),
            "generate a key with `otpguard init` and put it first in OTPGUARD_SECRET_KEYS",
        )
        return
    ring = settings.keyring() if settings.secret_keys else None
    ids = f", signing key id {ring.signing_key_id}" if ring else ""
    yield ok(
        "storage.hmac",
        f"only HMAC-SHA256 tags of codes are stored, bound to verification, number and "
        f"channel; {len(keys)} key(s) of 32+ random bytes from {source}{ids}",
    )
    if settings.tag_form == 1:
        yield warn(
            "storage.tag_form",
            "codes are signed in the form of before schema 17 (OTPGUARD_TAG_FORM=1): "
            "checks on PostgreSQL and Redis take two round trips",
            "remove OTPGUARD_TAG_FORM once no instance of before is running",
        )


def _group_or_world(path: Path) -> bool:
    return bool(path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO))


def check_secret_files(settings: Settings, config_path: Path | None) -> Iterator[AuditItem]:
    files = [p for p in (config_path, settings.data_dir / "secret.key") if p and p.is_file()]
    loose = [p for p in files if _group_or_world(p)]
    if loose:
        names = ", ".join(f"{p} ({oct(p.stat().st_mode & 0o777)})" for p in loose)
        yield judge(
            Verdict.FAIL if settings.production else Verdict.WARN,
            "secrets.files",
            f"readable by other users: {names}",
            "chmod 600 " + " ".join(str(p) for p in loose),
        )
    elif files:
        yield ok("secrets.files", "files holding keys are mode 0600: " + ", ".join(map(str, files)))
    else:
        yield ok("secrets.files", "no config or key file on disk to check")


def check_https(settings: Settings) -> Iterator[AuditItem]:
    tls = bool(settings.tls_certfile and settings.tls_keyfile)
    if tls:
        try:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(str(settings.tls_certfile), str(settings.tls_keyfile))
        except (OSError, ssl.SSLError) as exc:
            yield fail(
                "https.enforced",
                f"the TLS certificate or key cannot be loaded ({type(exc).__name__})",
                "check OTPGUARD_TLS_CERTFILE/OTPGUARD_TLS_KEYFILE: PEM files, key matching cert",
            )
            tls = False
    if tls or settings.trusted_proxies:
        how = "TLS served by otpguard" if tls else "TLS terminated by trusted proxies"
        scope = "plain-HTTP API requests get 403 https_required"
        if settings.production:
            yield ok("https.enforced", f"{how}; {scope}")
        else:
            yield warn(
                "https.enforced",
                f"{how}, but development allows plain HTTP",
                "set OTPGUARD_ENV=production for real traffic",
            )
    elif settings.production:
        yield fail(
            "https.enforced",
            "neither TLS nor a TLS-terminating proxy: production refuses to start",
            "pass --certfile/--keyfile or set OTPGUARD_TRUSTED_PROXIES to your proxies' CIDRs",
        )
    else:
        yield warn(
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
        yield fail(
            "https.proxies",
            f"trusted proxies too broad ({', '.join(wide)}): anyone there can forge "
            "X-Forwarded-For/-Proto",
            "list only your load balancers' addresses in OTPGUARD_TRUSTED_PROXIES",
        )
    elif settings.trusted_proxies:
        yield ok(
            "https.proxies",
            "X-Forwarded-* honoured only from " + ", ".join(settings.trusted_proxies),
        )
    else:
        yield ok("https.proxies", "no proxies trusted: X-Forwarded-* headers are ignored")
