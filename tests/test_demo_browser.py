"""The ``/demo`` login page: its endpoints in-process, then the whole flow in headless Chromium
against a real ``otpguard serve`` (the code read from the file outbox, as a phone would)."""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from otpguard.clock import ManualClock
from otpguard.codes import new_secret_hex
from otpguard.config import Settings, load_settings
from otpguard.events import Event, EventType
from otpguard.service import Verifier
from otpguard.stores import store_from_url
from otpguard.transports.memory import MemoryTransport
from otpguard.web.app import create_app
from otpguard.web.demo import (
    MSG_INVALID_ADDRESS,
    MSG_INVALID_NUMBER,
    MSG_NO_LONGER_VALID,
    MSG_NOT_SENT,
)

from .conftest import make_settings
from .layout import LAYOUT_PROBLEMS
from .needs import CHROMIUM_ARGS, require_chromium
from .serverproc import Server, fresh_number, otpguard_server

ROOT = Path(__file__).resolve().parent.parent
BLOCKED = "+447400999999"
PEER = "203.0.113.9"


@dataclass
class Demo:
    http: httpx.AsyncClient
    app: object
    outbox: MemoryTransport
    clock: ManualClock
    events: list[Event]

    async def start(self, to: str, **kw: object) -> httpx.Response:
        return await self.http.post("/demo/api/start", json={"to": to}, **kw)  # type: ignore[arg-type]

    def code_for(self, verification_id: str) -> str:
        return [m.code for m in self.outbox.outbox if m.verification_id == verification_id][-1]

    def peer(self, address: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app, client=(address, 50001))  # type: ignore[arg-type]
        return httpx.AsyncClient(transport=transport, base_url="http://testserver")


@pytest.fixture
async def demo(tmp_path: Path, clock: ManualClock, outbox: MemoryTransport) -> AsyncIterator[Demo]:
    settings = make_settings(tmp_path, blocklist=[BLOCKED])
    events: list[Event] = []
    verifier = Verifier(
        settings, store_from_url(settings.store_url), outbox, clock=clock, listeners=[events.append]
    )
    app = create_app(settings, verifier, clock=clock, background=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=(PEER, 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield Demo(http, app, outbox, clock, events)


def production_settings(tmp_path: Path) -> Settings:
    return load_settings(
        env={"OTPGUARD_ENV": "production"},
        data_dir=tmp_path / "data",
        store="sqlite://:memory:",
        secret_keys=[new_secret_hex()],
        transport="twilio",
        twilio_account_sid="AC" + "0" * 32,
        twilio_auth_token="not-a-real-token",
        twilio_from="+447400000001",
        trusted_proxies=["127.0.0.0/8"],
    )


# -- in-process: the endpoints ---------------------------------------------------------


async def test_not_served_in_production(tmp_path: Path) -> None:
    settings = production_settings(tmp_path)
    verifier = Verifier(settings, store_from_url(settings.store_url), MemoryTransport())
    app = create_app(settings, verifier, background=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
        headers = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "198.51.100.7"}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://otp.example", headers=headers
        ) as http:
            assert (await http.get("/healthz")).status_code == 200  # the app does answer
            for method, path in [
                ("GET", "/demo"),
                ("GET", "/static/demo/demo.js"),
                ("GET", "/static/demo/demo.css"),
                ("POST", "/demo/api/start"),
                ("POST", "/demo/api/resend"),
                ("POST", "/demo/api/check"),
            ]:
                r = await http.request(method, path, json={"to": fresh_number()})
                assert r.status_code == 404, (method, path, r.status_code)
                assert r.json()["error"]["code"] == "not_found"


async def test_page_and_assets_are_package_files_under_the_page_csp(demo: Demo) -> None:
    page = await demo.http.get("/demo")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "style-src 'self'" in csp and "unsafe-inline" not in csp
    html = page.text
    assert re.findall(r"<script(?![^>]*\bsrc=)", html) == []  # no inline script
    assert "<style" not in html and " style=" not in html
    assert re.findall(r'(?:src|href)="(?:[a-z]+:)?//', html) == []  # nothing from another origin
    for name, kind in [("demo.js", "text/javascript"), ("demo.css", "text/css")]:
        r = await demo.http.get(f"/static/demo/{name}")
        assert r.status_code == 200 and r.headers["content-type"].startswith(kind)
        assert f"/static/demo/{name}" in html
    assert (await demo.http.get("/static/demo/demo.py")).status_code == 404


async def test_flow_without_an_api_key(demo: Demo) -> None:
    r = await demo.start("07400 123456")
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"id", "to", "channel", "code_length", "expires_in", "resend_in"}
    assert body["to"] == "+44******3456"
    assert body["expires_in"] == 300 and body["resend_in"] == 30 and body["code_length"] == 6
    code = demo.code_for(body["id"])
    assert code not in r.text

    wrong = str((int(code) + 1) % 1_000_000).zfill(6)
    bad = await demo.http.post("/demo/api/check", json={"id": body["id"], "code": wrong})
    assert bad.status_code == 400
    assert bad.json()["error"] == {
        "code": "wrong_code",
        "message": "That code isn't right. 4 attempts left.",
        "attempts_remaining": 4,
    }
    good = await demo.http.post("/demo/api/check", json={"id": body["id"], "code": code})
    assert good.status_code == 200 and good.json() == {"signed_in": True, "to": "+44******3456"}
    assert code not in bad.text + good.text
    again = await demo.http.post("/demo/api/check", json={"id": body["id"], "code": code})
    assert again.json()["error"]["message"] == MSG_NO_LONGER_VALID


