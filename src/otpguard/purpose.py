"""What a code is for: its purpose and, for a payment, the amount and the payee.

A verification is started for a purpose (``login`` when none is named,
``transaction``, ``password_reset``, ``signup`` or an operator's own name) and,
for ``transaction``, an amount with its ISO 4217 currency and a payee. The
:class:`Binding` goes into the code's HMAC tag (``codes.Keyring``), so a code
approves only a check that presents the same purpose, amount and payee: anything
else is a wrong code, decided by the same constant-time comparison (PSD2's
dynamic linking: any change to the amount or the payee invalidates the code).

The rules (each refusal is an ``InvalidRequest`` naming the rule):

* **purpose**: 1-32 of ``a-z 0-9 _``.
* **amount**: a positive decimal string (``25``, ``25.5``, ``25.00``), at most 12
  digits before the point and no more decimals than the currency has minor units
  (``JPY`` none, ``GBP`` two, ``KWD`` three). It is kept in one canonical form,
  exactly the currency's minor units (``25`` GBP is ``25.00``), so ``25`` and
  ``25.00`` are the same amount.
* **currency**: an ISO 4217 code in :data:`MINOR_UNITS`; any other is refused
  rather than guessed (a wrong number of decimals would misstate the amount).
* **payee**: 1-64 characters after NFC normalisation: letters of any script,
  combining marks, ASCII digits (at most 6: no phone number), space and
  ``. , & - ' ( )``; at least one letter; no space at either end nor two in a row;
  a full stop ends a word (``Acme Ltd.``, ``St. John's``), so no domain name
  (``acme.com``) that a phone would turn into a link. No control or format
  characters, no ``/ : @ < >``: no URL, address or markup.
* ``transaction`` needs an amount and a payee; other purposes take neither.

The default binding (``login``, no amount, no payee) adds nothing to the tag, so
tags written before purposes existed still verify, as ``login`` codes.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import TypedDict

from .errors import InvalidRequest

LOGIN = "login"
TRANSACTION = "transaction"
KNOWN_PURPOSES = (LOGIN, TRANSACTION, "password_reset", "signup")
_PURPOSE_RE = re.compile(r"[a-z0-9_]{1,32}")
_AMOUNT_RE = re.compile(r"([0-9]{1,12})(?:\.([0-9]{1,3}))?")
PAYEE_MAX = 64
PAYEE_MAX_DIGITS = 6
_PAYEE_PUNCTUATION = frozenset(" .,&-'()")
# Letters of any script and the marks that join them (no enclosing marks).
_PAYEE_CATEGORIES = frozenset({"Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Mc"})
PAYEE_RULE = (
    "1-64 letters, digits (at most 6), spaces and . , & - ' ( ), with a letter; "
    "a full stop ends a word (no domain name)"
)
#: Marks the tag's extra parts (a format version, so a later format can differ).
_TAG_FORMAT = "bind1"

#: ISO 4217 minor units of the currencies accepted, by how many they have.
_BY_MINOR_UNITS = {
    0: "CLP ISK JPY KRW PYG UGX VND XAF XOF",
    2: "AED ARS AUD BDT BGN BRL CAD CHF CNY COP CZK DKK DZD EGP EUR GBP GEL GHS HKD HUF "
    "IDR ILS INR KES KZT LKR MAD MXN MYR NGN NOK NZD PEN PHP PKR PLN QAR RON RSD RUB "
    "SAR SEK SGD THB TRY TWD UAH USD UYU ZAR",
    3: "BHD IQD JOD KWD LYD OMR TND",
}
MINOR_UNITS: dict[str, int] = {
    code: minor for minor, codes in _BY_MINOR_UNITS.items() for code in codes.split()
}


class BoundArgs(TypedDict, total=False):
    """The Verifier's ``purpose``, ``amount``, ``currency`` and ``payee`` arguments (a
    caller's keywords too: ``Client.start(..., **bound)``, each optional)."""

    purpose: str | None
    amount: str | None
    currency: str | None
    payee: str | None


@dataclass(frozen=True)
class Binding:
    """A verification's purpose, and for a transaction its amount and payee, in the
    canonical forms :func:`bind` returns. ``amount`` has exactly the currency's
    minor units."""

    purpose: str = LOGIN
    amount: str | None = None
    currency: str | None = None
    payee: str | None = None

    @property
    def is_default(self) -> bool:
        return self == DEFAULT

    def tag_parts(self) -> tuple[str, ...]:
        """What goes into the HMAC after the code: nothing for the default binding
        (the format of tags written before purposes existed)."""
        if self.is_default:
            return ()
        return (_TAG_FORMAT, self.purpose, self.amount or "", self.currency or "", self.payee or "")

    def args(self) -> BoundArgs:
        """As the Verifier's ``start`` and ``check`` take it: ``start(..., **b.args())``."""
        return {
            "purpose": self.purpose,
            "amount": self.amount,
            "currency": self.currency,
            "payee": self.payee,
        }

    @property
    def display_amount(self) -> str | None:
        """``GBP 25.00``: the currency code first, the same in every language."""
        if self.amount is None or self.currency is None:
            return None
        return f"{self.currency} {self.amount}"


