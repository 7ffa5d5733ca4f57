"""Where a code goes: a phone number or an email address, chosen by the channel.

The Verifier and the guards read the same few attributes from either kind
(``e164``: the key counters, tags and events use; ``region``; ``prefix``: the
group it belongs to; ``type``); a guard that only makes sense for one kind asks
:func:`is_email`.
"""

from __future__ import annotations

from typing import TypeGuard

from . import email_address, phone
from .email_address import EmailAddress
from .models import Channel, Verification
from .phone import PhoneNumber

Destination = PhoneNumber | EmailAddress


def is_email(destination: Destination) -> TypeGuard[EmailAddress]:
    return isinstance(destination, EmailAddress)


def parse_destination(raw: str, channel: Channel | None, default_region: str) -> Destination:
    """``raw`` read for ``channel``; with no channel (a check by ``to``), an ``@``
    says it is an address. Raises InvalidRequest (a subclass names which kind)."""
    if channel is Channel.EMAIL or (channel is None and email_address.looks_like_address(raw)):
        return email_address.parse(raw)
    return phone.parse(raw, default_region)


def destination_of(v: Verification) -> Destination:
    """A stored verification's destination, without parsing again (the prefix and
    the region are all that is read)."""
    if v.channel is Channel.EMAIL:
        return EmailAddress(v.to)
    return PhoneNumber(e164=v.to, region=v.country, type="")