async def test_refusals_all_look_the_same(demo: Demo) -> None:
    """Blocked, not allowed, rate-limited: one status, one body. The Verifier knows why."""
    hot = fresh_number()
    for _ in range(3):  # limit_phone 3/10m
        assert (await demo.start(hot)).status_code == 200
    refusals = [
        await demo.start(BLOCKED),
        await demo.start("+12025550123"),  # US, not in allowed_countries
        await demo.start(hot),
    ]
    for r in refusals:
        assert r.status_code == 400
        assert r.json() == {"error": {"code": "not_sent", "message": MSG_NOT_SENT}}
        assert "retry-after" not in r.headers
    reasons = [e.reason for e in demo.events if e.type == EventType.REFUSED.value]
    assert reasons == ["blocklisted", "country_not_allowed", "rate_limited"]

    invalid = await demo.start("12")
    assert invalid.json()["error"] == {"code": "invalid_number", "message": MSG_INVALID_NUMBER}


async def test_rate_limited_by_the_browser_address(demo: Demo) -> None:
    for _ in range(10):  # limit_ip 10/10m
        assert (await demo.start(fresh_number())).status_code == 200
    refused = await demo.start(fresh_number())
    assert refused.json()["error"]["code"] == "not_sent"
    last = [e for e in demo.events if e.type == EventType.REFUSED.value][-1]
    assert last.client_ip == PEER and last.rule is not None and last.rule.startswith("ip")
    async with demo.peer("198.51.100.77") as other:  # another browser is not affected
        r = await other.post("/demo/api/start", json={"to": fresh_number()})
        assert r.status_code == 200


async def test_resend_waits_out_the_cooldown(demo: Demo) -> None:
    body = (await demo.start(fresh_number())).json()
    early = await demo.http.post("/demo/api/resend", json={"id": body["id"]})
    assert early.status_code == 400
    assert early.json()["error"] == {
        "code": "wait",
        "message": "You can ask for a new code in 30 s.",
        "resend_in": 30,
    }
    first = demo.code_for(body["id"])
    demo.clock.advance(30)
    later = await demo.http.post("/demo/api/resend", json={"id": body["id"]})
    assert later.status_code == 200 and later.json()["resend_in"] == 60  # the cooldown doubles
    second = demo.code_for(body["id"])
    assert second != first and second not in later.text
    old = await demo.http.post("/demo/api/check", json={"id": body["id"], "code": first})
    assert old.json()["error"]["code"] == "wrong_code"
    new = await demo.http.post("/demo/api/check", json={"id": body["id"], "code": second})
    assert new.json()["signed_in"] is True


async def test_expired_and_malformed_codes(demo: Demo) -> None:
    body = (await demo.start(fresh_number())).json()
    short = await demo.http.post("/demo/api/check", json={"id": body["id"], "code": "12"})
    assert short.json()["error"] == {
        "code": "malformed_code",
        "message": "Enter the 6-digit code from the message.",
    }
    demo.clock.advance(301)
    late = await demo.http.post(
        "/demo/api/check", json={"id": body["id"], "code": demo.code_for(body["id"])}
    )
    assert late.json()["error"] == {"code": "no_longer_valid", "message": MSG_NO_LONGER_VALID}
    unknown = await demo.http.post("/demo/api/check", json={"id": "VE00", "code": "123456"})
    assert unknown.json()["error"]["code"] == "no_longer_valid"


async def test_cross_site_and_non_json_requests_are_refused(demo: Demo) -> None:
    to = fresh_number()
    cross = await demo.start(to, headers={"Sec-Fetch-Site": "cross-site"})
    assert cross.status_code == 403
    other_origin = await demo.start(to, headers={"Origin": "https://evil.example"})
    assert other_origin.status_code == 403
    form = await demo.http.post(
        "/demo/api/start", content=f'{{"to": "{to}"}}', headers={"Content-Type": "text/plain"}
    )
    assert form.status_code in (400, 422)
    same = await demo.start(to, headers={"Origin": "http://testserver"})
    assert same.status_code == 200
    assert len(demo.outbox.sent_to(to)) == 1  # only the same-origin request sent anything


