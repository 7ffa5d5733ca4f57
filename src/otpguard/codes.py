"""Code generation and the HMAC keyring.

Codes come from :mod:`secrets` (``randbelow`` is uniform: no modulo bias). A
code is a string of ASCII digits; leading zeros are allowed. Trivial patterns
(one repeated digit, a straight ascending or descending run) are redrawn.

Only ``HMAC-SHA256(key, key_id | verification_id | number | channel | code
[| bound ...])`` is ever stored, where ``bound`` is what the code is for
(``purpose.Binding.tag_parts``: nothing for a login code, so tags from before
purposes still verify). The newest key signs, every listed key verifies, so keys
rotate without breaking codes that are still live.

Every other use of a key has a purpose, and each purpose one construction whose
inputs no other purpose's can equal, so a value made for one is worthless for
another (docs/hardening.md, "Keys and rotation"):

- ``keyed_hash`` (``HASH_PURPOSES``: numbers, accounts): ``HMAC(key, purpose |
  value)`` with the newest key; ``keyed_hashes`` gives it under every key, newest
  first, for lookups of what was stored before a rotation.
- ``subkeys`` (``SIGNING_PURPOSES``: dashboard sessions and CSRF tokens):
  ``HMAC(key, "otpguard/" purpose)`` for each key, newest first, handed to
  ``itsdangerous`` (``web/dashboard_session.py``): the newest signs, all verify.
- ``derive`` (``"webhook"``): an endpoint's secret, ``HMAC(key, purpose | endpoint
  id)`` with the key newest when the endpoint was made (its id is kept with it).
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

from .errors import ConfigError

MIN_KEY_BYTES = 32
_SEP = b"\x1f"  # unit separator: cannot occur in ids, E.164 numbers, channels or digit codes
_SEP_CHAR = _SEP.decode()

HashPurpose = Literal["number", "account"]
SigningPurpose = Literal["dashboard-session", "dashboard-csrf", "dashboard-login-csrf"]
DerivePurpose = Literal["webhook"]
HASH_PURPOSES: frozenset[str] = frozenset(get_args(HashPurpose))
SIGNING_PURPOSES: frozenset[str] = frozenset(get_args(SigningPurpose))
DERIVE_PURPOSES: frozenset[str] = frozenset(get_args(DerivePurpose))


def _purpose(purpose: str, allowed: frozenset[str]) -> bytes:
    """A purpose of this construction, as bytes: an unknown one (a typo, or one
    meant for another construction) is a bug, never a new key."""
    if purpose not in allowed:
        raise ValueError(f"{purpose!r} is not one of {sorted(allowed)}")
    return purpose.encode()


def is_trivial(code: str) -> bool:
    """True for codes a person would guess first: 000000, 123456, 987654, ..."""
    if len(set(code)) == 1:
        return True
    steps = {(int(b) - int(a)) % 10 for a, b in itertools.pairwise(code)}
    return steps in ({1}, {9})


def generate_code(length: int = 6) -> str:
    """A uniformly random, non-trivial code of ``length`` ASCII digits."""
    if not 6 <= length <= 10:
        raise ValueError("code length must be between 6 and 10")
    while True:
        code = "".join(str(secrets.randbelow(10)) for _ in range(length))
        if not is_trivial(code):
            return code


def is_well_formed(code: str, length: int) -> bool:
    """ASCII digits only (no unicode digits), exactly ``length`` of them."""
    return len(code) == length and code.isascii() and code.isdigit()


@dataclass(frozen=True)
class Key:
    key_id: str
    secret: bytes = b""

    def __repr__(self) -> str:  # never show the secret
        return f"Key(key_id={self.key_id!r})"


def key_id_for(secret: bytes) -> str:
    """A short, stable id derived from the key (it reveals nothing useful about it)."""
    return hashlib.sha256(b"otpguard-key-id" + _SEP + secret).hexdigest()[:12]


class Keyring:
    """HMAC keys, newest first: the first signs, all verify."""

    def __init__(self, secrets_: Sequence[bytes]) -> None:
        if not secrets_:
            raise ConfigError("at least one secret key is required (OTPGUARD_SECRET_KEYS)")
        keys = []
        for i, s in enumerate(secrets_):
            if len(s) < MIN_KEY_BYTES:
                raise ConfigError(
                    f"OTPGUARD_SECRET_KEYS: key #{i + 1} is {len(s)} bytes; each key must be at "
                    f"least {MIN_KEY_BYTES} random bytes written as hex "
                    "(generate one with `otpguard init`)"
                )
            keys.append(Key(key_id_for(s), s))
        self._keys = tuple(keys)
        self._by_id = {k.key_id: k for k in keys}

    @classmethod
    def from_hex(cls, hex_keys: Sequence[str]) -> Keyring:
        raw = []
        for i, h in enumerate(hex_keys):
            try:
                raw.append(bytes.fromhex(h.strip()))
            except ValueError:
                raise ConfigError(
                    f"OTPGUARD_SECRET_KEYS: key #{i + 1} is not hex; write each key as hex "
                    "(generate one with `otpguard init`)"
                ) from None
        return cls(raw)

    def __repr__(self) -> str:
        return f"Keyring(key_ids={[k.key_id for k in self._keys]!r})"

    @property
    def signing_key_id(self) -> str:
        return self._keys[0].key_id

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(k.key_id for k in self._keys)

    @staticmethod
    def _mac(
        key: Key, verification_id: str, number: str, channel: str, code: str, bound: Sequence[str]
    ) -> str:
        parts = (key.key_id, verification_id, number, channel, code, *bound)
        if any(_SEP_CHAR in part for part in bound):
            raise ValueError("a bound value cannot hold the separator")  # purpose.py forbids it
        msg = _SEP.join(part.encode() for part in parts)
        return hmac.new(key.secret, msg, hashlib.sha256).hexdigest()

    def sign(
        self,
        verification_id: str,
        number: str,
        channel: str,
        code: str,
        bound: Sequence[str] = (),
    ) -> tuple[str, str]:
        """Return ``(key_id, tag)`` for storage. ``bound``: what else the code is
        for (``purpose.Binding.tag_parts``); a check must present the same."""
        key = self._keys[0]
        return key.key_id, self._mac(key, verification_id, number, channel, code, bound)

    def verify(
        self,
        key_id: str,
        tag: str,
        verification_id: str,
        number: str,
        channel: str,
        code: str,
        bound: Sequence[str] = (),
    ) -> bool:
        """Constant-time check of ``code`` (and ``bound``) against a stored tag.

        An unknown key id (a retired key) still costs one HMAC so timing does
        not tell retired from wrong.
        """
        key = self._by_id.get(key_id)
        if key is None:
            self._mac(self._keys[0], verification_id, number, channel, code, bound)
            return False
        expected = self._mac(key, verification_id, number, channel, code, bound)
        return hmac.compare_digest(expected, tag)

    def derive(
        self, purpose: DerivePurpose, value: str, key_id: str | None = None
    ) -> tuple[str, bytes] | None:
        """A secret for one purpose and subject (a webhook endpoint's signing secret):
        ``HMAC(key, purpose | value)`` with the key ``key_id`` (default: the newest).
        None when that key is no longer in the keyring."""
        key = self._keys[0] if key_id is None else self._by_id.get(key_id)
        if key is None:
            return None
        msg = _purpose(purpose, DERIVE_PURPOSES) + _SEP + value.encode()
        return key.key_id, hmac.new(key.secret, msg, hashlib.sha256).digest()

    def keyed_hash(self, purpose: HashPurpose, value: str) -> str:
        """A keyed, non-reversible digest for grouping and lookups (numbers in events
        and flags, account ids in rate-limit keys), with the newest key: what is
        stored from now on. Adding a key changes it; see ``keyed_hashes``."""
        return self._hashes(purpose, value, self._keys[:1])[0]

    def keyed_hashes(self, purpose: HashPurpose, value: str) -> tuple[str, ...]:
        """``keyed_hash`` under every key, newest first: a lookup of what was stored
        before the newest key was added (a trusted-number flag, a number's events)
        tries each; what was stored under a retired key is out of reach."""
        return self._hashes(purpose, value, self._keys)

    @staticmethod
    def _hashes(purpose: str, value: str, keys: Sequence[Key]) -> tuple[str, ...]:
        msg = _purpose(purpose, HASH_PURPOSES) + _SEP + value.encode()
        return tuple(hmac.new(k.secret, msg, hashlib.sha256).hexdigest()[:32] for k in keys)

    def subkeys(self, purpose: SigningPurpose) -> tuple[bytes, ...]:
        """One signing key per listed key for ``purpose``, newest first:
        ``HMAC(key, "otpguard/" purpose)``. The message holds no separator, so it is
        none of the tags', hashes' or secrets' inputs above."""
        msg = b"otpguard/" + _purpose(purpose, SIGNING_PURPOSES)
        return tuple(hmac.new(key.secret, msg, hashlib.sha256).digest() for key in self._keys)


def new_secret_hex(nbytes: int = 32) -> str:
    return secrets.token_hex(nbytes)
