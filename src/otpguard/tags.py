"""The code tags a verification holds: one, or one per send when earlier codes stay
valid (the /v2 API's resend: Twilio keeps one verification per number, and every
code sent for it is checkable until the verification expires).

A verification's ``key_id`` and ``code_hash`` are then space-separated lists, the
n-th key id signing the n-th tag (a key rotated between two sends signs only the
later ones). The stores keep both as opaque text: no backend changes, and a
compare-and-set on ``code_hash`` (``Store.approve``) still sees any resend that
changed the tags after a comparison.
"""

from __future__ import annotations

from collections.abc import Sequence

from .codes import Keyring
from .models import Verification

SEP = " "  # in neither a key id (hex) nor a tag (hex)
MAX_TAGS = 5  # sends per verification whose codes stay valid (Twilio's 5 sends)


def tags_of(v: Verification) -> list[tuple[str, str]]:
    """``(key_id, tag)`` of every code of ``v`` still valid, oldest first."""
    return list(zip(v.key_id.split(SEP), v.code_hash.split(SEP), strict=True))


def appended(v: Verification, key_id: str, tag: str) -> tuple[str, str]:
    """``v``'s ``(key_id, code_hash)`` with one more tag."""
    return v.key_id + SEP + key_id, v.code_hash + SEP + tag


def matches(keyring: Keyring, v: Verification, code: str, bound: Sequence[str] = ()) -> bool:
    """Whether ``code`` (for what ``bound`` says it is for) is one of ``v``'s; every
    tag is compared (the work does not depend on which one matched)."""
    found = False
    for key_id, tag in tags_of(v):
        found |= keyring.verify(key_id, tag, v.id, v.to, v.channel.value, code, bound)
    return found
