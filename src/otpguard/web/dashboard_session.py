"""The dashboard's signed values: the session cookie and the CSRF tokens, on itsdangerous.

Each is signed with the newest key's subkey for its purpose
(``Keyring.subkeys``) and accepted under any listed key's, so adding a key in front
of ``OTPGUARD_SECRET_KEYS`` signs nobody out and retiring a key ends only the
sessions it signed. The session cookie is ``<API key id>.<nonce>.<time>.<mac>``
(itsdangerous' ``TimestampSigner``, timed by the engine's clock); a CSRF token is a
``Signer`` signature over the session nonce, or before sign-in over a random cookie.
What makes a session live beyond its signature (the API key, no sign-out) is
checked by ``dashboard._session``.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence

from itsdangerous import BadSignature, Signer, TimestampSigner

from ..clock import Clock
from ..codes import Keyring, SigningPurpose

SESSION_TTL = 8 * 3600


class _ClockedSigner(TimestampSigner):
    """A ``TimestampSigner`` whose time is the engine's clock, not ``time.time``."""

    def __init__(self, keys: Sequence[bytes], clock: Clock) -> None:
        super().__init__(list(keys), key_derivation="none", digest_method=hashlib.sha256, salt=None)
        self._clock = clock

    def get_timestamp(self) -> int:
        return int(self._clock())


def _keys(keyring: Keyring, purpose: SigningPurpose) -> list[bytes]:
    """The purpose's subkeys oldest first: itsdangerous signs with the last."""
    return list(reversed(keyring.subkeys(purpose)))


def new_session(keyring: Keyring, clock: Clock, api_key_id: str) -> str:
    """The cookie value of a new session for ``api_key_id``, with a fresh nonce."""
    signer = _ClockedSigner(_keys(keyring, "dashboard-session"), clock)
    return signer.sign(f"{api_key_id}.{secrets.token_hex(16)}").decode()


def read_session(keyring: Keyring, clock: Clock, cookie: str) -> tuple[str, str] | None:
    """``(API key id, nonce)`` of a cookie signed under a listed key and younger than
    ``SESSION_TTL``; None for anything else.

    The age is checked here rather than by ``unsign(max_age=...)``, which refuses a
    timestamp even a second ahead: another instance's clock may be that far ahead."""
    signer = _ClockedSigner(_keys(keyring, "dashboard-session"), clock)
    try:
        value, signed_at = signer.unsign(cookie, return_timestamp=True)
    except BadSignature:
        return None
    if clock() - signed_at.timestamp() >= SESSION_TTL:
        return None
    key_id, _, nonce = value.decode().partition(".")
    return (key_id, nonce) if key_id and nonce else None


def csrf_token(keyring: Keyring, purpose: SigningPurpose, value: str) -> str:
    """The form token bound to ``value`` (a session nonce, or the sign-in cookie)."""
    signer = Signer(_keys(keyring, purpose), key_derivation="none", digest_method=hashlib.sha256)
    return signer.get_signature(value).decode()


def csrf_ok(keyring: Keyring, purpose: SigningPurpose, value: str, token: str) -> bool:
    """Whether ``token`` is ``value``'s under any listed key (constant-time)."""
    if not value or not token.isascii():
        return False
    signer = Signer(_keys(keyring, purpose), key_derivation="none", digest_method=hashlib.sha256)
    return signer.verify_signature(value, token)
