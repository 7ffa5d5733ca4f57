"""Code generation and the HMAC keyring.

Codes come from :mod:`secrets` (``randbelow`` is uniform: no modulo bias). A
code is a string of ASCII digits; leading zeros are allowed. Trivial patterns
(one repeated digit, a straight ascending or descending run) are redrawn.

Only a code's tag is ever stored, ``2.`` ``HMAC-SHA256(key, "otpguard/code" | key_id
| verification_id | code [| bound ...])`` ``.`` ``seal``, where ``bound`` is what the
code is for (``purpose.Binding.tag_parts``: nothing for a login code) and the seal,
``HMAC-SHA256(key, "otpguard/seal" | key_id | verification_id | number | channel)``
cut to 32 hex digits, binds the number and channel the code was sent to. The first
part needs only what a check by id presents, so the engine can hand a store the tag
its code would have under each key (``presented``) and a store compare it before the
engine has read the row; the engine checks the seal on the row the store returns
(``verify``). Tags made before this form (``HMAC-SHA256(key, key_id |
verification_id | number | channel | code [| bound ...])``, with no ``2.``) still
verify. The newest key signs, every listed key verifies, so keys rotate without
breaking codes that are still live.

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
TAG_FORM = "2."  # what starts a tag of the current form (the module's docstring)
_CODE, _SEAL = b"otpguard/code", b"otpguard/seal"

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

    def __init__(self, secrets_: Sequence[bytes], *, tag_form: int = 2) -> None:
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
        self._form = tag_form  # 1: sign the earlier form (OTPGUARD_TAG_FORM, an upgrade)

    @classmethod
    def from_hex(cls, hex_keys: Sequence[str], *, tag_form: int = 2) -> Keyring:
        raw = []
        for i, h in enumerate(hex_keys):
            try:
                raw.append(bytes.fromhex(h.strip()))
            except ValueError:
                raise ConfigError(
                    f"OTPGUARD_SECRET_KEYS: key #{i + 1} is not hex; write each key as hex "
                    "(generate one with `otpguard init`)"
                ) from None
        return cls(raw, tag_form=tag_form)

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
        """A tag of the earlier form (no ``2.``): still verified, no longer made."""
        parts = (key.key_id, verification_id, number, channel, code, *bound)
        return _hmac(key, parts, bound)

    @staticmethod
    def _code_mac(key: Key, verification_id: str, code: str, bound: Sequence[str]) -> str:
        return _hmac(key, (_CODE.decode(), key.key_id, verification_id, code, *bound), bound)

    @staticmethod
    def _seal(key: Key, verification_id: str, number: str, channel: str) -> str:
        parts = (_SEAL.decode(), key.key_id, verification_id, number, channel)
        return _hmac(key, parts, ())[:32]

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
        if self._form == 1:  # for instances of before the current form, during an upgrade
            return key.key_id, self._mac(key, verification_id, number, channel, code, bound)
        mac = self._code_mac(key, verification_id, code, bound)
        return key.key_id, f"{TAG_FORM}{mac}.{self._seal(key, verification_id, number, channel)}"

    def presented(self, verification_id: str, code: str, bound: Sequence[str] = ()) -> list[str]:
        """``key_id.mac`` under every key: what a tag of the current form of ``code``
        (for ``bound``) starts its second part with, for a store to compare with the
        row's tags before the engine has read it (``tags.presented_matches``). Not a
        verification on its own: the engine checks the seal afterwards."""
        return [f"{k.key_id}.{self._code_mac(k, verification_id, code, bound)}" for k in self._keys]

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
        """Constant-time check of ``code`` (and ``bound``) against a stored tag, and of
        the tag's seal against ``number`` and ``channel``.

        An unknown key id (a retired key) still costs the same HMACs so timing does
        not tell retired from wrong; so does an empty tag (the cost of a comparison,
        where there is nothing to compare with).
        """
        key = self._by_id.get(key_id)
        known = key is not None
        key = key or self._keys[0]
        if tag and not tag.startswith(TAG_FORM):
            expected = self._mac(key, verification_id, number, channel, code, bound)
            return hmac.compare_digest(expected, tag) and known
        _, mac, seal = [*tag.split(".", 2), "", ""][:3]
        ok = hmac.compare_digest(self._code_mac(key, verification_id, code, bound), mac)
        ok &= hmac.compare_digest(self._seal(key, verification_id, number, channel), seal)
        return ok and known

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


def _hmac(key: Key, parts: Sequence[str], bound: Sequence[str]) -> str:
    if any(_SEP_CHAR in part for part in bound):
        raise ValueError("a bound value cannot hold the separator")  # purpose.py forbids it
    msg = _SEP.join(part.encode() for part in parts)
    return hmac.new(key.secret, msg, hashlib.sha256).hexdigest()


def new_secret_hex(nbytes: int = 32) -> str:
    return secrets.token_hex(nbytes)
