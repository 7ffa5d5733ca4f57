"""Answers tell the truth: once a message left or an approval committed, the answer
says so, whatever fails afterwards. The failure is made in the store itself: a SQLite
trigger that aborts the event write (as a full disk would), after the send or the
approval has happened."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from otpguard.models import Status
from otpguard.service import Verifier
from otpguard.transports.memory import MemoryTransport

from .conftest import UK_MOBILE
from .test_verify_scope import basic


def fail_event_writes(db: Path, event_type: str) -> None:
    """From now on, storing an event of ``event_type`` fails inside the store."""
    with sqlite3.connect(db) as conn:
        conn.execute(
            f"CREATE TRIGGER fail_{event_type.replace('.', '_')} BEFORE INSERT ON events "
            f"WHEN NEW.type = '{event_type}' BEGIN SELECT RAISE(ABORT, 'disk full'); END"
        )


async def test_a_sent_message_is_answered_as_sent(
    api_factory: Callable[..., Any],
    settings_factory: Callable[..., Any],
    tmp_path: Path,
    outbox: MemoryTransport,
) -> None:
    db = tmp_path / "otp.db"
    settings = settings_factory(store=f"sqlite:///{db}")
    async with api_factory(settings) as api:
        await api.verifier.store.health()  # the schema exists
        fail_event_writes(db, "verification.sent")
        r: httpx.Response = await api.post("/v1/verifications", json={"to": UK_MOBILE})
        assert r.status_code == 201, r.text
        assert r.json()["delivery"] == "sent"
        assert len(outbox.outbox) == 1  # the code went out, and the answer says so


async def test_a_committed_approval_is_answered_as_approved(
    api_factory: Callable[..., Any],
    settings_factory: Callable[..., Any],
    tmp_path: Path,
    outbox: MemoryTransport,
) -> None:
    db = tmp_path / "otp.db"
    settings = settings_factory(store=f"sqlite:///{db}")
    async with api_factory(settings) as api:
        r = await api.post("/v1/verifications", json={"to": UK_MOBILE})
        vid = r.json()["id"]
        fail_event_writes(db, "check.passed")
        r = await api.post("/v1/verifications/check", json={"id": vid, "code": outbox.last_code()})
        assert r.status_code == 200, r.text
        assert r.json()["valid"] is True and r.json()["status"] == "approved"
        verifier: Verifier = api.verifier
        stored = await verifier.store.get_verification(vid)
        assert stored is not None and stored.status is Status.APPROVED


async def test_a_v2_start_whose_sent_event_was_lost_lists_no_send_it_cannot_show(
    api_factory: Callable[..., Any],
    settings_factory: Callable[..., Any],
    tmp_path: Path,
    outbox: MemoryTransport,
) -> None:
    """The code went out (201), but its event is not stored: the answer lists the
    sends the store holds (none), never an attempt SID the Attempts API cannot find."""
    db = tmp_path / "otp.db"
    settings = settings_factory(store=f"sqlite:///{db}")
    async with api_factory(settings) as api:
        auth = basic(api.key)
        r = await api.http.post("/v2/Services", data={"FriendlyName": "Acme"}, headers=auth)
        sid = r.json()["sid"]
        fail_event_writes(db, "verification.sent")
        r = await api.http.post(
            f"/v2/Services/{sid}/Verifications",
            data={"To": UK_MOBILE, "Channel": "sms"},
            headers=auth,
        )
        assert r.status_code == 201, r.text
        assert len(outbox.outbox) == 1
        assert r.json()["send_code_attempts"] == []
        r = await api.http.get("/v2/Attempts", headers=auth)
        assert r.json()["attempts"] == []
