"""Which /v2 service a verification belongs to is in its row (``Verification.service``):
a /v2 start writes no record of it, checks, fetches and the Attempts list read it from
the row or its events, and a verification started before rows named it (its service
kept in the old record) is still found under its service."""

from __future__ import annotations

import base64
import collections
from pathlib import Path

from otpguard.clock import ManualClock
from otpguard.events import EventType
from otpguard.stores.base import EventQuery
from otpguard.transports.memory import MemoryTransport
from otpguard.web.verify.services import OWNER_KEY

from .conftest import UK_MOBILE, ApiClient
from .test_bench_roundtrips import _bench

ROOT = Path(__file__).resolve().parent.parent
OTHER_MOBILE = "+447507123456"


def basic(key: str) -> dict[str, str]:
    token = base64.b64encode(f"og_{key.split('_')[1]}:{key}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


async def _service(api: ApiClient, name: str = "Acme") -> str:
    r = await api.http.post("/v2/Services", data={"FriendlyName": name}, headers=basic(api.key))
    assert r.status_code == 201, r.text
    return str(r.json()["sid"])


async def _start(api: ApiClient, sid: str, to: str = UK_MOBILE) -> str:
    r = await api.http.post(
        f"/v2/Services/{sid}/Verifications",
        data={"To": to, "Channel": "sms"},
        headers=basic(api.key),
    )
    assert r.status_code == 201, r.text
    return str(r.json()["sid"])


async def test_a_v2_start_names_its_service_in_the_row_and_events_only(api: ApiClient) -> None:
    sid = await _service(api)
    vid = await _start(api, sid)
    v = await api.verifier.get(vid)
    assert v.service == sid
    assert await api.verifier.store.get_flag(OWNER_KEY + vid, 0.0) is None  # no flag written
    events = await api.verifier.events(EventQuery(limit=10))
    mine = [e for e in events if e.verification_id == vid]
    assert {e.type for e in mine} == {EventType.STARTED.value, EventType.SENT.value}
    assert all(e.details.get("service") == sid for e in mine)


async def test_a_v2_start_and_check_call_the_store_no_more_than_that(
    api: ApiClient, clock: ManualClock, outbox: MemoryTransport
) -> None:
    """Beside the engine's own (the admission with the row, the sent event): the
    service and the number's newest verifications (a re-send?); the response's one
    send is the event the engine just stored, not read back. Before rows named their
    service, a start also read and wrote two flags (and the service was a flag too)."""
    calls: collections.Counter[str] = collections.Counter()
    _bench().counting(api.verifier.store, calls)
    sid = await _service(api)
    await _start(api, sid, OTHER_MOBILE)  # the webhook endpoints are read and cached
    clock.advance(40)
    calls.clear()
    await _start(api, sid)
    assert calls == {
        "get_service": 1,
        "list_pending": 1,
        "admit": 1,
        "add_events": 1,
    }
    calls.clear()
    r = await api.http.post(
        f"/v2/Services/{sid}/VerificationCheck",
        data={"To": UK_MOBILE, "Code": outbox.last_code(UK_MOBILE)},
        headers=basic(api.key),
    )
    assert r.json()["status"] == "approved"
    assert calls == {
        "get_service": 1,
        "hit": 1,
        "list_pending": 1,
        "record_attempt": 1,
        "settle": 1,
    }


async def test_a_starts_answer_lists_the_send_its_fetch_reads_back(
    api: ApiClient, clock: ManualClock
) -> None:
    """The start's one send, from the event the engine stored, is the one a fetch
    reads from the events (its attempt SID, time and channel); a re-send's answer
    lists both, as its fetch does."""
    sid = await _service(api)
    auth = basic(api.key)
    for to, channel in ((UK_MOBILE, "sms"), (OTHER_MOBILE, "call")):
        r = await api.http.post(
            f"/v2/Services/{sid}/Verifications", data={"To": to, "Channel": channel}, headers=auth
        )
        assert r.status_code == 201, r.text
        started = r.json()
        assert len(started["send_code_attempts"]) == 1
        assert started["send_code_attempts"][0]["channel"] == channel
        clock.advance(1)
        r = await api.http.get(f"/v2/Services/{sid}/Verifications/{started['sid']}", headers=auth)
        assert r.json()["send_code_attempts"] == started["send_code_attempts"]
    clock.advance(40)
    r = await api.http.post(
        f"/v2/Services/{sid}/Verifications", data={"To": UK_MOBILE, "Channel": "sms"}, headers=auth
    )
    again = r.json()
    assert len(again["send_code_attempts"]) == 2
    r = await api.http.get(f"/v2/Services/{sid}/Verifications/{again['sid']}", headers=auth)
    assert r.json()["send_code_attempts"] == again["send_code_attempts"]


async def test_a_verification_of_before_the_upgrade_is_found_by_its_old_record(
    api: ApiClient, clock: ManualClock, outbox: MemoryTransport
) -> None:
    """What the previous release left: a row without a service, the record naming it."""
    sid = await _service(api)
    other = await _service(api, "Other")
    verifier = api.verifier
    old = await verifier.start(UK_MOBILE, owner=api.key.split("_")[1])
    await verifier.store.set_flag(OWNER_KEY + old.id, sid, verifier.clock() + 86400)
    assert old.service is None
    auth = basic(api.key)
    r = await api.http.get(f"/v2/Services/{sid}/Verifications/{old.id}", headers=auth)
    assert r.status_code == 200 and r.json()["status"] == "pending"
    r = await api.http.get(f"/v2/Services/{other}/Verifications/{old.id}", headers=auth)
    assert r.status_code == 404
    r = await api.http.get("/v2/Attempts", params={"VerifyServiceSid": sid}, headers=auth)
    assert [a["verification_sid"] for a in r.json()["attempts"]] == [old.id]
    # A create re-sends on it (the same SID), as on any pending one of the service.
    clock.advance(40)
    assert await _start(api, sid) == old.id
    r = await api.http.post(
        f"/v2/Services/{sid}/VerificationCheck",
        data={"To": UK_MOBILE, "Code": outbox.last_code(UK_MOBILE)},
        headers=auth,
    )
    assert r.status_code == 200 and r.json()["sid"] == old.id
    assert r.json()["status"] == "approved"


async def test_a_verification_of_no_service_is_not_any_services(api: ApiClient) -> None:
    sid = await _service(api)
    plain = await api.verifier.start(UK_MOBILE, owner=api.key.split("_")[1])
    auth = basic(api.key)
    r = await api.http.get(f"/v2/Services/{sid}/Verifications/{plain.id}", headers=auth)
    assert r.status_code == 404
    r = await api.http.get("/v2/Attempts", headers=auth)
    assert r.json()["attempts"] == []
    assert await _start(api, sid) != plain.id  # not re-sent on: a new one of the service
