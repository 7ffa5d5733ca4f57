"""The destination policy for email addresses (``phone.DestinationPolicy``'s twin).

Refused before anything is sent, each with its reason:

* a domain outside ``OTPGUARD_EMAIL_ALLOWED_DOMAINS`` when that list is set
  (``domain_not_allowed``; a listed domain admits its subdomains);
* a disposable domain (``disposable_domain``): the bundled list (``disposable.py``)
  and ``OTPGUARD_EMAIL_DISPOSABLE_DOMAINS``, while ``OTPGUARD_EMAIL_REFUSE_DISPOSABLE``;
* with ``OTPGUARD_EMAIL_REQUIRE_MX=true``, a domain that publishes no mail exchanger
  (``no_mx``): no MX record, a null MX (RFC 7505) or no such domain. A lookup that
  fails (timeout, server failure) admits the address: an outage of DNS must not
  stop every email sign-in, and the limits still count the send.

MX answers are cached (bounded, ``MX_CACHE_SIZE`` domains for ``MX_CACHE_TTL``
seconds), so an attacker's stream of random domains costs one lookup each and
no memory beyond the bound. The resolver is injectable (:class:`MxResolver`); the
default one is dnspython's, pointed at ``OTPGUARD_EMAIL_MX_NAMESERVERS`` when set.
"""

from __future__ import annotations

import ipaddress
import logging
from collections import OrderedDict
from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

from .disposable import DISPOSABLE_DOMAINS
from .email_address import EmailAddress, in_domains, normalise_domain
from .email_address import parse as parse_address
from .errors import ConfigError, InvalidEmailAddress
from .phone import PolicyDecision

if TYPE_CHECKING:
    from .config import EmailSection

log = logging.getLogger("otpguard.email")

MX_CACHE_SIZE = 10_000
MX_CACHE_TTL = 3600.0
MX_TIMEOUT = 3.0  # seconds for the whole lookup


class MxResolver(Protocol):
    """``mail_exchangers(domain)``: the domain's MX hosts (empty: it has none, or no
    such domain), or None when the lookup itself failed."""

    async def mail_exchangers(self, domain: str) -> list[str] | None: ...


