"""``locales/messages.toml``: every language says all four messages, each naming what
its kind must name and nothing else, and a message renders in its language."""

from __future__ import annotations

import string

import pytest

from otpguard.models import Channel
from otpguard.transports.base import TEXTS, Message, pick_locale
from otpguard.transports.twilio_voice import voice_twiml

FIELDS = {
    "sms": {"service", "code", "minutes"},
    "transaction": {"service", "code", "minutes", "amount", "payee"},
    "voice": {"service", "digits"},
    "voice_transaction": {"service", "digits", "amount", "payee"},
}


def test_english_and_the_other_languages_are_there() -> None:
    assert sorted(TEXTS) == ["de", "en", "es", "fr"]


@pytest.mark.parametrize("lang", sorted(TEXTS))
def test_each_language_has_every_kind_with_its_fields(lang: str) -> None:
    texts = TEXTS[lang]
    assert set(texts) == set(FIELDS)
    for kind, text in texts.items():
        named = {field for _, field, _, _ in string.Formatter().parse(text) if field}
        assert named == FIELDS[kind], (lang, kind)


def message(locale: str, **extra: str) -> Message:
    return Message("v1", "+447400123456", Channel.SMS, "123456", "Acme", 300, locale, **extra)


def test_a_message_renders_in_its_language() -> None:
    assert message("fr").render_text() == (
        "Code Acme : 123456. Valable 5 min. Ne partagez ce code avec personne."
    )
    paying = message("de", amount="GBP 25.00", payee="Shop").render_text()
    assert paying.startswith("Acme-Code: 123456 für die Zahlung von GBP 25.00 an Shop.")
    assert "Su código de Acme es: 1, 2, 3, 4, 5, 6." in voice_twiml(message("es"))
    assert pick_locale("fr-CA", None) == "fr"
    assert pick_locale("pt", "PT") == "en"
