"""Rate-limit rules and their evaluation over a store.

Every rule is a sliding window (``LIMIT/WINDOW``, several per setting separated
by ``;``) counted atomically in the store. The rule names are what a refusal
reports as ``rule``:

========== ============================================= ==========================
rule       counts                                        setting (default)
========== ============================================= ==========================
phone      sends to one E.164 number                      limit_phone (3/10m;10/24h)
email      sends to one mailbox (address without +tag)    limit_email (3/10m;10/24h)
email_domain  hard cap: every send to one email domain    limit_email_domain (off)
ip         sends for one client IP (IPv6: its /64)        limit_ip (10/10m;50/24h)
network    sends for one /24 (IPv4) or /56 (IPv6)         limit_network (30/10m)
ipv6_48    sends for one IPv6 /48 (none for IPv4)         limit_ipv6_48 (60/10m;300/24h)
prefix     hard cap: every send to one number block      limit_prefix (off)
country    hard cap: every send to one country           limit_country (off)
global     hard cap: every send                          limit_global (off)
failed_checks  wrong codes for one number (any verification) limit_failed_checks (10/1h)
               and for one client IP                      limit_ip_failed_checks (30/1h)
cooldown   resends of one verification: 30 s, then 60 s, 120 s, ... (resend_cooldown)
========== ============================================= ==========================

A request without ``client_ip`` counts under the shared ``unknown`` bucket.
IPv4-mapped IPv6 addresses (``::ffff:203.0.113.7``) count as their IPv4 address.
"""

from __future__ import annotations

import functools
import ipaddress

from .config import LimitsSection, Settings, Windows
from .destinations import Destination, is_email
from .errors import InvalidRequest
from .models import RateRule

UNKNOWN_IP = "unknown"
#: Distinct addresses whose parsed forms are remembered: a request parses its client's
#: address for several rules (normalize_ip, ip_key, network_of, ipv6_48_of), each once.
IP_CACHE = 4096


def normalize_ip(client_ip: str | None) -> str:
    """A canonical IP string, or ``unknown`` when the caller did not pass one."""
    if client_ip is None or client_ip == "":
        return UNKNOWN_IP
    if not isinstance(client_ip, str) or len(client_ip) > 64:
        raise InvalidRequest("'client_ip' must be an IPv4 or IPv6 address")
    text = client_ip.strip().split("%", 1)[0]  # a zone id (fe80::1%eth0) names no other host
    try:
        return _canonical(text)
    except ValueError:
        raise InvalidRequest(
            "'client_ip' must be an IPv4 or IPv6 address, like 203.0.113.7"
        ) from None


@functools.lru_cache(maxsize=IP_CACHE)
def _canonical(text: str) -> str:
    """``text``'s address in canonical form; ValueError (never cached) if it is none."""
    addr = ipaddress.ip_address(text)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped  # ::ffff:203.0.113.7 is 203.0.113.7, one set of counters
    return str(addr)


@functools.lru_cache(maxsize=IP_CACHE)
def ip_key(ip: str) -> str:
    """What the per-IP rules count under: the address for IPv4, its /64 for IPv6.

    One IPv6 host holds a whole /64 (privacy addresses rotate inside it), so
    counting single IPv6 addresses would let anyone with one host walk past the
    per-IP limits."""
    if ip == UNKNOWN_IP:
        return UNKNOWN_IP
    addr = ipaddress.ip_address(ip)
    if addr.version == 4:
        return str(addr)
    return str(ipaddress.ip_network(f"{addr}/64", strict=False))


@functools.lru_cache(maxsize=IP_CACHE)
def network_of(ip: str) -> str:
    """The /24 of an IPv4 address or the /56 of an IPv6 address."""
    if ip == UNKNOWN_IP:
        return UNKNOWN_IP
    addr = ipaddress.ip_address(ip)
    prefix = 24 if addr.version == 4 else 56
    return str(ipaddress.ip_network(f"{addr}/{prefix}", strict=False))


@functools.lru_cache(maxsize=IP_CACHE)
def ipv6_48_of(ip: str) -> str | None:
    """The /48 of an IPv6 address (a site's usual allocation); None for IPv4."""
    if ip == UNKNOWN_IP:
        return None
    addr = ipaddress.ip_address(ip)
    if addr.version == 4:
        return None
    return str(ipaddress.ip_network(f"{addr}/48", strict=False))


def _rules(windows: Windows, name: str, key: str) -> list[RateRule]:
    """One rule per window, all on one key: a send is one log entry, counted over each
    window (``3/10m;10/24h`` counts the same sends over ten minutes and over a day)."""
    return [RateRule(name, f"{name}:{key}", w.limit, w.seconds) for w in windows]


def send_rules(limits: LimitsSection, number: Destination, client_ip: str) -> list[RateRule]:
    """Every rule a send (start or resend) must pass, most specific first."""
    site = ipv6_48_of(client_ip)
    if is_email(number):
        most_specific = _rules(limits.email, "email", number.mailbox)
    else:
        most_specific = _rules(limits.phone, "phone", number.e164)
    rules = [
        *most_specific,
        *_rules(limits.ip, "ip", ip_key(client_ip)),
        *_rules(limits.network, "network", network_of(client_ip)),
        *(_rules(limits.ipv6_48, "ipv6_48", site) if site else []),
    ]
    if is_email(number):
        rules += _rules(limits.email_domain, "email_domain", number.domain)
    else:
        rules += _rules(limits.prefix, "prefix", number.prefix)
        rules += _rules(limits.country, "country", number.region or "unknown")
    return rules + _rules(limits.global_, "global", "all")


def failed_check_rules(limits: LimitsSection, e164: str, client_ip: str | None) -> list[RateRule]:
    """Wrong codes per number (across all its verifications) and per client IP (none
    when ``client_ip`` is None: a caller that has no end user's IP to give)."""
    return [*number_failed_check_rules(limits, e164), *ip_failed_check_rules(limits, client_ip)]


def number_failed_check_rules(limits: LimitsSection, e164: str) -> list[RateRule]:
    """Wrong codes per number; with ``e164=""`` each key is the prefix the number
    completes (``stores/opening.py``: a check by id learns the number in the store)."""
    return _rules(limits.failed_checks, "failed_checks", e164)


def ip_failed_check_rules(limits: LimitsSection, client_ip: str | None) -> list[RateRule]:
    """Wrong codes per client IP; none for None."""
    if client_ip is None:
        return []
    key = f"failed_checks_ip:{ip_key(client_ip)}"
    return [RateRule("failed_checks", key, w.limit, w.seconds) for w in limits.ip_failed_checks]


def resend_cooldown(limits: LimitsSection, sends: int) -> int:
    """Seconds to wait after the ``sends``-th message: 30, 60, 120, ... capped."""
    base = limits.resend_cooldown
    if base == 0:
        return 0
    return int(min(base * 2 ** max(0, sends - 1), max(base, limits.resend_cooldown_max)))


def longest_window(settings: Settings) -> int:
    """How long rate entries must be kept (the purge horizon): the longest window of
    the limits and the fraud rules, the two sections whose counters the store keeps."""
    fraud = settings.fraud
    windows = [w.seconds for w in (*settings.limits.all_windows(), *fraud.budget_global,
                                   *fraud.budget_country)]  # fmt: skip
    windows += [fraud.conversion_window, fraud.sequential_window]
    return max(windows, default=86400)