# -- headless Chromium against a real server --------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with otpguard_server(tmp_path_factory.mktemp("demo")) as running:
        yield running


def national(e164: str) -> str:
    """+447400121234 -> '07400 121234', typed the way a UK user would."""
    digits = "0" + e164.removeprefix("+44")
    return f"{digits[:5]} {digits[5:]}"


@pytest.mark.browser
@pytest.mark.slow
def test_demo_login_in_a_browser(server: Server) -> None:
    chromium = require_chromium()
    from playwright.sync_api import expect, sync_playwright

    artifacts = ROOT / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    to = fresh_number()
    console_errors: list[str] = []
    requests: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        try:
            # A phone first (390 px, the narrowest common screen), then a laptop.
            page = browser.new_page(viewport={"width": 390, "height": 844})

            def looks_right(shot: str) -> None:
                """Screenshot, then nothing off screen, cut off or overlapping."""
                page.screenshot(path=str(artifacts / shot), full_page=True)
                assert page.evaluate(LAYOUT_PROBLEMS, "body, body *") == [], shot
                card = page.locator(".card").bounding_box()
                width = page.viewport_size["width"] if page.viewport_size else 0
                assert card is not None and card["x"] >= 0 and card["x"] + card["width"] <= width

            page.on(
                "console", lambda m: console_errors.append(m.text) if m.type == "error" else None
            )
            page.on("request", lambda r: requests.append(r.url))
            page.goto(f"{server.base_url}/demo")
            expect(page.locator("h1")).to_have_text("Sign in with your phone or email")
            looks_right("demo-390-phone-step.png")

            page.fill("#phone", "12")
            page.click("#send")
            expect(page.locator("#phone-error")).to_have_text(MSG_INVALID_NUMBER)

            page.fill("#phone", national(to))
            page.click("#send")
            expect(page.locator("#code-step")).to_be_visible()
            expect(page.locator("#sent-to")).to_have_text("+44******" + to[-4:])
            expect(page.locator("#resend")).to_be_disabled()
            expect(page.locator("#resend")).to_have_text(re.compile(r"Resend code in \d+ s"))

            expiry = page.locator("#expiry")
            expect(expiry).to_have_text(re.compile(r"Code expires in \d:\d\d"))
            m = re.search(r"(\d):(\d\d)", expiry.inner_text())
            assert m is not None
            left = int(m.group(1)) * 60 + int(m.group(2))
            assert 240 < left <= 300  # the 5-minute TTL, rendered (not waited for)

            code = server.last_code_to(to)  # the code, read where a phone would get it
            assert code not in page.content()
            wrong = str((int(code) + 1) % 1_000_000).zfill(6)
            page.fill("#code", wrong)
            page.click("#verify")
            expect(page.locator("#code-error")).to_have_text(
                "That code isn't right. 4 attempts left."
            )
            page.fill("#code", code)
            looks_right("demo-390-code-step.png")
            page.set_viewport_size({"width": 1280, "height": 800})
            looks_right("demo-1280-code-step.png")
            docs_shot = ROOT / "docs" / "demo.png"  # refreshed on request, to keep git quiet
            if not docs_shot.exists() or os.environ.get("UPDATE_SCREENSHOTS"):
                page.screenshot(path=str(docs_shot))
            page.set_viewport_size({"width": 390, "height": 844})
            page.click("#verify")
            expect(page.locator("#done")).to_be_visible()
            expect(page.locator("#signed-in-as")).to_have_text("+44******" + to[-4:])
            looks_right("demo-390-signed-in.png")

            # Again, by email: the field follows the channel.
            address = f"jo.{to[-6:]}@example.com"
            page.click("#again")
            page.check('input[name="channel"][value="email"]')
            expect(page.locator("#to-label")).to_have_text("Email address")
            assert page.get_attribute("#phone", "type") == "email"
            page.fill("#phone", "Jo Smith <jo@example.com>")
            page.click("#send")
            expect(page.locator("#phone-error")).to_have_text(MSG_INVALID_ADDRESS)
            page.fill("#phone", address.upper())
            page.click("#send")
            expect(page.locator("#sent-to")).to_have_text("j***@e***.com")
            page.fill("#code", server.last_code_to(address))
            page.click("#verify")
            expect(page.locator("#signed-in-as")).to_have_text("j***@e***.com")
            looks_right("demo-390-signed-in-email.png")
        finally:
            browser.close()

    # 400s for the refused number and the wrong code are logged as failed loads; anything
    # else (a CSP violation by an inline script or style, a script error) must not be.
    assert [e for e in console_errors if not e.startswith("Failed to load resource")] == []
    assert [e for e in console_errors if "404" in e] == []  # no missing asset
    assert requests and all(u.startswith(server.base_url) for u in requests)
    assert (artifacts / "demo-390-code-step.png").stat().st_size > 10_000
    assert (ROOT / "docs" / "demo.png").exists()
