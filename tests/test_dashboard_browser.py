"""The dashboard end to end: the abuse scenario raises its alerts at a signed webhook,
then headless Chromium signs in to a real uvicorn server and sees them with the charts.

Screenshots go to test-artifacts/ (gitignored); docs/dashboard.png is refreshed only when
missing or with UPDATE_SCREENSHOTS=1, so a test run leaves the tree clean.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from otpguard.alerts import AlertEvaluator
from otpguard.apikeys import create_api_key
from otpguard.clock import ManualClock
from otpguard.config import Settings
from otpguard.service import Verifier
from otpguard.sinks import Dispatcher, WebhookSink
from otpguard.stores import store_from_url
from otpguard.transports.memory import MemoryTransport
from otpguard.web.app import create_app

from . import test_alerts
from .needs import CHROMIUM_ARGS, free_port, require_chromium
from .test_alerts import (
    HAMMERED,
    SCENARIO_SETTINGS,
    WEBHOOK_SECRET,
    Receiver,
    expected_ids,
    no_sleep,
    run_abuse_scenario,
)

receiver = test_alerts.receiver  # the real webhook receiver fixture

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"

pytestmark = [pytest.mark.browser, pytest.mark.slow]
LONG_NOTE = ("abuse ticket 12: " + "pumping from one range, reported by the carrier; " * 3).strip()

# What a person would see wrong, measured in the rendered page: sideways scrolling, a
# panel or cell whose content is cut off, text outside the screen, chart labels too
# small to read or on top of each other, a squashed chart.
LAYOUT_PROBLEMS = """() => {
  const vw = document.documentElement.clientWidth;
  const out = [];
  const name = el => `${el.tagName.toLowerCase()}#${el.id}.${el.className.baseVal ?? el.className}`
                     + ` "${el.textContent.trim().slice(0, 30)}"`;
  const shown = el => { const r = el.getBoundingClientRect(); return r.width > 0 && r.height > 0; };
  if (document.documentElement.scrollWidth > vw) {
    out.push(`the page scrolls sideways: ${document.documentElement.scrollWidth} > ${vw}`);
  }
  for (const el of document.querySelectorAll(".panel, .tile, .tile .v, td, th, h1, h2")) {
    if (shown(el) && el.scrollWidth > el.clientWidth + 1) {
      out.push(`cut off: ${name(el)} ${el.scrollWidth} > ${el.clientWidth}`);
    }
  }
  for (const el of document.querySelectorAll("main *, header *")) {
    const r = el.getBoundingClientRect();
    if (shown(el) && (r.left < -0.5 || r.right > vw + 0.5)) {
      out.push(`off screen: ${name(el)} ${r.left.toFixed(0)}..${r.right.toFixed(0)}`);
    }
  }
  for (const svg of document.querySelectorAll("svg.chart")) {
    if (!shown(svg)) continue;
    const box = svg.getBoundingClientRect();
    if (svg.classList.contains("traffic") && box.height < 200) {
      out.push(`squashed traffic chart: ${box.width.toFixed(0)} x ${box.height.toFixed(0)}`);
    }
    const scale = box.width / svg.viewBox.baseVal.width;  // the drawing is scaled to fit
    for (const t of svg.querySelectorAll("text")) {
      const px = parseFloat(getComputedStyle(t).fontSize) * scale;
      if (px < 11) out.push(`unreadable chart text ${name(t)}: ${px.toFixed(1)} px`);
    }
    const ticks = [...svg.querySelectorAll("text.tick")].map(t => t.getBoundingClientRect())
                                                       .sort((a, b) => a.left - b.left);
    for (let i = 1; i < ticks.length; i++) {
      if (ticks[i].left < ticks[i - 1].right + 2) out.push(`time labels overlap in ${name(svg)}`);
    }
  }
  return out;
}"""


async def check_what_a_person_sees(page: Any, shot: Path) -> None:
    """No layout problem; the currency shown with every spend; no reason repeated."""
    await page.screenshot(path=str(shot), full_page=True)
    assert await page.evaluate(LAYOUT_PROBLEMS) == [], shot.name
    spend = await page.inner_text("[data-tile='estimated spend'] .v")
    assert re.fullmatch(r"\d+\.\d\d USD", spend), spend
    assert await page.locator("[data-tile='estimated spend'] .v").is_visible()
    assert "(USD)" in await page.inner_text("#countries h2")
    for cell in await page.locator("#countries td[data-label=spend]").all_inner_texts():
        assert cell.endswith(" USD"), cell
    for cell in await page.locator("#events td[data-label=reason]").all_inner_texts():
        parts = re.split(r":\s*", cell.strip())
        assert len(parts) == len(set(parts)), cell


class ServerThread:
    """uvicorn serving ``app`` on 127.0.0.1 in a thread of its own."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> ServerThread:
        self.thread.start()
        for _ in range(400):  # waiting for start-up, not timing anything under test
            if self.server.started or not self.thread.is_alive():
                break
            await asyncio.sleep(0.025)
        assert self.server.started, "uvicorn did not start"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.should_exit = True
        await asyncio.to_thread(self.thread.join, 10)


