"""Parsing, normalising and masking email addresses (the email channel's ``phone.py``).

An address keys counters, tags and events only in its normalised form, so
``John.Smith@Example.COM`` and ``john.smith@example.com`` are one address and
``j@bücher.example`` is ``j@xn--bcher-kva.example``. What is accepted is one plain
address, ``local@domain``, nothing a mail client would also read:

* no display name (``John <j@example.com>``), comment, quoted local part
  (``"a b"@example.com``), address literal (``j@[192.0.2.1]``), list or whitespace;
* the local part a dot-atom of ASCII letters, digits and ``#$&'*+/=?^_`|~-``
  (no leading, trailing or doubled dot), at most 64 characters. RFC 5322 also
  allows ``!``, ``%``, ``{`` and ``}``: the first two are refused because old
  relays read them as routes to another host (``jo%evil.example@relay``), the
  braces because store keys in Redis Cluster use them as hash tags;
* the domain a host name of at least two labels (IDNA 2008 with UTS #46 mapping,
  written in its ASCII form), every label 1-63 letters, digits or inner hyphens, a
  top-level label that is not all digits, the whole address at most 254 characters.

The whole address is lower-cased: mailbox providers treat local parts as case
blind, and an attacker must not get one more set of counters per capital letter.
For the same reason the per-address limit counts a *mailbox*, the address without
its ``+tag`` (``jo+1@example.com`` and ``jo+2@example.com`` are one mailbox).

:func:`mask` is the only form an address takes in events, metrics and logs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

import idna

from .errors import InvalidEmailAddress

MAX_ADDRESS = 254  # RFC 5321's path limit minus the angle brackets
MAX_LOCAL = 64
MAX_INPUT_LENGTH = 320  # what is read at all, before IDNA turns the domain to ASCII
_ATOM = re.compile(r"[A-Za-z0-9#$&'*+/=?^_`|~-]+", re.ASCII)
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?", re.ASCII)
_NOT_PLAIN = set(' \t\r\n<>()[]",;:\\')
EXAMPLE = "like jo@example.com"


@dataclass(frozen=True)
class EmailAddress:
    """A normalised address. It answers the attributes the Verifier reads from a
    :class:`~otpguard.phone.PhoneNumber`, so one send path serves both kinds."""

    address: str

    @property
    def local(self) -> str:
        return self.address.rpartition("@")[0]

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2]

    @property
    def mailbox(self) -> str:
        """The address without its ``+tag``: what the per-address limit counts."""
        base = self.local.split("+", 1)[0] or self.local
        return f"{base}@{self.domain}"

    # -- what the Verifier reads from a destination --------------------------------

    @property
    def e164(self) -> str:
        """The destination's key (counters, tags, events): here the address itself."""
        return self.address

    region: ClassVar[None] = None  # an address has no country
    type: ClassVar[str] = "email"
    is_twilio_magic: ClassVar[bool] = False

    @property
    def prefix(self) -> str:
        """The group a destination belongs to: for an address, its domain."""
        return "@" + self.domain


def parse(raw: object) -> EmailAddress:
    """Parse and normalise; raise InvalidEmailAddress with a message fit for the caller."""
    if not isinstance(raw, str) or not raw.strip():
        raise InvalidEmailAddress(f"'to' must be an email address, {EXAMPLE}")
    text = raw.strip()
    if len(text) > MAX_INPUT_LENGTH or not text.isprintable():
        raise InvalidEmailAddress(f"'to' is too long or not printable: use one address, {EXAMPLE}")
    if _NOT_PLAIN & set(text) or text.count("@") != 1:
        raise InvalidEmailAddress(
            "'to' must be one plain address (no display name, quotes, comments, brackets "
            f"or spaces), {EXAMPLE}"
        )
    local, _, domain = text.partition("@")
    if not local or len(local) > MAX_LOCAL or not all(_ATOM.fullmatch(a) for a in local.split(".")):
        raise InvalidEmailAddress(
            "'to' has an invalid part before the @: use ASCII letters, digits and "
            f"#$&'*+/=?^_`|~- with single inner dots, at most {MAX_LOCAL} characters"
        )
    ascii_domain = normalise_domain(domain)
    address = f"{local.lower()}@{ascii_domain}"
    if len(address) > MAX_ADDRESS:
        raise InvalidEmailAddress(f"'to' is longer than {MAX_ADDRESS} characters")
    return EmailAddress(address)


def normalise_domain(domain: str) -> str:
    """A domain in its lower-case ASCII (IDNA) form; raises InvalidEmailAddress."""
    try:
        ascii_domain = idna.encode(domain.rstrip("."), uts46=True).decode("ascii").lower()
    except (idna.IDNAError, UnicodeError):
        raise InvalidEmailAddress(
            f"'to' has a domain that is not a valid host name, {EXAMPLE}"
        ) from None
    labels = ascii_domain.split(".")
    if (
        len(labels) < 2
        or not all(_LABEL.fullmatch(label) for label in labels)
        or labels[-1].isdigit()
        or len(ascii_domain) > 253
    ):
        raise InvalidEmailAddress(
            f"'to' needs a domain with a dot, like example.com (no IP addresses), {EXAMPLE}"
        )
    return ascii_domain


def looks_like_address(raw: object) -> bool:
    """Whether ``raw`` was meant as an address rather than a number (a check by ``to``)."""
    return isinstance(raw, str) and "@" in raw


def mask(address: str) -> str:
    """``john@mail.example.com`` -> ``j***@m***.com``: the first letter of the local
    part and of the domain, and the top-level label; never the address."""
    local, _, domain = address.rpartition("@")
    head, _, tld = domain.rpartition(".")
    return f"{local[:1]}***@{head[:1]}***.{tld}" if head else f"{local[:1]}***@***"


def in_domains(domain: str, domains: frozenset[str]) -> bool:
    """Whether ``domain`` is one of ``domains`` or a subdomain of one."""
    labels = domain.split(".")
    return any(".".join(labels[i:]) in domains for i in range(len(labels)))
