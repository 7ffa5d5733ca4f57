"""The typed sections derived from the flat settings: each setting lands in its
section typed and parsed, sections are frozen and built once, and a copy of the
settings derives its own."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from pydantic import SecretStr

from otpguard.config import Settings, Window, load_settings
from otpguard.config.sections import pick
from otpguard.errors import ConfigError
from otpguard.models import Channel

from .conftest import make_settings


def test_flat_overrides_land_in_their_sections(tmp_path: Path) -> None:
    s = make_settings(
        tmp_path,
        limit_phone="1/1m;4/1h",
        limit_global="100/1d",
        fraud_budget_country="50/1h",
        fraud_shadow=["budget_exhausted"],
        admission_block_5="7/2h",
        twilio_from="+447400000001",
        twilio_api_base="http://127.0.0.1:9",
        email_smtp_port=2525,
        email_sendgrid_timeout=4.0,
        dev_allowed_emails=["me@work.example"],
        smtp_port=25,
        smtp_to=["ops@example.com"],
        challenge_timeout=2.0,
        webhook_max_attempts=3,
        public_url="https://otp.example",
    )
    assert s.limits.phone == (Window(1, 60), Window(4, 3600))
    assert s.limits.global_ == (Window(100, 86400),)
    assert s.fraud.budget_country == (Window(50, 3600),) == s.alerts.budget_country
    assert s.fraud.shadow == frozenset({"budget_exhausted"})
    assert s.admission.blocks(5) == (Window(7, 7200),) and s.admission.blocks(4) == (
        Window(12, 43200),
    )
    assert (s.twilio.from_, s.twilio.api_base, s.twilio.public_url) == (
        "+447400000001",
        "http://127.0.0.1:9",
        "https://otp.example",
    )
    assert s.email.smtp.port == 2525 and s.email.sendgrid.timeout == 4.0
    assert s.email.dev_allowed == ("me@work.example",)
    assert s.alerts.mail.port == 25 and s.alerts.mail.to == ("ops@example.com",)
    assert s.alerts.budget_countries == ("GB",) and s.alerts.conversion_counters_window == 3600
    assert s.challenge.timeout == 2.0 and s.webhooks.max_attempts == 3
    assert s.core.public_url == "https://otp.example" and s.core.production is False


def test_off_is_no_window_and_production_reaches_every_section(tmp_path: Path) -> None:
    s = make_settings(tmp_path, limit_country="off", env="production")
    assert s.limits.country == ()
    assert s.core.production and s.email.production
    assert s.challenge.production and s.webhooks.production


def test_sections_are_frozen_and_built_once(tmp_path: Path) -> None:
    s = make_settings(tmp_path)
    assert s.limits is s.limits and s.twilio is s.twilio
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.limits.phone = ()  # type: ignore[misc]
    assert isinstance(s.twilio.auth_token, SecretStr)  # secrets stay secret in sections


def test_a_copy_derives_its_own_sections(tmp_path: Path) -> None:
    s = make_settings(tmp_path)
    assert s.limits.phone == (Window(3, 600), Window(10, 86400))  # built (and cached)
    copy = s.model_copy(update={"limit_phone": "2/1m", "transport": "twilio"})
    assert copy.limits.phone == (Window(2, 60),) and copy.core.transport == "twilio"
    assert s.limits.phone == (Window(3, 600), Window(10, 86400))
    assert s.core.transport == "memory"


def test_sections_are_not_settings() -> None:
    """A section's name is no ``OTPGUARD_*`` variable, and dumps hold fields only."""
    s = load_settings(env={})
    s.limits  # noqa: B018 - built before the dump
    assert set(s.redacted()) == set(Settings.model_fields)
    with pytest.raises(ConfigError, match="OTPGUARD_LIMITS"):
        load_settings(env={"OTPGUARD_LIMITS": "1/1m"})


def test_whatsapp_is_in_use_as_soon_as_any_whatsapp_setting_is(tmp_path: Path) -> None:
    assert make_settings(tmp_path).twilio.channels_in_use() == [Channel.SMS]
    with_sender = make_settings(tmp_path, twilio_whatsapp_from="+447400000002")
    assert with_sender.twilio.channels_in_use() == [Channel.SMS, Channel.WHATSAPP]


def test_pick_names_the_missing_setting() -> None:
    @dataclasses.dataclass(frozen=True)
    class Wrong:
        no_such: int

    with pytest.raises(AttributeError, match="limit_no_such"):
        pick(Wrong, Settings(), "limit_")
