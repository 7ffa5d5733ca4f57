"""A small bundled list of disposable (throwaway) mailbox domains.

Refused for the email channel while ``OTPGUARD_EMAIL_REFUSE_DISPOSABLE`` is true
(the default); ``OTPGUARD_EMAIL_DISPOSABLE_DOMAINS`` adds domains. A domain matches
itself and its subdomains. The list is deliberately short: the services that
are widely used to receive codes for accounts that will be abused. Operators with
a larger list (there are community-kept ones with thousands of entries) pass it
through the setting or the TOML file.
"""

from __future__ import annotations

DISPOSABLE_DOMAINS = frozenset(
    {
        "10minutemail.com",
        "20minutemail.com",
        "33mail.com",
        "anonaddy.me",
        "burnermail.io",
        "discard.email",
        "dispostable.com",
        "emailondeck.com",
        "fakeinbox.com",
        "getairmail.com",
        "getnada.com",
        "guerrillamail.biz",
        "guerrillamail.com",
        "guerrillamail.de",
        "guerrillamail.net",
        "guerrillamail.org",
        "guerrillamailblock.com",
        "harakirimail.com",
        "incognitomail.org",
        "mailcatch.com",
        "maildrop.cc",
        "mailinator.com",
        "mailinator.net",
        "mailnesia.com",
        "mailpoof.com",
        "mintemail.com",
        "moakt.com",
        "mohmal.com",
        "mytemp.email",
        "sharklasers.com",
        "spam4.me",
        "spamgourmet.com",
        "temp-mail.io",
        "temp-mail.org",
        "tempail.com",
        "tempmail.com",
        "tempmail.net",
        "tempmailo.com",
        "tempr.email",
        "throwawaymail.com",
        "trash-mail.com",
        "trashmail.com",
        "trashmail.de",
        "trashmail.net",
        "yopmail.com",
        "yopmail.fr",
        "yopmail.net",
    }
)
