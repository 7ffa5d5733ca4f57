"""What a Twilio voice call says: the code read digit by digit, twice, in TwiML."""

from __future__ import annotations

from twilio.twiml.voice_response import VoiceResponse

from .base import Message

# Voice: what <Say> reads, by locale; {digits} is the code as "1, 2, 3, ...".
VOICE_TEMPLATES: dict[str, str] = {
    "en": "Your {service} code is: {digits}.",
    "es": "Su código de {service} es: {digits}.",
    "fr": "Votre code {service} est : {digits}.",
    "de": "Ihr {service}-Code lautet: {digits}.",
}
# A transaction code's call names the amount and the payee, as its SMS does.
VOICE_TRANSACTION_TEMPLATES: dict[str, str] = {
    "en": "Your {service} code to pay {amount} to {payee} is: {digits}.",
    "es": "Su código de {service} para pagar {amount} a {payee} es: {digits}.",
    "fr": "Votre code {service} pour payer {amount} à {payee} est : {digits}.",
    "de": "Ihr {service}-Code für die Zahlung von {amount} an {payee} lautet: {digits}.",
}
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
