"""The transport contract, shaped like httpx's: one async ``send``, plus ``aclose``.

A transport receives a :class:`Message` that holds the code and renders it for
its channel. It returns a :class:`Receipt` or raises
:class:`otpguard.errors.DeliveryError`. Nothing it returns may contain the code
or the rendered body.
"""

from __future__ import annotations

import abc
import tomllib
from dataclasses import dataclass
from importlib import resources

from ..models import Channel


def _texts() -> dict[str, dict[str, str]]:
    """``locales/messages.toml``: what each language's messages say, one table a language."""
    raw = resources.files("otpguard").joinpath("locales/messages.toml").read_text("utf-8")
    return tomllib.loads(raw)


#: Language -> kind (``sms``, ``transaction``, ``voice``, ``voice_transaction``) -> text.
TEXTS: dict[str, dict[str, str]] = _texts()
SMS_TEMPLATES = {lang: texts["sms"] for lang, texts in TEXTS.items()}
TRANSACTION_TEMPLATES = {lang: texts["transaction"] for lang, texts in TEXTS.items()}

# Default locale by the number's country, when the request does not name one.
COUNTRY_LOCALES: dict[str, str] = {
    "ES": "es",
    "MX": "es",
    "AR": "es",
    "CO": "es",
    "CL": "es",
    "PE": "es",
    "FR": "fr",
    "BE": "fr",
    "LU": "fr",
    "MC": "fr",
    "DE": "de",
    "AT": "de",
    "CH": "de",
    "LI": "de",
}


def pick_locale(requested: str | None, country: str | None) -> str:
    """The request's locale if we have a template for it, else the country's, else English."""
    if requested:
        lang = requested.replace("_", "-").split("-")[0].lower()
        if lang in SMS_TEMPLATES:
            return lang
    if country and country.upper() in COUNTRY_LOCALES:
        return COUNTRY_LOCALES[country.upper()]
    return "en"


@dataclass(frozen=True, repr=False)  # its own __repr__ (below) leaves the code out
class Message:
    """What to deliver. ``code`` is the only place the code lives outside the phone."""

    verification_id: str
    to: str  # E.164, or the normalised address for the email channel
    channel: Channel
    code: str
    service_name: str
    ttl_seconds: int  # remaining validity when handed to the transport
    locale: str = "en"
    country: str | None = None
    # For a transaction code: the amount as shown ("GBP 25.00") and the payee.
    amount: str | None = None
    payee: str | None = None

    def __repr__(self) -> str:  # a Message in a traceback must not show the code
        return (
            f"Message(verification_id={self.verification_id!r}, channel={self.channel.value!r}, "
            f"locale={self.locale!r})"
        )

    @property
    def minutes(self) -> int:
        return max(1, -(-self.ttl_seconds // 60))

    def render_text(self) -> str:
        if self.amount is not None and self.payee is not None:
            template = TRANSACTION_TEMPLATES.get(self.locale, TRANSACTION_TEMPLATES["en"])
            return template.format(
                service=self.service_name,
                code=self.code,
                minutes=self.minutes,
                amount=self.amount,
                payee=self.payee,
            )
        template = SMS_TEMPLATES.get(self.locale, SMS_TEMPLATES["en"])
        return template.format(service=self.service_name, code=self.code, minutes=self.minutes)


@dataclass(frozen=True)
class Receipt:
    provider: str
    provider_id: str | None = None
    status: str = "sent"


class Transport(abc.ABC):
    name: str = "transport"
    #: True when this transport can reach a real phone or mailbox (guards in development
    #: mode apply).
    reaches_real_phones: bool = False
    #: The channels it delivers; None: any (console, memory, file).
    channels: frozenset[Channel] | None = None

    @abc.abstractmethod
    async def send(self, message: Message) -> Receipt: ...

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
