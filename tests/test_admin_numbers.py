"""``/v1/admin/numbers`` over HTTP, and ``otpguard numbers block/allow/unblock/list``."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from otpguard.cli import main
from otpguard.clock import ManualClock
from otpguard.config import Settings
from otpguard.stores.base import EventQuery

from .conftest import UK_MOBILE

ADMIN = ("verify", "admin")
URL = "/v1/admin/numbers"


async def test_every_route_needs_the_admin_scope(
    api_factory: Callable[..., Any], settings: Settings
) -> None:
    for scopes in (("verify",), ("monitor",)):
        async with api_factory(settings, scopes=scopes) as api:
            for method, url, kw in (
                ("GET", URL, {}),
                ("POST", URL, {"json": {"number": UK_MOBILE, "kind": "block"}}),
                ("DELETE", f"{URL}/{UK_MOBILE}", {}),
            ):
                r = await api.request(method, url, **kw)
                assert r.status_code == 403, (scopes, method)
                assert r.json()["error"]["code"] == "forbidden"
                r = await api.request(method, url, headers={"Authorization": ""}, **kw)
                assert r.status_code == 401
            assert await api.verifier.lists.entries() == []


async def test_block_list_unblock(
    api_factory: Callable[..., Any], settings_factory: Callable[..., Settings], clock: ManualClock
) -> None:
    settings = settings_factory(blocklist=["+447557"])
    async with api_factory(settings, scopes=ADMIN) as api:
        body = {"number": "07400 123456", "kind": "block", "for": "7d", "note": "ticket <12>"}
        r = await api.post(URL, json=body)
        assert r.status_code == 201, r.text
        key_id = api.key.split("_")[1]
        assert r.json() == {
            "entry": {
                "number": UK_MOBILE, "kind": "block", "source": "runtime", "note": "ticket <12>",
                "created_by": f"api key og_{key_id} (tests)",
                "created_at": "2027-01-15T08:00:00Z", "expires_at": "2027-01-22T08:00:00Z",
            },
            "replaced": None,
        }  # fmt: skip
        r = await api.post("/v1/verifications", json={"to": UK_MOBILE})
        assert r.status_code == 403 and r.json()["error"]["reason"] == "blocklisted"
        r = await api.get(URL)
        listed = r.json()
        assert [(x["number"], x["source"]) for x in listed["entries"]] == [
            (UK_MOBILE, "runtime"), ("+447557", "config"),
        ]  # fmt: skip
        assert listed["counts"] == {
            "runtime": {"block": 1, "allow": 0}, "config": {"block": 1, "allow": 0},
        }  # fmt: skip
        assert listed["max_entries"] == 100_000
        r = await api.request("DELETE", f"{URL}/{UK_MOBILE}")
        assert r.status_code == 200 and r.json()["removed"]["number"] == UK_MOBILE
        assert (await api.post("/v1/verifications", json={"to": UK_MOBILE})).status_code == 201
        r = await api.request("DELETE", f"{URL}/{UK_MOBILE}")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
        r = await api.request("DELETE", f"{URL}/+447557")
        assert r.status_code == 409 and r.json()["error"]["reason"] == "configured"
        assert "OTPGUARD_BLOCKLIST" in r.json()["error"]["message"]
        events = await api.verifier.store.list_events(EventQuery(types=("number.blocked",)))
        assert [e.details["by"] for e in events] == [f"api key og_{key_id} (tests)"]


@pytest.mark.parametrize(
    ("body", "status", "text"),
    [
        ({"number": "hello", "kind": "block"}, 400, "not a number or prefix"),
        ({"number": UK_MOBILE, "kind": "mute"}, 422, "kind"),
        ({"number": UK_MOBILE, "kind": "block", "for": "soon"}, 400, "not a duration"),
        ({"number": UK_MOBILE, "kind": "block", "until": "2001-01-01"}, 400, "in the future"),
        ({"number": UK_MOBILE, "kind": "block", "note": "n" * 201}, 400, "at most 200"),
        ({"number": UK_MOBILE, "kind": "block", "extra": 1}, 422, "extra"),
    ],
)
async def test_bad_requests_are_named(
    api_factory: Callable[..., Any], settings: Settings, body: dict[str, Any], status: int,
    text: str,
) -> None:  # fmt: skip
    async with api_factory(settings, scopes=ADMIN) as api:
        r = await api.post(URL, json=body)
        assert r.status_code == status, r.text
        assert text in r.text
        assert await api.verifier.lists.entries() == []


async def test_the_cap_answers_409(
    api_factory: Callable[..., Any], settings_factory: Callable[..., Settings]
) -> None:
    async with api_factory(settings_factory(number_list_max=1), scopes=ADMIN) as api:
        assert (await api.post(URL, json={"number": "+4474", "kind": "allow"})).status_code == 201
        r = await api.post(URL, json={"number": "+4475", "kind": "block"})
        assert r.status_code == 409 and r.json()["error"]["reason"] == "number_list_full"


# -- the CLI ------------------------------------------------------------------------------


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in list(os.environ):
        if name.startswith(("OTPGUARD_", "TWILIO_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OTPGUARD_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("OTPGUARD_STORE", f"sqlite:///{tmp_path / 'lists.db'}")
    monkeypatch.setenv("OTPGUARD_BLOCKLIST", "+447557")
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = main(["numbers", *args])
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_block_allow_list_unblock(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "block", "+447400123456", "--until", "2099-01-01T00:00", "--note",
                     "abuse ticket 12")  # fmt: skip
    assert (rc, out) == (0, "blocked +447400123456 (until 2099-01-01 00:00 UTC)\n")
    rc, out, _ = run(capsys, "allow", "+447400999", "--for", "7d")
    assert rc == 0 and out.startswith("allowed +447400999 (until ")
    rc, out, _ = run(capsys, "allow", "+447400123456")
    assert (rc, out) == (0, "allowed +447400123456 (no expiry) (replaces its block entry)\n")
    rc, out, _ = run(capsys, "list")
    lines = out.splitlines()
    assert rc == 0 and lines[0].split() == [
        "KIND", "NUMBER", "EXPIRES", "(UTC)", "SOURCE", "ADDED", "BY", "NOTE",
    ]  # fmt: skip
    assert [line.split()[:2] for line in lines[1:]] == [
        ["allow", "+447400123456"], ["allow", "+447400999"], ["block", "+447557"],
    ]  # fmt: skip
    assert lines[1].split()[2:4] == ["never", "runtime"]
    assert lines[3].split()[2:] == ["never", "config", "-", "OTPGUARD_BLOCKLIST"]
    assert {line.index("+4474") for line in lines[1:3]} == {lines[0].index("NUMBER")}
    rc, out, _ = run(capsys, "list", "--json")
    assert [x["source"] for x in json.loads(out)] == ["runtime", "runtime", "config"]
    rc, out, _ = run(capsys, "unblock", "+447400123456")
    assert (rc, out) == (0, "removed the allow entry for +447400123456\n")
    rc, _, err = run(capsys, "unblock", "+447557")
    assert rc == 1 and "conflict: +447557 is in OTPGUARD_BLOCKLIST (the configuration)" in err
    rc, _, err = run(capsys, "unblock", "+447400123456")
    assert rc == 1 and "not_found" in err


def test_cli_refuses_bad_input_without_a_traceback(
    cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, _, err = run(capsys, "block", "+447400123456", "--for", "a week")
    assert rc == 1 and err.startswith("otpguard: invalid_request: ") and "not a duration" in err
    with pytest.raises(SystemExit):  # argparse: --for and --until exclude each other
        main(["numbers", "block", "+447400123456", "--for", "1d", "--until", "2099-01-01"])
    rc, out, _ = run(capsys, "list")
    assert rc == 0 and "+447400123456" not in out


# -- the dashboard --------------------------------------------------------------------------


async def test_the_dashboard_shows_the_lists_masked_and_escaped(
    api_factory: Callable[..., Any], settings_factory: Callable[..., Settings]
) -> None:
    settings = settings_factory(allowlist=["+447400999999"])
    async with api_factory(settings, scopes=("monitor",)) as api:
        await api.verifier.lists.add(
            UK_MOBILE, "block", by="cli (ops)", note='<script>alert("x")</script> ticket 12',
            duration="7d",
        )  # fmt: skip
        await api.verifier.lists.add("+3361", "allow", by="<b>ops</b>")
        page = await sign_in(api)
        assert page.status_code == 200
        panel = page.text[page.text.index('id="lists"') : page.text.index('id="events"')]
        assert "Block and allow lists" in panel
        assert 'data-tile="block"><span class="v">1</span>' in panel
        assert "block (1 run-time, 0 configured)" in panel
        assert "allow (1 run-time, 1 configured)" in panel
        assert "+44******3456" in panel and "+3361" in panel and UK_MOBILE not in page.text
        assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; ticket 12" in panel
        assert "<script>alert" not in page.text and "<b>ops" not in page.text
        assert '<time datetime="2027-01-22T08:00:00Z">2027-01-22 08:00</time>' in panel


async def test_the_dashboard_with_empty_lists(
    api_factory: Callable[..., Any], settings: Settings
) -> None:
    async with api_factory(settings, scopes=("monitor",)) as api:
        page = await sign_in(api)
        assert "No run-time entries" in page.text
        assert "block (0 run-time, 0 configured)" in page.text


async def sign_in(api: Any) -> Any:
    login = await api.http.get("/dashboard/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', login.text)
    assert csrf is not None
    r = await api.http.post("/dashboard/login", data={"csrf": csrf.group(1), "api_key": api.key})
    assert r.status_code == 303
    return await api.http.get("/dashboard")
