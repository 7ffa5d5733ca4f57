"""The fake Twilio server itself, spoken to with plain HTTP and no event loop."""

from __future__ import annotations

import threading

import httpx

from ..fake_twilio import (
    ACCOUNT_SID,
    API_KEY,
    API_SECRET,
    AUTH_TOKEN,
    MAGIC_FROM,
    FakeTwilio,
    Fault,
)

MESSAGES = f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
SMS = {"To": "+447700900123", "From": MAGIC_FROM, "Body": "Acme code: 123456. Do not share."}


def test_creates_a_message_shaped_like_twilio_and_echoes_the_body() -> None:
    with FakeTwilio() as fake:
        r = httpx.post(fake.base_url + MESSAGES, data=SMS, auth=(ACCOUNT_SID, AUTH_TOKEN))

    assert r.status_code == 201
    resource = r.json()
    assert resource["sid"].startswith("SM") and len(resource["sid"]) == 34
    assert resource["status"] == "queued"
    assert resource["body"] == SMS["Body"]
    assert (resource["to"], resource["from"]) == (SMS["To"], MAGIC_FROM)
    assert fake.codes_sent_to("+447700900123") == ["123456"]
    assert fake.requests[0].form == SMS


def test_api_keys_work_and_anything_else_is_20003() -> None:
    with FakeTwilio() as fake:
        ok = httpx.post(fake.base_url + MESSAGES, data=SMS, auth=(API_KEY, API_SECRET))
        bad = httpx.post(fake.base_url + MESSAGES, data=SMS, auth=(ACCOUNT_SID, "nope"))
        none = httpx.post(fake.base_url + MESSAGES, data=SMS)

    assert ok.status_code == 201
    for r in (bad, none):
        assert r.status_code == 401
        assert r.json()["code"] == 20003
        assert set(r.json()) == {"code", "message", "more_info", "status"}


def test_magic_numbers_only_with_test_credentials() -> None:
    data = SMS | {"To": "+15005550001"}
    with FakeTwilio() as live, FakeTwilio(test_credentials=True) as test:
        assert (
            httpx.post(
                live.base_url + MESSAGES, data=data, auth=(ACCOUNT_SID, AUTH_TOKEN)
            ).status_code
            == 201
        )
        r = httpx.post(test.base_url + MESSAGES, data=data, auth=(ACCOUNT_SID, AUTH_TOKEN))

    assert (r.status_code, r.json()["code"]) == (400, 21211)
    assert r.json()["more_info"] == "https://www.twilio.com/docs/errors/21211"


def test_faults_apply_in_order_then_normal_service_resumes() -> None:
    with FakeTwilio() as fake:
        fake.fail_next(Fault.error(20429), Fault.error(status=500))
        statuses = [
            httpx.post(
                fake.base_url + MESSAGES, data=SMS, auth=(ACCOUNT_SID, AUTH_TOKEN)
            ).status_code
            for _ in range(3)
        ]

    assert statuses == [429, 500, 201]
    assert [r.status for r in fake.requests] == statuses


def test_a_stalled_request_waits_for_release() -> None:
    with FakeTwilio() as fake:
        fake.fail_next(Fault.stall())
        result: list[int] = []
        worker = threading.Thread(
            target=lambda: result.append(
                httpx.post(
                    fake.base_url + MESSAGES, data=SMS, auth=(ACCOUNT_SID, AUTH_TOKEN)
                ).status_code
            )
        )
        worker.start()
        assert fake.wait_stalled()
        assert result == []
        fake.release()
        worker.join(timeout=5)

    assert result == [201]


def test_reset_forgets_requests_and_faults() -> None:
    with FakeTwilio() as fake:
        fake.fail_next(Fault.drop())
        fake.reset()
        r = httpx.post(fake.base_url + MESSAGES, data=SMS, auth=(ACCOUNT_SID, AUTH_TOKEN))
        assert r.status_code == 201
        fake.reset()
        assert fake.requests == [] and fake.resources == {}