async def test_dashboard_shows_the_scenario_alerts_and_charts(
    settings_factory: Callable[..., Settings],
    clock: ManualClock,
    receiver: Receiver,
    tmp_path: Path,
) -> None:
    chromium = require_chromium()
    from playwright.async_api import async_playwright

    settings = settings_factory(
        **{
            **SCENARIO_SETTINGS,
            "store": f"sqlite:///{tmp_path / 'monitor.db'}",
            "alert_webhook_url": receiver.url,
        }
    )

    # 1. The abuse scenario, evaluated: exactly the expected alerts reach the webhook.
    outbox = MemoryTransport()
    async with Verifier(settings, store_from_url(settings.store_url), outbox, clock=clock) as v:
        # Block and allow entries away from the scenario's numbers, a long note among them.
        await v.lists.add("+33612345678", "block", by="cli (ops)", note=LONG_NOTE, duration="7d")
        await v.lists.add("+4915", "allow", by="api key og_0123456789ab (ops)")
        await run_abuse_scenario(v, clock, outbox)
        dispatcher = Dispatcher([WebhookSink(receiver.url, WEBHOOK_SECRET, clock=clock)])
        dispatcher.sleep = no_sleep
        result = await AlertEvaluator(v, dispatcher).evaluate(clock())
        await dispatcher.join()
        await dispatcher.aclose()
        ids = expected_ids(v)
        _, admin = await create_api_key(v.store, "ops", ("admin",), clock())
        codes = [m.code for m in outbox.outbox]
    assert {a.id for a in result.opened} == ids
    assert {m["alert"]["id"] for m in receiver.received} == ids and receiver.rejected == 0

    # 2. The same store behind a real server; Chromium signs in.
    server_verifier = Verifier(
        settings, store_from_url(settings.store_url), MemoryTransport(), clock=clock
    )
    app = create_app(settings, server_verifier, clock=clock, background=False)
    ARTIFACTS.mkdir(exist_ok=True)
    problems: list[str] = []
    async with ServerThread(app) as server, async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(viewport={"width": 1280, "height": 900})
            page = await context.new_page()
            page.on(
                "console",
                lambda m: problems.append(m.text) if m.type in ("error", "warning") else None,
            )
            page.on("pageerror", lambda exc: problems.append(str(exc)))
            page.on(
                "request",
                lambda r: None if r.url.startswith(server.url) else problems.append(r.url),
            )

            await page.goto(f"{server.url}/dashboard")
            assert page.url == f"{server.url}/dashboard/login"
            await page.screenshot(path=str(ARTIFACTS / "dashboard-login.png"))
            await page.fill("#api_key", "og_000000000000_" + "x" * 43)
            await page.click("button[type=submit]")
            assert "not valid" in (await page.inner_text(".error"))
            assert problems == [
                "Failed to load resource: the server responded with a status of 401 (Unauthorized)"
            ]  # the refused sign-in, as expected
            problems.clear()
            await page.fill("#api_key", admin)
            await page.click("button[type=submit]")
            await page.wait_for_url(f"{server.url}/dashboard")

            alerts = await page.inner_text("#alerts")
            for rule in ("request_spike", "hot_number", "conversion_drop", "refused_destination"):
                assert rule in alerts
            assert alerts.count("open") >= 4
            assert "prefix +44740099" in alerts
            assert await page.locator("#alerts tbody tr").count() == 4
            assert await page.locator("#chart-traffic svg.wide polyline").count() == 4
            assert await page.locator("#chart-traffic svg.wide circle").count() > 0
            assert await page.locator("#chart-refusals svg rect.bar").count() >= 2
            refusals = await page.inner_text("#chart-refusals")
            assert "premium_rate" in refusals and "fraud:low_conversion" in refusals
            assert "+44******1111" in await page.inner_text("#top-numbers")
            assert "GB" in await page.inner_text("#countries")
            assert await page.inner_text("[data-tile='open alerts'] .v") == "4"
            assert await page.locator("#events tbody tr").count() == 50
            # The stylesheet applied (a CSP-blocked sheet would leave the default colour).
            colour = await page.eval_on_selector(".status-open", "e => getComputedStyle(e).color")
            assert colour == "rgb(214, 69, 69)"

            content = await page.content()
            assert HAMMERED not in content
            assert not any(code in content for code in codes)
            cookies = {c["name"]: c for c in await context.cookies()}
            session = cookies["otpguard_session"]
            assert session["httpOnly"] and session["sameSite"] == "Strict"

            # 3. What a person sees, on a laptop and on a phone, for an hour and a day.
            lists = await page.inner_text("#lists")
            assert "+33*****5678" in lists and LONG_NOTE in lists and "+4915" in lists
            assert "+33612345678" not in content
            reasons = await page.locator("#events td[data-label=reason]").all_inner_texts()
            assert "fraud:low_conversion" in reasons and "premium_rate" in reasons
            await check_what_a_person_sees(page, ARTIFACTS / "dashboard-1280.png")
            docs_shot = ROOT / "docs" / "dashboard.png"
            if not docs_shot.exists() or os.environ.get("UPDATE_SCREENSHOTS"):
                shutil.copyfile(ARTIFACTS / "dashboard-1280.png", docs_shot)
            await page.goto(f"{server.url}/dashboard?window=24h")
            await check_what_a_person_sees(page, ARTIFACTS / "dashboard-24h-1280.png")
            await page.set_viewport_size({"width": 390, "height": 844})
            await check_what_a_person_sees(page, ARTIFACTS / "dashboard-24h-390.png")
            await page.goto(f"{server.url}/dashboard")
            await check_what_a_person_sees(page, ARTIFACTS / "dashboard-390.png")
            # On the phone each alert is a card: its rule and message are on screen.
            first_alert = page.locator("#alerts tbody tr").first
            assert await first_alert.locator("td[data-label=what]").is_visible()

            await page.click(".logout button")
            await page.wait_for_url(f"{server.url}/dashboard/login")
            await page.goto(f"{server.url}/dashboard")
            assert page.url == f"{server.url}/dashboard/login"
        finally:
            await browser.close()
    assert problems == []
