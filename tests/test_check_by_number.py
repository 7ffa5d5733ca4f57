"""Checks by number tell nothing about the number, and every verification and /v2
service belongs to the API key that made it (issue 13, items 4, 5 and 7)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import pytest

from otpguard.apikeys import create_api_key
from otpguard.clock import ManualClock
from otpguard.config import Settings
from otpguard.errors import NotFound
from otpguard.events import EventType
from otpguard.service import Verifier
from otpguard.stores.base import EventQuery
from otpguard.transports.memory import MemoryTransport

from .conftest import UK_MOBILE, ApiClient, open_api

OTHER_MOBILE = "+447400654321"


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 10 ** len(code):0{len(code)}d}"


# -- the Verifier ----------------------------------------------------------------------


async def test_a_newer_send_does_not_make_the_older_code_fail(
    verifier: Verifier, outbox: MemoryTransport, clock: ManualClock
) -> None:
    """Anyone who triggers a send to the number makes a newer verification; the code
    the user already has still approves its own (item 5)."""
    old = await verifier.start(UK_MOBILE, owner="key-a")
    old_code = outbox.last_code()
    clock.advance(1)
    new = await verifier.start(UK_MOBILE, owner="key-a")
    new_code = outbox.last_code()
    if new_code == old_code:  # one in a million: send the newer one again
        await verifier.cancel(new.id)
        new = await verifier.start(UK_MOBILE, owner="key-a")
        new_code = outbox.last_code()
    assert new_code != old_code
    r = await verifier.check(old_code, to=UK_MOBILE, owner="key-a")
    assert r.valid and r.verification.id == old.id
    after = await verifier.get(new.id)
    assert after.attempts == 1  # compared too (newest first): one attempt of its own
    r = await verifier.check(new_code, to="07400123456", owner="key-a")
    assert r.valid and r.verification.id == new.id


async def test_a_check_by_number_tries_only_that_keys_verifications(
    verifier: Verifier, outbox: MemoryTransport, clock: ManualClock
) -> None:
    theirs = await verifier.start(UK_MOBILE, owner="key-b")
    code = outbox.last_code()
    with pytest.raises(NotFound):
        await verifier.check(code, to=UK_MOBILE, owner="key-a")
    assert (await verifier.get(theirs.id)).attempts == 0
    r = await verifier.check(code, to=UK_MOBILE, owner="key-b")
    assert r.valid and r.verification.id == theirs.id


async def test_a_check_by_number_tries_at_most_five(
    verifier: Verifier, outbox: MemoryTransport, clock: ManualClock
) -> None:
    """Behind five newer pending verifications, the oldest is not compared (bounded
    work per check); with one of them gone, it is."""
    first = await verifier.start(UK_MOBILE, owner="k")
    code = outbox.last_code()
    decoys = []
    for i in range(5):
        clock.advance(1)
        decoy = first.with_(id=f"VE{i:032x}", created_at=clock(), code_hash="0" * 64)
        await verifier.store.create_verification(decoy)
        decoys.append(decoy)
    with pytest.raises(NotFound):
        await verifier.check(code, to=UK_MOBILE, owner="k")
    assert (await verifier.get(first.id)).attempts == 0
    await verifier.cancel(decoys[0].id)
    r = await verifier.check(code, to=UK_MOBILE, owner="k")
    assert r.valid and r.verification.id == first.id


async def test_v1_a_newer_send_does_not_make_the_older_code_fail(
    api: ApiClient, outbox: MemoryTransport, clock: ManualClock
) -> None:
    old = (await api.post("/v1/verifications", json={"to": UK_MOBILE})).json()["id"]
    old_code = outbox.last_code()
    clock.advance(1)
    r = await api.post("/v1/verifications", json={"to": UK_MOBILE})
    assert r.status_code == 201
    if outbox.last_code() == old_code:  # one in a million: send the newer one again
        await api.verifier.cancel(r.json()["id"])
        assert (await api.post("/v1/verifications", json={"to": UK_MOBILE})).status_code == 201
    assert outbox.last_code() != old_code
    r = await api.post("/v1/verifications/check", json={"to": UK_MOBILE, "code": old_code})
    assert r.status_code == 200 and r.json()["valid"] is True and r.json()["id"] == old


# -- item 4: no oracle, /v1 ------------------------------------------------------------


async def failed_checks(api: ApiClient, e164: str) -> int:
    return await api.verifier.store.count(f"failed_checks:{e164}", 3600, api.verifier.clock())


async def test_v1_check_by_number_answers_every_failure_alike(
    api: ApiClient, outbox: MemoryTransport
) -> None:
    """No pending code, a code of the wrong length, a wrong code: one answer, each
    counted under the per-number cap and written as an event."""
    r = await api.post("/v1/verifications", json={"to": UK_MOBILE})
    assert r.status_code == 201
    code = outbox.last_code()
    answers = []
    for to, tried in [
        (OTHER_MOBILE, "1234567"),  # nothing pending, wrong length
        (UK_MOBILE, "1234567"),  # pending, wrong length
        (OTHER_MOBILE, wrong(code)),  # nothing pending
        (UK_MOBILE, wrong(code)),  # pending, wrong code
    ]:
        r = await api.post("/v1/verifications/check", json={"to": to, "code": tried})
        answers.append((r.status_code, r.json()))
    assert len({repr(a) for a in answers}) == 1, answers
    assert answers[0][0] == 404
    assert await failed_checks(api, UK_MOBILE) == 2
    assert await failed_checks(api, OTHER_MOBILE) == 2
    events = await api.verifier.store.list_events(EventQuery(types=(EventType.CHECK_FAILED.value,)))
    assert len(events) == 4
    r = await api.post("/v1/verifications/check", json={"to": UK_MOBILE, "code": code})
    assert r.status_code == 200 and r.json()["valid"] is True
    assert await failed_checks(api, UK_MOBILE) == 2  # the right code was given back


async def test_v1_check_by_number_counts_toward_the_cap_without_a_pending_code(
    api: ApiClient,
) -> None:
    for _ in range(10):
        r = await api.post("/v1/verifications/check", json={"to": UK_MOBILE, "code": "123456"})
        assert r.status_code == 404
    r = await api.post("/v1/verifications/check", json={"to": UK_MOBILE, "code": "123456"})
    assert r.status_code == 429 and r.json()["error"]["rule"] == "failed_checks"


# -- item 4: no oracle, /v2 ------------------------------------------------------------


def basic(key: str) -> dict[str, str]:
    key_id = key.split("_")[1]
    token = base64.b64encode(f"og_{key_id}:{key}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


FORM = {"Content-Type": "application/x-www-form-urlencoded"}


async def v2_service(api: ApiClient, key: str) -> str:
    r = await api.post("/v2/Services", content="FriendlyName=Shop", headers={**basic(key), **FORM})
    assert r.status_code == 201, r.text
    sid: str = r.json()["sid"]
    return sid


async def test_v2_check_by_to_answers_every_failure_alike(
    api: ApiClient, outbox: MemoryTransport
) -> None:
    sid = await v2_service(api, api.key)
    h = {**basic(api.key), **FORM}
    r = await api.post(
        f"/v2/Services/{sid}/Verifications", content="To=%2B447400123456&Channel=sms", headers=h
    )
    assert r.status_code == 201, r.text
    code = outbox.last_code()
    answers = []
    for to, tried in [
        ("%2B447400654321", "1234567"),
        ("%2B447400123456", "1234567"),
        ("%2B447400654321", wrong(code)),
        ("%2B447400123456", wrong(code)),
    ]:
        r = await api.post(
            f"/v2/Services/{sid}/VerificationCheck", content=f"To={to}&Code={tried}", headers=h
        )
        answers.append((r.status_code, r.json()))
    assert len({repr(a) for a in answers}) == 1, answers
    assert answers[0][0] == 404 and answers[0][1]["code"] == 20404
    assert await failed_checks(api, UK_MOBILE) == 2
    r = await api.post(
        f"/v2/Services/{sid}/VerificationCheck",
        content=f"To=%2B447400123456&Code={code}",
        headers=h,
    )
    assert r.status_code == 200 and r.json()["status"] == "approved"


# -- item 7: tenancy -------------------------------------------------------------------


@pytest.fixture
async def two_keys(
    settings: Settings, clock: ManualClock, outbox: MemoryTransport
) -> AsyncIterator[tuple[ApiClient, str, str]]:
    """The app with its key (A), a second verify key (B) and an admin key (verify+admin)."""
    async with open_api(settings, clock, outbox) as api:
        _, other = await create_api_key(api.verifier.store, "other", ("verify",), clock())
        _, admin = await create_api_key(api.verifier.store, "admin", ("verify", "admin"), clock())
        yield api, other, admin


async def test_v1_another_keys_verification_is_not_found(
    two_keys: tuple[ApiClient, str, str], outbox: MemoryTransport
) -> None:
    api, other, admin = two_keys
    r = await api.post("/v1/verifications", json={"to": UK_MOBILE})
    vid = r.json()["id"]
    code = outbox.last_code()
    theirs = {"Authorization": f"Bearer {other}"}
    for method, url, body in [
        ("GET", f"/v1/verifications/{vid}", None),
        ("POST", f"/v1/verifications/{vid}/cancel", None),
        ("POST", f"/v1/verifications/{vid}/resend", {}),
        ("POST", "/v1/verifications/check", {"id": vid, "code": code}),
        ("POST", "/v1/verifications/check", {"to": UK_MOBILE, "code": code}),
    ]:
        r = await api.request(method, url, json=body, headers=theirs)
        assert r.status_code == 404, (url, r.text)
    v = await api.verifier.get(vid)
    assert (v.status.value, v.attempts, v.sends) == ("pending", 0, 1)
    r = await api.get(f"/v1/verifications/{vid}", headers={"Authorization": f"Bearer {admin}"})
    assert r.status_code == 200 and r.json()["id"] == vid
    r = await api.post("/v1/verifications/check", json={"id": vid, "code": code})
    assert r.json()["valid"] is True


async def test_v2_another_keys_service_is_not_found(
    two_keys: tuple[ApiClient, str, str], outbox: MemoryTransport
) -> None:
    api, other, admin = two_keys
    sid = await v2_service(api, api.key)
    theirs = {**basic(other), **FORM}
    base = f"/v2/Services/{sid}"
    for method, url, content in [
        ("GET", base, None),
        ("POST", base, "FriendlyName=Stolen"),
        ("DELETE", base, None),
        ("POST", f"{base}/Verifications", "To=%2B447400123456&Channel=sms"),
        ("POST", f"{base}/VerificationCheck", "To=%2B447400123456&Code=123456"),
    ]:
        r = await api.request(method, url, content=content, headers=theirs)
        assert r.status_code == 404 and r.json()["code"] == 20404, (method, url, r.text)
    assert outbox.outbox == []
    r = await api.get(base, headers=basic(api.key))
    assert r.status_code == 200 and r.json()["friendly_name"] == "Shop"
    r = await api.get(base, headers=basic(admin))
    assert r.status_code == 200
