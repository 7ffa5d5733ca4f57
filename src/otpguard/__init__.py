"""otpguard: self-hosted, secure one-time-passcode verification.

Embedded use (no server)::

    from otpguard import Verifier, load_settings, open_verifier

    async with open_verifier(load_settings()) as otp:
        v = await otp.start("+447400123456", "sms", client_ip="203.0.113.7")
        result = await otp.check("123456", verification_id=v.id)
"""

from __future__ import annotations

from .client import (
    AsyncClient,
    CheckOutcome,
    Client,
    DeliveryFailed,
    Unreachable,
    VerificationInfo,
)
from .clock import ManualClock
from .config import Settings, load_settings
from .errors import (
    ChallengeRequired,
    ChallengeUnavailable,
    ConfigError,
    Conflict,
    DeliveryError,
    DestinationRefused,
    Forbidden,
    HttpsRequired,
    InvalidEmailAddress,
    InvalidPhoneNumber,
    InvalidRequest,
    NotFound,
    OtpguardError,
    RateLimited,
    StorageError,
    Unauthorized,
)
from .models import Channel, Status, Verification
from .service import CheckResult, Verifier, open_verifier
from .sync import SyncVerifier, open_sync_verifier
from .version import VERSION as __version__

__all__ = [
    "AsyncClient",
    "ChallengeRequired",
    "ChallengeUnavailable",
    "Channel",
    "CheckOutcome",
    "CheckResult",
    "Client",
    "ConfigError",
    "Conflict",
    "DeliveryError",
    "DeliveryFailed",
    "DestinationRefused",
    "Forbidden",
    "HttpsRequired",
    "InvalidEmailAddress",
    "InvalidPhoneNumber",
    "InvalidRequest",
    "ManualClock",
    "NotFound",
    "OtpguardError",
    "RateLimited",
    "Settings",
    "Status",
    "StorageError",
    "SyncVerifier",
    "Unauthorized",
    "Unreachable",
    "Verification",
    "VerificationInfo",
    "Verifier",
    "__version__",
    "load_settings",
    "open_sync_verifier",
    "open_verifier",
]
