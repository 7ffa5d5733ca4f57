"""What a Twilio voice call says: the code read digit by digit, twice, in TwiML."""

from __future__ import annotations

from twilio.twiml.voice_response import VoiceResponse

from .base import TEXTS, Message

# Voice: what <Say> reads, by locale (locales/messages.toml); {digits} is the code
# as "1, 2, 3, ...". A transaction code's call names the amount and payee, as its SMS does.
VOICE_TEMPLATES = {lang: texts["voice"] for lang, texts in TEXTS.items()}
VOICE_TRANSACTION_TEMPLATES = {lang: texts["voice_transaction"] for lang, texts in TEXTS.items()}
_VOICE_LANGUAGES = {"es": "es-ES", "fr": "fr-FR", "de": "de-DE"}
_EN_US_COUNTRIES = frozenset({"US", "CA", "PR", "VI", "GU", "AS", "MP", "UM"})


def voice_language(locale: str, country: str | None) -> str:
    """The ``<Say language=...>`` for a locale: English follows the number's country."""
    if locale in _VOICE_LANGUAGES:
        return _VOICE_LANGUAGES[locale]
    return "en-US" if (country or "").upper() in _EN_US_COUNTRIES else "en-GB"


def voice_twiml(message: Message) -> str:
    """TwiML that reads the code digit by digit, twice, with a pause between."""
    locale = message.locale if message.locale in VOICE_TEMPLATES else "en"
    digits = ", ".join(message.code)
    if message.amount is not None and message.payee is not None:
        text = VOICE_TRANSACTION_TEMPLATES[locale].format(
            service=message.service_name, digits=digits, amount=message.amount, payee=message.payee
        )
    else:
        text = VOICE_TEMPLATES[locale].format(service=message.service_name, digits=digits)
    language = voice_language(locale, message.country)
    response = VoiceResponse()
    response.say(text, voice="alice", language=language)
    response.pause(length=1)
    response.say(text, voice="alice", language=language)
    return str(response)
