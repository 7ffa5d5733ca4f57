"""``/demo`` with the challenge step on (``OTPGUARD_CHALLENGE_MODE=always``): its endpoint
in-process, then the whole flow in headless Chromium against a real ``otpguard serve``
that checks tokens with the fake siteverify server (start -> challenge -> token -> code)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from otpguard.clock import ManualClock
from otpguard.service import Verifier
from otpguard.stores import store_from_url
from otpguard.transports.memory import MemoryTransport
from otpguard.web.app import create_app
from otpguard.web.demo import MSG_CHALLENGE, MSG_CHALLENGE_FAILED, MSG_NOT_SENT

from .conftest import make_settings
from .fake_siteverify import SITE_KEY, FakeSiteverify, challenge_server, fake_siteverify, siteverify
from .needs import CHROMIUM_ARGS, require_chromium
from .serverproc import Server, fresh_number

__all__ = ["challenge_server", "fake_siteverify", "siteverify"]  # fixtures, for pytest

ROOT = Path(__file__).resolve().parent.parent


async def test_demo_start_asks_for_the_challenge_then_sends(
    tmp_path: Path, clock: ManualClock, outbox: MemoryTransport, fake_siteverify: FakeSiteverify
) -> None:
    settings = make_settings(tmp_path, **fake_siteverify.settings(challenge_mode="always"))
    verifier = Verifier(settings, store_from_url(settings.store_url), outbox, clock=clock)
    app = create_app(settings, verifier, clock=clock, background=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("203.0.113.9", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            to = fresh_number()
            first = await http.post("/demo/api/start", json={"to": to})
            assert first.status_code == 428
            assert first.json() == {
                "error": {
                    "code": "challenge_required",
                    "reason": "challenge_required",
                    "message": MSG_CHALLENGE,
                    "challenge": {"provider": "turnstile", "site_key": SITE_KEY},
                }
            }
            forged = await http.post(
                "/demo/api/start", json={"to": to, "challenge_token": "XXXX.FAKE.forged"}
            )
            assert forged.status_code == 428
            assert forged.json()["error"]["message"] == MSG_CHALLENGE_FAILED
            token = fake_siteverify.issue()
            ok = await http.post("/demo/api/start", json={"to": to, "challenge_token": token})
            assert ok.status_code == 200 and len(outbox.sent_to(to)) == 1
            again = await http.post("/demo/api/start", json={"to": to, "challenge_token": token})
            assert again.status_code == 428  # a token admits one start
            fake_siteverify.mode = "error"
            down = await http.post(
                "/demo/api/start", json={"to": to, "challenge_token": fake_siteverify.issue()}
            )
            assert down.status_code == 400
            assert down.json() == {"error": {"code": "not_sent", "message": MSG_NOT_SENT}}
            assert len(outbox.sent_to(to)) == 1


@pytest.mark.browser
@pytest.mark.slow
def test_demo_challenge_step_in_a_browser(
    challenge_server: Server, siteverify: FakeSiteverify
) -> None:
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
            page = browser.new_page(viewport={"width": 720, "height": 720})
            page.on(
                "console", lambda m: console_errors.append(m.text) if m.type == "error" else None
            )
            page.on("request", lambda r: requests.append(r.url))
            page.goto(f"{challenge_server.base_url}/demo")
            page.fill("#phone", to)
            page.click("#send")

            expect(page.locator("#challenge-step")).to_be_visible()
            expect(page.locator("#challenge-message")).to_have_text(MSG_CHALLENGE)
            expect(page.locator("#challenge-provider")).to_have_text("turnstile")
            widget = page.locator("#challenge-widget")
            expect(widget).to_have_class("challenge-widget cf-turnstile")
            expect(widget).to_have_attribute("data-sitekey", SITE_KEY)
            expect(page.locator("#code-step")).to_be_hidden()

            page.fill("#challenge-token", "XXXX.FAKE.forged")
            page.click("#challenge-submit")
            expect(page.locator("#challenge-error")).to_have_text(MSG_CHALLENGE_FAILED)
            with pytest.raises(LookupError):
                challenge_server.last_code_to(to)  # nothing was sent

            page.fill("#challenge-token", siteverify.issue())
            page.screenshot(path=str(artifacts / "demo-challenge-step.png"))
            page.click("#challenge-submit")
            expect(page.locator("#code-step")).to_be_visible()
            expect(page.locator("#sent-to")).to_have_text("+44******" + to[-4:])
            code = challenge_server.last_code_to(to)
            page.fill("#code", code)
            page.click("#verify")
            expect(page.locator("#done")).to_be_visible()
        finally:
            browser.close()

    assert [e for e in console_errors if not e.startswith("Failed to load resource")] == []
    assert requests and all(u.startswith(challenge_server.base_url) for u in requests)
    assert siteverify.requests and all(r.form.get("remoteip") for r in siteverify.requests)
