"""Typed settings, validated at start-up.

* ``settings.py``: :class:`Settings`, the one model with a flat field per
  ``OTPGUARD_*`` variable (``OTPGUARD_FOO_BAR`` is ``foo_bar``) and its validators;
* ``sections.py``: the typed, frozen sections derived from it (``settings.limits``,
  ``settings.twilio``, ...), each what one component takes;
* ``windows.py``: the ``LIMIT/WINDOW`` grammar, parsed into typed windows;
* ``loading.py``: :func:`load_settings` (TOML file, environment, overrides) and the
  development key file.

What decides whether ``serve`` may start is ``otpguard.startup``, not here.
Secrets are ``SecretStr`` so a dump of the settings never shows them.
"""

from __future__ import annotations

from .loading import NOT_SERVER_SETTINGS, ensure_dev_key, load_settings
from .sections import (
    AdmissionSection,
    AlertsSection,
    ChallengeSection,
    CoreSection,
    EmailSection,
    FraudSection,
    LimitsSection,
    TwilioSection,
    WebhooksSection,
)
from .settings import Settings
from .windows import Window, Windows, parse_windows

__all__ = [
    "NOT_SERVER_SETTINGS",
    "AdmissionSection",
    "AlertsSection",
    "ChallengeSection",
    "CoreSection",
    "EmailSection",
    "FraudSection",
    "LimitsSection",
    "Settings",
    "TwilioSection",
    "WebhooksSection",
    "Window",
    "Windows",
    "ensure_dev_key",
    "load_settings",
    "parse_windows",
]
