"""``/docs`` renders the API in headless Chromium from files in the package: every
operation listed, nothing fetched from anywhere but the server itself."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .needs import CHROMIUM_ARGS, require_chromium
from .serverproc import Server, otpguard_server

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with otpguard_server(tmp_path_factory.mktemp("docs")) as running:
        yield running


@pytest.mark.browser
@pytest.mark.slow
def test_api_docs_list_every_operation_in_a_browser(server: Server) -> None:
    chromium = require_chromium()
    import httpx
    from playwright.sync_api import expect, sync_playwright

    spec = httpx.get(f"{server.base_url}/openapi.json", timeout=10).json()
    assert spec["openapi"].startswith("3.1")  # what Swagger UI 4 could not read
    operations = [(method.upper(), path) for path, item in spec["paths"].items() for method in item]
    assert ("POST", "/v1/verifications") in operations
    artifacts = ROOT / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    console_errors: list[str] = []
    requests: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on(
                "console", lambda m: console_errors.append(m.text) if m.type == "error" else None
            )
            page.on("request", lambda r: requests.append(r.url))
            page.goto(f"{server.base_url}/docs")
            expect(page.locator(".swagger-ui .info .title")).to_contain_text("otpguard")
            expect(page.locator(".opblock")).to_have_count(len(operations))
            for method, path in operations:
                block = page.locator(f".opblock-{method.lower()}", has_text=path)
                expect(block.first).to_be_visible()
            assert "valid version field" not in page.content()
            page.screenshot(path=str(artifacts / "api-docs.png"))
        finally:
            browser.close()
    assert console_errors == []
    assert requests and all(u.startswith(server.base_url) for u in requests)
