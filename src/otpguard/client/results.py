"""What the client returns: typed results read from the API's JSON (never a code)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..models import Channel, Status


@dataclass(frozen=True)
class CheckOutcome:
    """``valid`` is true only for the first correct check of a pending verification."""

    id: str
    status: Status
    valid: bool
    attempts_remaining: int


@dataclass(frozen=True)
class VerificationInfo:
    """A verification as the API shows it: the number masked, never the code."""

    id: str
    to: str  # masked, like +44******3456
    channel: Channel
    status: Status
    created_at: datetime
    expires_at: datetime
    resend_available_at: datetime
    attempts_remaining: int
    sends: int
    #: On a start or resend: "sent", or "unknown" when Twilio may have sent the
    #: message but its answer was lost (the code works if it arrives).
    delivery: str | None = None
    #: What the code is for; a transaction's amount (canonical), currency and payee.
    purpose: str = "login"
    amount: str | None = None
    currency: str | None = None
    payee: str | None = None

    @property
    def pending(self) -> bool:
        """Its code can still be checked: not approved, canceled, expired or locked yet."""
        return self.status is Status.PENDING


def _time(value: Any) -> datetime:
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def verification(data: dict[str, Any]) -> VerificationInfo:
    """A ``VerificationOut`` body (start, resend, get, cancel)."""
    amount = data.get("amount") or {}
    return VerificationInfo(
        id=str(data["id"]),
        to=str(data["to"]),
        channel=Channel(data["channel"]),
        status=Status(data["status"]),
        created_at=_time(data["created_at"]),
        expires_at=_time(data["expires_at"]),
        resend_available_at=_time(data["resend_available_at"]),
        attempts_remaining=int(data["attempts_remaining"]),
        sends=int(data["sends"]),
        delivery=data.get("delivery"),
        purpose=str(data.get("purpose") or "login"),
        amount=amount.get("value"),
        currency=amount.get("currency"),
        payee=data.get("payee"),
    )


def check_outcome(data: dict[str, Any]) -> CheckOutcome:
    """A ``CheckOut`` body."""
    return CheckOutcome(
        id=str(data["id"]),
        status=Status(data["status"]),
        valid=data["valid"] is True,
        attempts_remaining=int(data["attempts_remaining"]),
    )
