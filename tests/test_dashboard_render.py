"""The dashboard's labels and figures as a person reads them (the layout itself is
checked in Chromium by test_dashboard_browser.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from otpguard.config import load_settings
from otpguard.errors import ConfigError
from otpguard.web.dashboard_render import money, reason_label


@pytest.mark.parametrize(
    ("reason", "rule", "shown"),
    [
        ("fraud:sequential_numbers", "sequential_numbers", "fraud:sequential_numbers"),
        ("fraud:low_conversion", "low_conversion", "fraud:low_conversion"),
        ("rate_limited", "block", "rate_limited: block"),
        ("rate_limited", "country", "rate_limited: country"),
        ("rate_limited", "api_key", "rate_limited: api_key"),
        ("rate_limited", "phone", "rate_limited: phone"),
        ("challenge_required", None, "challenge_required"),
        ("challenge_required", "challenge_required", "challenge_required"),
        ("premium_rate", None, "premium_rate"),
        (None, None, ""),
        (None, "phone", "refused: phone"),
    ],
)
def test_a_refusal_reads_once(reason: str | None, rule: str | None, shown: str) -> None:
    assert reason_label(reason, rule) == shown


def test_spend_says_its_currency(tmp_path: Path) -> None:
    assert money(2.16, "USD") == "2.16 USD"
    assert money(0, "GBP") == "0.00 GBP"
    settings = load_settings(env={}, data_dir=tmp_path)
    assert settings.price_currency == "USD"
    pounds = load_settings(env={"OTPGUARD_PRICE_CURRENCY": "gbp"}, data_dir=tmp_path)
    assert pounds.price_currency == "GBP"
    with pytest.raises(ConfigError, match=r"price_currency|PRICE_CURRENCY"):
        load_settings(env={"OTPGUARD_PRICE_CURRENCY": "pounds"}, data_dir=tmp_path)
