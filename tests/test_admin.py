"""The /v1/admin API, event retention, and the dashboard's sign-in over HTTP."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from itsdangerous.encoding import base64_decode, base64_encode, bytes_to_int, int_to_bytes

from otpguard.apikeys import create_api_key
from otpguard.clock import ManualClock
from otpguard.config import Settings
from otpguard.errors import OtpguardError
from otpguard.service import Verifier
from otpguard.stores.base import EventQuery
from otpguard.transports.memory import MemoryTransport

from .conftest import UK_MOBILE, ApiClient

ADMIN = ("verify", "admin")
OTHER = "+447400654321"


async def traffic(v: Verifier, outbox: MemoryTransport, clock: ManualClock) -> None:
    """Two numbers, one approved; a premium-rate refusal; a phone rate limit."""
    await v.start(UK_MOBILE, client_ip="192.0.2.1")
    assert (await v.check(outbox.last_code(UK_MOBILE), to=UK_MOBILE)).valid
    clock.advance(60)
    await v.start(OTHER, client_ip="192.0.2.2")
    with pytest.raises(OtpguardError):
        await v.start("+449012345678", client_ip="192.0.2.2")
    for _ in range(2):
        clock.advance(1)
        await v.start(OTHER, client_ip="192.0.2.2")
    with pytest.raises(OtpguardError):
        await v.start(OTHER, client_ip="192.0.2.2")  # the fourth in 10 minutes


async def test_admin_routes_need_the_admin_scope(
    api_factory: Callable[..., Any], settings: Settings
) -> None:
    async with api_factory(settings, scopes=("verify",)) as api:
        for url in ("/v1/admin/stats", "/v1/admin/events", "/v1/admin/alerts"):
            r = await api.get(url)
            assert r.status_code == 403, url
            assert r.json()["error"]["code"] == "forbidden"
            assert (await api.get(url, headers={"Authorization": ""})).status_code == 401


async def test_stats(
    api_factory: Callable[..., Any], settings: Settings, outbox: MemoryTransport, clock: ManualClock
) -> None:
    async with api_factory(settings, scopes=ADMIN) as api:
        await traffic(api.verifier, outbox, clock)
        r = await api.get("/v1/admin/stats", params={"window": "1h"})
        assert r.status_code == 200
        body = r.json()
    assert body["totals"] == {
        "requests": 6,  # 4 started + 2 refused
        "started": 4,
        "sends": 4,
        "approved": 1,
        "refused": 2,
        "checks_failed": 0,
        "delivery_failures": 0,
    }
    assert body["conversion"]["overall"] == 0.25
    assert body["conversion"]["by_country"] == [
        {"country": "GB", "started": 4, "approved": 1, "conversion": 0.25}
    ]
    top = body["top_numbers"]
    assert top[0]["number"] == "+44******4321" and top[0]["count"] == 4
    assert sorted((t["number"], t["count"]) for t in top[1:]) == [
        ("+44******3456", 1),
        ("+44******5678", 1),  # the premium-rate attempt is a request too
    ]
    assert [(t["ip"], t["count"]) for t in body["top_ips"]] == [
        ("192.0.2.2", 5),
        ("192.0.2.1", 1),
    ]
    assert {r["reason"]: r["count"] for r in body["refusals_by_reason"]} == {
        "premium_rate": 1,
        "rate_limited:phone": 1,
    }
    assert body["estimated_spend"]["total"] == pytest.approx(4 * 0.04)
    assert sum(b["requests"] for b in body["series"]) == 6
    text = r.text
    assert UK_MOBILE not in text and OTHER not in text
    assert not any(m.code in text for m in outbox.outbox)


async def test_stats_window(
    api_factory: Callable[..., Any], settings: Settings, outbox: MemoryTransport, clock: ManualClock
) -> None:
    async with api_factory(settings, scopes=ADMIN) as api:
        await api.verifier.start(UK_MOBILE)
        clock.advance(7200)
        await api.verifier.start(OTHER)
        one = (await api.get("/v1/admin/stats?window=1h")).json()
        three = (await api.get("/v1/admin/stats?window=3h")).json()
        assert one["totals"]["started"] == 1 and three["totals"]["started"] == 2
        for bad in ("1y", "0m", "99d", "abc"):
            r = await api.get("/v1/admin/stats", params={"window": bad})
            assert r.status_code == 400, bad


async def test_events_filters_and_pages(
    api_factory: Callable[..., Any], settings: Settings, outbox: MemoryTransport, clock: ManualClock
) -> None:
    async with api_factory(settings, scopes=ADMIN) as api:
        await traffic(api.verifier, outbox, clock)

        async def events(**params: Any) -> list[dict[str, Any]]:
            r = await api.get("/v1/admin/events", params=params)
            assert r.status_code == 200, r.text
            found: list[dict[str, Any]] = r.json()["events"]
            return found

        # Any spelling of the number finds its events, by keyed hash.
        for spelling in (OTHER, "07400 654321", "+44 7400 654321"):
            got = await events(number=spelling)
            assert {e["number_masked"] for e in got} == {"+44******4321"}
            assert len(got) == 7  # 3 started + 3 sent + 1 refused
        assert {e["type"] for e in await events(type="request.refused")} == {"request.refused"}
        both = await events(type=["check.passed", "request.refused"])
        assert sorted(e["type"] for e in both) == ["check.passed"] + ["request.refused"] * 2
        assert {e["client_ip"] for e in await events(ip="192.0.2.1")} == {"192.0.2.1"}
        assert len(await events(country="GB")) > 0
        assert await events(country="FR") == []
        start = clock() - 1.5
        assert all(e["ts"] >= start for e in await events(since=start))
        assert all(e["ts"] < start for e in await events(until=start))

        everything = await events(limit=500)
        seen: list[str] = []
        before = None
        while True:
            params: dict[str, Any] = {"limit": 3}
            if before:
                params["before"] = before
            r = (await api.get("/v1/admin/events", params=params)).json()
            seen += [e["id"] for e in r["events"]]
            before = r["next_before"]
            if before is None:
                break
        assert seen == [e["id"] for e in everything]
        assert len(set(seen)) == len(seen)

        assert (await api.get("/v1/admin/events", params={"number": "nope"})).status_code == 400
        assert (await api.get("/v1/admin/events", params={"ip": "nope"})).status_code == 400
        text = (await api.get("/v1/admin/events", params={"limit": 500})).text
        assert UK_MOBILE not in text and OTHER not in text


async def test_alerts_endpoint_lists_open_and_recent(
    api_factory: Callable[..., Any], settings_factory: Callable[..., Settings], clock: ManualClock
) -> None:
    settings = settings_factory(alert_ip_threshold=2, limit_phone="100/10m")
    async with api_factory(settings, scopes=ADMIN) as api:
        for i in range(3):
            await api.verifier.start(f"+4474001000{i:02d}", client_ip="203.0.113.4")
        r = await api.post("/v1/admin/alerts/evaluate")
        assert [a["id"] for a in r.json()["opened"]] == ["hot_ip:203.0.113.4"]
        body = (await api.get("/v1/admin/alerts")).json()
        assert [a["id"] for a in body["open"]] == ["hot_ip:203.0.113.4"]
        assert body["open"][0]["details"]["requests"] == 3
        assert body["recent"] == []
        clock.advance(601)
        await api.post("/v1/admin/alerts/evaluate")
        body = (await api.get("/v1/admin/alerts")).json()
        assert body["open"] == []
        assert [(a["id"], a["status"]) for a in body["recent"]] == [
            ("hot_ip:203.0.113.4", "resolved")
        ]


# -- retention ----------------------------------------------------------------------------


async def test_events_keep_a_masked_number_and_are_purged_after_retention(
    settings_factory: Callable[..., Settings], clock: ManualClock, outbox: MemoryTransport
) -> None:
    from otpguard.stores import store_from_url

    s = settings_factory(event_retention_days=30)
    async with Verifier(s, store_from_url(s.store_url), outbox, clock=clock) as v:
        await v.start(UK_MOBILE)
        events = await v.store.list_events(EventQuery())
        assert {e.number_masked for e in events} == {"+44******3456"}
        assert {e.number_hash for e in events} == {v.keyring.keyed_hash("number", UK_MOBILE)}
        assert all(UK_MOBILE not in e.to_json() for e in events)

        clock.advance(29 * 86400)
        await v.purge()
        assert len(await v.store.list_events(EventQuery())) == len(events)
        clock.advance(2 * 86400)
        await v.purge()
        assert await v.store.list_events(EventQuery()) == []


# -- the dashboard over HTTP ----------------------------------------------------------------


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, "no CSRF field"
    return m.group(1)


async def sign_in(api: ApiClient, key: str) -> httpx.Response:
    page = await api.http.get("/dashboard/login")
    return await api.http.post(
        "/dashboard/login",
        data={"csrf": csrf_of(page.text), "api_key": key},
    )


async def test_dashboard_redirects_to_sign_in(
    api_factory: Callable[..., Any], settings: Settings
) -> None:
    async with api_factory(settings, scopes=ADMIN) as api:
        r = await api.http.get("/dashboard")
        assert r.status_code == 303 and r.headers["location"] == "/dashboard/login"
        page = await api.http.get("/dashboard/login")
        assert page.status_code == 200
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert "<script>" not in page.text and "style=" not in page.text


async def test_sign_in_sets_a_strict_cookie_and_shows_the_dashboard(
    api_factory: Callable[..., Any], settings: Settings, outbox: MemoryTransport, clock: ManualClock
) -> None:
    async with api_factory(settings, scopes=ADMIN) as api:
        await traffic(api.verifier, outbox, clock)
        r = await sign_in(api, api.key)
        assert r.status_code == 303 and r.headers["location"] == "/dashboard"
        cookie = next(
            c for c in r.headers.get_list("set-cookie") if c.startswith("otpguard_session=")
        )
        flags = cookie.lower()
        assert "httponly" in flags and "samesite=strict" in flags and "path=/dashboard" in flags
        assert "secure" not in flags  # development over plain HTTP
        page = await api.http.get("/dashboard")
        assert page.status_code == 200
        assert "Requests and conversions over time" in page.text
        assert "<svg" in page.text and "+44******4321" in page.text
        assert "premium_rate" in page.text
        assert UK_MOBILE not in page.text and OTHER not in page.text
        assert not any(m.code in page.text for m in outbox.outbox)
        assert "style=" not in page.text and "<script>" not in page.text
        css = await api.http.get("/static/dashboard/dashboard.css")
        assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
        assert (await api.http.get("/static/dashboard/../app.py")).status_code == 404

        # Signing out needs the page's CSRF token, and ends the session for good.
        forged = await api.http.post("/dashboard/logout", data={"csrf": "x"})
        assert forged.status_code == 403
        assert (await api.http.get("/dashboard")).status_code == 200
        token = csrf_of(page.text)
        session = api.http.cookies.get("otpguard_session")
        out = await api.http.post("/dashboard/logout", data={"csrf": token})
        assert out.status_code == 303
        api.http.cookies.set("otpguard_session", session, path="/dashboard")  # replayed
        assert (await api.http.get("/dashboard")).status_code == 303


async def test_sign_in_refusals(
    api_factory: Callable[..., Any], settings: Settings, clock: ManualClock
) -> None:
    async with api_factory(settings, scopes=ADMIN) as api:
        _, verify_only = await create_api_key(api.verifier.store, "app", ("verify",), clock())
        assert (await sign_in(api, verify_only)).status_code == 403
        assert (await sign_in(api, "og_nope")).status_code == 401
        # Without the CSRF cookie's token the form is refused.
        r = await api.http.post("/dashboard/login", data={"csrf": "forged", "api_key": api.key})
        assert r.status_code == 403
        assert "otpguard_session" not in api.http.cookies
        # A forged or tampered session cookie is no session.
        assert (await sign_in(api, api.key)).status_code == 303
        good = api.http.cookies.get("otpguard_session")
        assert good is not None
        payload, signed_at, mac = good.rsplit(".", 2)
        later = base64_encode(int_to_bytes(bytes_to_int(base64_decode(signed_at)) + 9999))
        api.http.cookies.set(
            "otpguard_session", f"{payload}.{later.decode()}.{mac}", path="/dashboard"
        )
        assert (await api.http.get("/dashboard")).status_code == 303


async def test_revoking_the_key_ends_its_sessions(
    api_factory: Callable[..., Any], settings: Settings, clock: ManualClock
) -> None:
    async with api_factory(settings, scopes=ADMIN) as api:
        assert (await sign_in(api, api.key)).status_code == 303
        assert (await api.http.get("/dashboard")).status_code == 200
        key_id = api.key.split("_")[1]
        assert await api.verifier.store.revoke_api_key(key_id, clock())
        assert (await api.http.get("/dashboard")).status_code == 303


async def test_sessions_expire(
    api_factory: Callable[..., Any], settings: Settings, clock: ManualClock
) -> None:
    async with api_factory(settings, scopes=ADMIN) as api:
        assert (await sign_in(api, api.key)).status_code == 303
        clock.advance(8 * 3600 + 1)
        assert (await api.http.get("/dashboard")).status_code == 303


async def test_cookies_are_secure_in_production(
    api_factory: Callable[..., Any], settings_factory: Callable[..., Settings]
) -> None:
    # (``env`` is also load_settings' own argument name, hence model_copy.)
    settings = settings_factory(
        transport="twilio",
        trusted_proxies=["203.0.113.0/24"],
        twilio_account_sid="AC" + "0" * 32,
        twilio_auth_token="t" * 32,
        twilio_from="+15005550006",
    )
    settings = settings.model_copy(update={"env": "production"})
    async with api_factory(settings, scopes=ADMIN) as api:
        api.http.headers["X-Forwarded-Proto"] = "https"
        page = await api.http.get("/dashboard/login")
        assert page.status_code == 200, page.text
        m = re.search(r"otpguard_csrf=([^;]+);[^,]*[Ss]ecure", page.headers["set-cookie"])
        assert m, page.headers["set-cookie"]
        # httpx keeps Secure cookies for https only; the proxy header says https here.
        api.http.cookies.set("otpguard_csrf", m.group(1), path="/dashboard")
        r = await api.http.post(
            "/dashboard/login", data={"csrf": csrf_of(page.text), "api_key": api.key}
        )
        assert r.status_code == 303
        cookie = next(
            c for c in r.headers.get_list("set-cookie") if c.startswith("otpguard_session=")
        )
        assert "; secure" in cookie.lower()
