"""Code generation and the HMAC keyring."""

from __future__ import annotations

import hashlib
import hmac
from collections import Counter

import pytest

from otpguard.codes import (
    DERIVE_PURPOSES,
    HASH_PURPOSES,
    SIGNING_PURPOSES,
    Keyring,
    generate_code,
    is_trivial,
    is_well_formed,
    new_secret_hex,
)
from otpguard.errors import ConfigError


@pytest.mark.parametrize(
    "code",
    [
        "000000",
        "111111",
        "999999",
        "123456",
        "234567",
        "987654",
        "654321",
        "890123",
        "3210987654",
        "1234567890",
        "0000000000",
    ],
)
def test_trivial_patterns(code: str) -> None:
    assert is_trivial(code)


@pytest.mark.parametrize("code", ["123457", "112233", "000001", "135790", "902813", "121212"])
def test_ordinary_codes(code: str) -> None:
    assert not is_trivial(code)


@pytest.mark.parametrize("length", [6, 7, 8, 10])
def test_generated_codes_are_well_formed_and_never_trivial(length: int) -> None:
    for _ in range(2000):
        code = generate_code(length)
        assert is_well_formed(code, length) and not is_trivial(code)


@pytest.mark.parametrize("length", [0, 4, 5, 11])
def test_bad_lengths(length: int) -> None:
    with pytest.raises(ValueError):
        generate_code(length)


def test_digits_are_uniform() -> None:
    """Chi-square over 60,000 digits: 9 degrees of freedom, p = 1e-6 critical value 41.3.

    A biased generator (say ``% 10`` over a byte, favouring 0-5) scores in the hundreds."""
    counts: Counter[str] = Counter()
    for _ in range(10_000):
        counts.update(generate_code(6))
    total = sum(counts.values())
    expected = total / 10
    chi2 = sum((counts[str(d)] - expected) ** 2 / expected for d in range(10))
    assert chi2 < 41.3, counts


def test_codes_do_not_repeat_in_practice() -> None:
    codes = [generate_code(6) for _ in range(2000)]
    # birthday bound for 2000 draws from ~10^6: a few collisions are normal, hundreds are not
    assert len(set(codes)) > 1980


def test_well_formed_rejects_unicode_digits() -> None:
    assert not is_well_formed("١٢٣٤٥٦", 6)
    assert not is_well_formed("１２３４５６", 6)
    assert not is_well_formed("12345", 6)
    assert is_well_formed("012345", 6)


def test_keyring_binds_every_field() -> None:
    ring = Keyring.from_hex([new_secret_hex()])
    kid, tag = ring.sign("VE1", "+447400123456", "sms", "482913")
    assert ring.verify(kid, tag, "VE1", "+447400123456", "sms", "482913")
    assert not ring.verify(kid, tag, "VE2", "+447400123456", "sms", "482913")
    assert not ring.verify(kid, tag, "VE1", "+447400123457", "sms", "482913")
    assert not ring.verify(kid, tag, "VE1", "+447400123456", "voice", "482913")
    assert not ring.verify(kid, tag, "VE1", "+447400123456", "sms", "482914")
    assert not ring.verify("unknown", tag, "VE1", "+447400123456", "sms", "482913")
    assert "482913" not in tag


