"""Each call of the API as data: method, path, JSON body and the reader of its answer.

The sync and the async client send the same :class:`Call`; only the I/O differs.
The arguments are checked here, before anything is sent.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import quote

from ..errors import InvalidRequest
from ..models import Channel, StartArgs
from ..purpose import BoundArgs
from .results import CheckOutcome, VerificationInfo, check_outcome, verification

T = TypeVar("T")


@dataclass(frozen=True)
class Call(Generic[T]):
    method: str
    path: str
    json: dict[str, Any] | None
    parse: Callable[[dict[str, Any]], T]


def _path_id(verification_id: str) -> str:
    if not isinstance(verification_id, str) or not verification_id:
        raise InvalidRequest("a verification id is required")
    return quote(verification_id, safe="")


def _drop_none(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


def _bound_fields(bound: BoundArgs) -> dict[str, Any]:
    """``purpose``, and a transaction's amount as one object with its currency."""
    amount, currency = bound.get("amount"), bound.get("currency")
    if (amount is None) != (currency is None):
        raise InvalidRequest("give 'amount' and 'currency' together")
    money = None if amount is None else {"value": amount, "currency": currency}
    return _drop_none(purpose=bound.get("purpose"), amount=money, payee=bound.get("payee"))


def start_call(
    to: str, channel: str | Channel, args: StartArgs, **fields: str | None
) -> Call[VerificationInfo]:
    """``fields``: ``client_ip`` and ``locale``."""
    ch = channel.value if isinstance(channel, Channel) else channel
    own = {"challenge_token": args.get("challenge_token"), "account_id": args.get("account_id")}
    body = _drop_none(to=to, channel=ch, **fields, **own)
    return Call("POST", "/v1/verifications", {**body, **_bound_fields(args)}, verification)


def resend_call(verification_id: str, client_ip: str | None) -> Call[VerificationInfo]:
    path = f"/v1/verifications/{_path_id(verification_id)}/resend"
    return Call("POST", path, _drop_none(client_ip=client_ip), verification)


class CheckArgs(BoundArgs, total=False):
    """A check's keywords beyond ``verification_id``, ``to`` and ``client_ip``:
    what the start named, and ``code`` for who names the code by keyword."""

    code: str


def _code_and_id(
    first: str | None, code: str | None, verification_id: str | None
) -> tuple[str, str | None]:
    """The code, and the verification id, from ``check(code, verification_id=...)``,
    ``check(code=..., ...)``, or the order of 0.1, ``check(verification_id, code=...)``."""
    if code is None or first is None:
        typed = code if first is None else first
        if typed is None:
            raise TypeError("check() needs the code: check(code, verification_id=... or to=...)")
        return typed, verification_id
    if verification_id is not None:
        raise TypeError("give the code once: check(code, verification_id=...)")
    warnings.warn(
        "check(verification_id, code=...) is deprecated and goes in the next release: "
        "call check(code, verification_id=...), as Verifier.check takes it",
        DeprecationWarning,
        stacklevel=4,  # the caller of Client.check
    )
    return code, first


def check_call(
    first: str | None,
    verification_id: str | None,
    to: str | None,
    client_ip: str | None,
    args: CheckArgs,
) -> Call[CheckOutcome]:
    """``first`` is the code given by position (or, deprecated, the verification id)."""
    code, verification_id = _code_and_id(first, args.get("code"), verification_id)
    if (verification_id is None) == (to is None):
        raise InvalidRequest("give exactly one of 'verification_id' or 'to'")
    body = _drop_none(id=verification_id, to=to, code=code, client_ip=client_ip)
    return Call("POST", "/v1/verifications/check", {**body, **_bound_fields(args)}, check_outcome)


def cancel_call(verification_id: str) -> Call[VerificationInfo]:
    return Call("POST", f"/v1/verifications/{_path_id(verification_id)}/cancel", {}, verification)


def get_call(verification_id: str) -> Call[VerificationInfo]:
    return Call("GET", f"/v1/verifications/{_path_id(verification_id)}", None, verification)