class DnsMxResolver:
    """dnspython's asynchronous resolver (``pip install 'otpguard[email]'``), asking
    ``nameservers`` (``IP`` or ``IPv4:PORT``) when given, else the system's."""

    def __init__(self, nameservers: list[str] | None = None, timeout: float = MX_TIMEOUT) -> None:
        try:
            import dns.asyncresolver  # an optional extra, needed only when the MX check is on
            import dns.nameserver  # the same optional extra
        except ImportError:  # pragma: no cover - the dev extras install it
            raise ConfigError(
                "OTPGUARD_EMAIL_REQUIRE_MX needs dnspython: pip install 'otpguard[email]'"
            ) from None
        self._resolver = dns.asyncresolver.Resolver(configure=not nameservers)
        if nameservers:
            servers: list[str | dns.nameserver.Nameserver] = []
            for entry in nameservers:
                host, port = _host_port(entry)
                servers.append(dns.nameserver.Do53Nameserver(host, port))
            self._resolver.nameservers = servers
        self._resolver.lifetime = timeout

    async def mail_exchangers(self, domain: str) -> list[str] | None:
        import dns.exception  # installed: __init__ imported dnspython (an optional extra)
        import dns.resolver  # the same optional extra

        try:
            answer = await self._resolver.resolve(domain, "MX", search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except dns.exception.DNSException:
            return None
        return [str(r.exchange).rstrip(".") or "." for r in answer]


def _host_port(entry: str) -> tuple[str, int]:
    """``192.0.2.53``, ``192.0.2.53:5353`` or ``2001:db8::53`` -> (address, port)."""
    host, sep, port = entry.strip().rpartition(":")
    if sep and host.count(":") == 0 and port.isdigit():
        address, number = host, int(port)
    else:
        address, number = entry.strip(), 53
    try:
        ipaddress.ip_address(address)
    except ValueError:
        raise ConfigError(
            f"OTPGUARD_EMAIL_MX_NAMESERVERS: {entry!r} is not an IP address (optionally :PORT)"
        ) from None
    if not 0 < number < 65536:
        raise ConfigError(f"OTPGUARD_EMAIL_MX_NAMESERVERS: {entry!r} has no valid port")
    return address, number


def _domains(raw: Iterable[str], setting: str) -> frozenset[str]:
    out = set()
    for entry in raw:
        if not entry.strip():
            continue
        try:
            out.add(normalise_domain(entry.strip().lstrip("@")))
        except InvalidEmailAddress:
            raise ConfigError(f"{setting}: {entry!r} is not a domain (like example.com)") from None
    return frozenset(out)


class EmailPolicy:
    def __init__(
        self,
        *,
        allowed_domains: frozenset[str] = frozenset(),
        disposable_domains: frozenset[str] = DISPOSABLE_DOMAINS,
        refuse_disposable: bool = True,
        require_mx: bool = False,
        resolver: MxResolver | None = None,
    ) -> None:
        self.allowed_domains = allowed_domains
        self.disposable_domains = disposable_domains
        self.refuse_disposable = refuse_disposable
        self.require_mx = require_mx
        self.resolver = resolver
        self._mx: OrderedDict[str, tuple[bool, float]] = OrderedDict()

    @classmethod
    def from_section(cls, section: EmailSection, resolver: MxResolver | None = None) -> EmailPolicy:
        """Raises ConfigError naming the setting when a domain list is malformed."""
        extra = _domains(section.disposable_domains, "OTPGUARD_EMAIL_DISPOSABLE_DOMAINS")
        allowed = _domains(section.allowed_domains, "OTPGUARD_EMAIL_ALLOWED_DOMAINS")
        if section.require_mx and resolver is None:
            resolver = DnsMxResolver(list(section.mx_nameservers) or None)
        return cls(
            allowed_domains=allowed,
            disposable_domains=DISPOSABLE_DOMAINS | extra,
            refuse_disposable=section.refuse_disposable,
            require_mx=section.require_mx,
            resolver=resolver,
        )

    def decide(self, address: EmailAddress) -> PolicyDecision:
        domain = address.domain
        if self.allowed_domains and not in_domains(domain, self.allowed_domains):
            return PolicyDecision(False, "domain_not_allowed")
        if self.refuse_disposable and in_domains(domain, self.disposable_domains):
            return PolicyDecision(False, "disposable_domain")
        return PolicyDecision(True)

    async def decide_mx(self, address: EmailAddress, now: float) -> PolicyDecision:
        """The MX check (when required): refused with ``no_mx``."""
        if not self.require_mx or self.resolver is None:
            return PolicyDecision(True)
        domain = address.domain
        cached = self._mx.get(domain)
        if cached is not None and cached[1] > now:
            self._mx.move_to_end(domain)
            has_mx = cached[0]
        else:
            hosts = await self.resolver.mail_exchangers(domain)
            if hosts is None:
                log.warning("MX lookup failed for a domain; the address is admitted")
                return PolicyDecision(True)
            has_mx = any(h not in ("", ".") for h in hosts)  # "." alone: a null MX
            self._mx[domain] = (has_mx, now + MX_CACHE_TTL)
            self._mx.move_to_end(domain)
            while len(self._mx) > MX_CACHE_SIZE:
                self._mx.popitem(last=False)
        return PolicyDecision(True) if has_mx else PolicyDecision(False, "no_mx")


def dev_allowed(section: EmailSection) -> tuple[frozenset[str], frozenset[str]]:
    """``OTPGUARD_DEV_ALLOWED_EMAILS`` as (addresses, domains): ``@example.org`` is a
    whole domain. Raises ConfigError naming the setting."""
    addresses, domains = set(), set()
    for entry in section.dev_allowed:
        entry = entry.strip()
        try:
            if entry.startswith("@"):
                domains.add(normalise_domain(entry[1:]))
            elif entry:
                addresses.add(parse_address(entry).address)
        except InvalidEmailAddress as exc:
            raise ConfigError(f"OTPGUARD_DEV_ALLOWED_EMAILS: {entry!r}: {exc.message}") from None
    return frozenset(addresses), frozenset(domains)


#: Domains reserved for tests and documentation (RFC 2606, RFC 6761): a development
#: server with a real email transport may always send to these.
RESERVED_DOMAINS = frozenset({"example.com", "example.net", "example.org", "test", "example",
                              "invalid", "localhost"})  # fmt: skip