def test_a_tag_starts_with_what_a_check_by_id_presents_and_seals_the_rest() -> None:
    """The first part needs no number (a store compares it before the row is read);
    the seal binds the number and channel, so a row moved to another number or
    channel fails the engine's check though its code part matches."""
    ring = Keyring.from_hex([new_secret_hex(), new_secret_hex()])
    kid, tag = ring.sign("VE1", "+447400123456", "sms", "482913", ("payment", "1000"))
    form, mac, seal = tag.split(".")
    assert form == "2" and len(mac) == 64 and len(seal) == 32
    presented = ring.presented("VE1", "482913", ("payment", "1000"))
    assert presented[0] == f"{kid}.{mac}" and len(presented) == 2
    assert f"{kid}.{mac}" not in ring.presented("VE1", "482914", ("payment", "1000"))
    assert f"{kid}.{mac}" not in ring.presented("VE2", "482913", ("payment", "1000"))
    assert f"{kid}.{mac}" not in ring.presented("VE1", "482913", ("payment", "1001"))
    bound = ("payment", "1000")
    assert ring.verify(kid, tag, "VE1", "+447400123456", "sms", "482913", bound)
    assert not ring.verify(kid, tag, "VE1", "+447400123457", "sms", "482913", bound)
    assert not ring.verify(kid, tag, "VE1", "+447400123456", "voice", "482913", bound)
    assert not ring.verify(kid, f"2.{mac}.{'0' * 32}", "VE1", "+447400123456", "sms",
                           "482913", bound)  # fmt: skip


def test_form_1_signs_what_an_instance_of_before_verifies() -> None:
    """OTPGUARD_TAG_FORM=1, during an upgrade: the tag is exactly the earlier form's
    HMAC (an instance of before computes and compares it), and still verifies here."""
    import hashlib
    import hmac

    secret = bytes.fromhex(new_secret_hex())
    ring = Keyring([secret], tag_form=1)
    kid, tag = ring.sign("VE1", "+447400123456", "sms", "482913", ("transaction", "1000"))
    parts = (kid, "VE1", "+447400123456", "sms", "482913", "transaction", "1000")
    assert tag == hmac.new(secret, "\x1f".join(parts).encode(), hashlib.sha256).hexdigest()
    assert Keyring([secret]).verify(kid, tag, "VE1", "+447400123456", "sms", "482913",
                                    ("transaction", "1000"))  # fmt: skip


def test_tags_of_the_earlier_form_still_verify() -> None:
    """Rows stored before the ``2.`` form, live for up to ``code_ttl`` after an upgrade."""
    import hashlib
    import hmac

    secret = bytes.fromhex(new_secret_hex())
    ring = Keyring([secret])
    parts = (ring.signing_key_id, "VE1", "+447400123456", "sms", "482913")
    tag = hmac.new(secret, "\x1f".join(parts).encode(), hashlib.sha256).hexdigest()
    assert ring.verify(ring.signing_key_id, tag, "VE1", "+447400123456", "sms", "482913")
    assert not ring.verify(ring.signing_key_id, tag, "VE1", "+447400123457", "sms", "482913")
    assert not ring.verify(ring.signing_key_id, tag, "VE1", "+447400123456", "sms", "482914")


def test_rotation_newest_signs_all_verify() -> None:
    old, new = new_secret_hex(), new_secret_hex()
    kid_old, tag_old = Keyring.from_hex([old]).sign("VE1", "+447400123456", "sms", "482913")
    ring = Keyring.from_hex([new, old])
    assert ring.verify(kid_old, tag_old, "VE1", "+447400123456", "sms", "482913")
    kid_new, _ = ring.sign("VE1", "+447400123456", "sms", "482913")
    assert kid_new != kid_old and kid_new == ring.signing_key_id
    assert not Keyring.from_hex([new]).verify(
        kid_old, tag_old, "VE1", "+447400123456", "sms", "482913"
    )


def test_weak_or_malformed_keys_are_refused() -> None:
    with pytest.raises(ConfigError, match="at least 32"):
        Keyring.from_hex(["00" * 16])
    with pytest.raises(ConfigError, match="not hex"):
        Keyring.from_hex(["zz" * 32])
    with pytest.raises(ConfigError):
        Keyring([])


def test_keys_never_show_in_reprs() -> None:
    secret = new_secret_hex()
    ring = Keyring.from_hex([secret])
    assert secret not in repr(ring) and secret not in repr(ring._keys)


# -- purposes: keyed hashes and subkeys ---------------------------------------------------------

NUMBER = "+447400123456"