DEFAULT = Binding()


def _purpose(value: object) -> str:
    if value is None:
        return LOGIN
    if not isinstance(value, str) or not _PURPOSE_RE.fullmatch(value):
        raise InvalidRequest("'purpose' must be 1-32 of a-z, 0-9 and _ (login, transaction, ...)")
    return value


def canonical_amount(value: object, currency: object) -> tuple[str, str]:
    """``(amount, currency)`` in canonical form, or ``InvalidRequest``."""
    if not isinstance(currency, str) or currency not in MINOR_UNITS:
        raise InvalidRequest(
            "'currency' must be an ISO 4217 code otpguard knows, such as EUR, GBP or USD"
        )
    minor = MINOR_UNITS[currency]
    match = _AMOUNT_RE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise InvalidRequest("'amount' must be a decimal string such as 25.00")
    whole, fraction = match.group(1), match.group(2) or ""
    if len(fraction) > minor:
        raise InvalidRequest(f"'amount' has more decimals than {currency} has ({minor})")
    whole = whole.lstrip("0") or "0"
    if whole == "0" and not fraction.strip("0"):
        raise InvalidRequest("'amount' must be more than zero")
    return (whole + "." + fraction.ljust(minor, "0") if minor else whole), currency


def _payee_char_ok(c: str) -> bool:
    if c in _PAYEE_PUNCTUATION or "0" <= c <= "9":
        return True
    return unicodedata.category(c) in _PAYEE_CATEGORIES


def canonical_payee(value: object) -> str:
    """The payee in NFC, or ``InvalidRequest`` naming :data:`PAYEE_RULE`."""
    if not isinstance(value, str) or len(value) > 4 * PAYEE_MAX:
        raise InvalidRequest(f"'payee' must be {PAYEE_RULE}")
    payee = unicodedata.normalize("NFC", value)
    ok = (
        0 < len(payee) <= PAYEE_MAX
        and all(_payee_char_ok(c) for c in payee)
        and any(unicodedata.category(c)[0] == "L" for c in payee)
        and sum("0" <= c <= "9" for c in payee) <= PAYEE_MAX_DIGITS
        and payee == payee.strip(" ")
        and "  " not in payee
        and not re.search(r"\.[^\s,)]", payee)
    )
    if not ok:
        raise InvalidRequest(f"'payee' must be {PAYEE_RULE}")
    return payee


#: Currency symbols read in a display amount ("€39.99"); "$" and "¥" name several.
CURRENCY_SYMBOLS = {"€": "EUR", "£": "GBP"}
_CODE_FIRST = re.compile(r"([A-Z]{3}) (\S+)")
_CODE_LAST = re.compile(r"(\S+) ([A-Z]{3})")


def parse_display_amount(text: str) -> tuple[str, str]:
    """An amount written with its currency, as Twilio's ``Amount`` is: ``EUR 39.99``,
    ``39.99 EUR``, ``€39.99`` or ``39.99€``; ``(amount, currency)`` in canonical form."""
    text = text.strip()
    for symbol, code in CURRENCY_SYMBOLS.items():
        if text.startswith(symbol) or text.endswith(symbol):
            return canonical_amount(text.strip(symbol).strip(), code)
    match = _CODE_FIRST.fullmatch(text)
    if match is not None:
        return canonical_amount(match.group(2), match.group(1))
    match = _CODE_LAST.fullmatch(text)
    if match is not None:
        return canonical_amount(match.group(1), match.group(2))
    raise InvalidRequest("write the amount with its ISO 4217 currency: EUR 39.99 or €39.99")


def bind(
    purpose: object = None,
    amount: object = None,
    currency: object = None,
    payee: object = None,
) -> Binding:
    """Validate what a start or a check names and return it in canonical form."""
    name = _purpose(purpose)
    given = (amount is not None, currency is not None, payee is not None)
    if name != TRANSACTION:
        if any(given):
            raise InvalidRequest("'amount' and 'payee' go with the purpose 'transaction' only")
        return Binding(name)
    if not all(given):
        raise InvalidRequest(
            "the purpose 'transaction' needs 'amount' (with its currency) and 'payee'"
        )
    value, code = canonical_amount(amount, currency)
    return Binding(TRANSACTION, value, code, canonical_payee(payee))