def test_keyed_hashes_keep_their_form_so_stored_hashes_still_match() -> None:
    """``HMAC(key, purpose 0x1f value)``, hex, 32 digits: the form every release has
    stored in events and flags; with one key nothing regroups on upgrade."""
    secret = bytes(range(32))
    ring = Keyring([secret])
    expected = hmac.new(secret, b"number\x1f" + NUMBER.encode(), hashlib.sha256).hexdigest()
    assert ring.keyed_hash("number", NUMBER) == expected[:32]
    assert ring.keyed_hashes("number", NUMBER) == (expected[:32],)


def test_webhook_secrets_keep_their_form_so_apps_keep_theirs() -> None:
    """An endpoint's secret is in the app's hands: ``HMAC(key, "webhook" 0x1f id)``
    with the endpoint's own key, whichever key is newest now."""
    secret = bytes(range(32))
    mine = Keyring([secret])
    ring = Keyring([bytes(range(1, 33)), secret])
    expected = hmac.new(secret, b"webhook\x1fwe_1", hashlib.sha256).digest()
    assert ring.derive("webhook", "we_1", mine.signing_key_id) == (mine.signing_key_id, expected)
    assert Keyring([bytes(range(1, 33))]).derive("webhook", "we_1", mine.signing_key_id) is None


def test_the_newest_key_hashes_and_lookups_get_every_key_newest_first() -> None:
    old, new = new_secret_hex(), new_secret_hex()
    before = Keyring.from_hex([old]).keyed_hash("number", NUMBER)
    ring = Keyring.from_hex([new, old])
    assert ring.keyed_hash("number", NUMBER) == Keyring.from_hex([new]).keyed_hash("number", NUMBER)
    assert ring.keyed_hash("number", NUMBER) != before
    assert ring.keyed_hashes("number", NUMBER) == (ring.keyed_hash("number", NUMBER), before)
    # Retiring the oldest key changes nothing stored from the rotation on.
    assert Keyring.from_hex([new]).keyed_hash("number", NUMBER) == ring.keyed_hash("number", NUMBER)


def test_subkeys_differ_per_purpose_and_per_key_and_from_every_other_output() -> None:
    old, new = new_secret_hex(), new_secret_hex()
    ring = Keyring.from_hex([new, old])
    keys = [k for p in sorted(SIGNING_PURPOSES) for k in ring.subkeys(p)]
    assert len(keys) == 2 * len(SIGNING_PURPOSES) == len(set(keys))
    assert (
        ring.subkeys("dashboard-session")[1]
        == Keyring.from_hex([old]).subkeys("dashboard-session")[0]
    )
    raw = {bytes.fromhex(old), bytes.fromhex(new)}
    hashes = {ring.keyed_hash("number", "dashboard-session"), ring.keyed_hash("account", "x")}
    derived = ring.derive("webhook", "dashboard-session")
    assert derived is not None
    for key in keys:
        assert key not in raw and key != derived[1] and key.hex()[:32] not in hashes


@pytest.mark.parametrize(
    ("method", "purpose"),
    [
        ("keyed_hash", "dashboard-session"),  # a signing purpose is not a hash purpose
        ("keyed_hash", "webhook"),  # a webhook secret's first half is no number hash
        ("keyed_hash", "numbers"),
        ("keyed_hashes", "Number"),
        ("subkeys", "number"),
        ("subkeys", "dashboard"),
        ("derive", "number"),
    ],
)
def test_a_purpose_belongs_to_one_construction(method: str, purpose: str) -> None:
    ring = Keyring.from_hex([new_secret_hex()])
    args = (purpose,) if method == "subkeys" else (purpose, NUMBER)
    with pytest.raises(ValueError, match="is not one of"):
        getattr(ring, method)(*args)


def test_no_purpose_is_shared_by_two_constructions() -> None:
    assert not HASH_PURPOSES & SIGNING_PURPOSES
    assert not HASH_PURPOSES & DERIVE_PURPOSES
    assert not SIGNING_PURPOSES & DERIVE_PURPOSES
