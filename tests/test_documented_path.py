# ruff: noqa: E501 - the docs' first lines are quoted exactly, however long
"""The documented path is tested as written: every fenced block of README.md and docs/*.md.

Each block is named by its file and its first line. It is either run here (a handler
in RUN), run by another test that reads it from the same file (ELSEWHERE), or listed
in NOT_RUN with the reason it cannot run on this machine. A new block in none of them
fails :func:`test_every_block_is_accounted_for`, and so does a listed block that is
no longer in the docs.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from otpguard.config import Settings
from otpguard.models import Channel
from otpguard.sinks import Notice
from otpguard.stores import store_from_url
from otpguard.stores.base import Alert
from otpguard.transports.base import Message
from otpguard.transports.file import read_outbox

from .backends import PG_ADMIN_URL
from .needs import unavailable
from .serverproc import Server, otpguard_server

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
VENV_BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Block:
    path: str  # relative to the repository
    line: int  # of the block's first line, for messages
    lang: str
    text: str

    @property
    def key(self) -> tuple[str, str]:
        return (self.path, self.text.splitlines()[0] if self.text else "")


def blocks() -> list[Block]:
    out = []
    for doc in DOCS:
        lines = doc.read_text().splitlines()
        i = 0
        while i < len(lines):
            m = re.match(r"^\s*```(\S*)\s*$", lines[i])
            if m:
                j = i + 1
                while not lines[j].lstrip().startswith("```"):
                    j += 1
                text = "\n".join(lines[i + 1 : j]) + "\n"
                out.append(Block(str(doc.relative_to(ROOT)), i + 2, m.group(1), text))
                i = j
            i += 1
    return out


def block(path: str, first_line: str) -> Block:
    [found] = [b for b in blocks() if b.key == (path, first_line)]
    return found


# -- what cannot run here, and why --------------------------------------------------------

NOT_RUN: dict[tuple[str, str], str] = {
    (
        "docs/deploying-at-scale.md",
        ".venv/bin/python bench/storage_size.py -n 5000 --stores sqlite,postgres",
    ): ("test_storage_size_command"),
    ("docs/abuse-defenses.md", ".venv/bin/python bench/attack_sim.py --speed 10"): (
        "the whole simulation takes about an hour of real time; tests/test_attack_sim.py "
        "runs the same script's --quick mode against a real server"
    ),
    (
        "README.md",
        "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/otpguard serve",
    ): (
        "installs from the package index (no network here); the serve it ends with is run "
        "below from README's quick start and docs/integrating.md"
    ),
    ("README.md", "./scripts/test.sh"): "runs this very test suite",
    ("README.md", "OTPGUARD_TRANSPORT=twilio TWILIO_ACCOUNT_SID=AC… TWILIO_AUTH_TOKEN=… \\"): (
        "needs real Twilio credentials (placeholders AC…); tests/test_twilio_engine.py runs "
        "the Twilio transport against tests/fake_twilio.py"
    ),
    ("README.md", "# before"): (
        "the Twilio SDK pointed at Twilio's cloud, then at https://otp.example.com; "
        "tests/test_verify_compat.py drives the same SDK calls against a local server"
    ),
    ("README.md", "otpguard audit: production configuration (otpguard.toml)"): (
        "production audit: needs the TLS certificate files and live Twilio credentials"
    ),
    ("docs/hardening.md", "otpguard audit: production configuration (otpguard.toml)"): (
        "production audit: needs the TLS certificate files and live Twilio credentials"
    ),
    (
        "docs/hardening.md",
        "PASS  remote.tls                  TLS with a verified certificate at https://otp.example.com",
    ): ("audit --remote of a production server with a real certificate"),
    ("docs/hardening.md", "Verifier.check, 2000 samples per case, store sqlite-file, by id"): (
        "benchmark output (bench/ scripts print figures; no timed assertions in tests)"
    ),
    (
        "docs/hardening.md",
        "case                          n      min      p50      p90      p99     mean  p50/base  P(>base)",
    ): ("benchmark output (bench/ scripts print figures; no timed assertions in tests)"),
    (
        "docs/hardening.md",
        "POST /v2/.../VerificationCheck, 1000 samples per case, store sqlite-file, by id",
    ): ("benchmark output (bench/ scripts print figures; no timed assertions in tests)"),
    (
        "docs/integrating.md",
        "browser ──(your login form)──> your app ──(Client, API key)──> otpguard ──> Twilio ──> phone",
    ): ("a diagram, not a command"),
    ("docs/migrating-from-twilio-verify.md", "from twilio.rest import Client"): (
        "the Twilio SDK pointed at Twilio's cloud or https://otp.example.com; "
        "tests/test_verify_compat.py drives the same SDK calls against a local server"
    ),
    ("docs/migrating-from-twilio-verify.md", "from twilio.rest import Client #2"): (
        "the Twilio SDK pointed at https://otp.example.com, a production server; "
        "tests/test_verify_compat.py drives the same SDK calls against a local server"
    ),
    (
        "docs/migrating-from-twilio-verify.md",
        'service = client.verify.v2.services.create(friendly_name="Acme Shop")',
    ): (
        "needs the SDK client above (https://otp.example.com); tests/test_verify_compat.py "
        "creates services with the SDK against a local server"
    ),
    (
        "docs/migrating-from-twilio-verify.md",
        'verify.verifications.create(to="+447400123456", channel="sms", device_ip=user_ip)',
    ): (
        "needs the SDK client above (https://otp.example.com); tests/test_verify_compat.py "
        "starts and checks with the SDK against a local server"
    ),
}

# Blocks another test reads from the same file and runs: (test file, function).
ELSEWHERE: dict[tuple[str, str], tuple[str, str]] = {
    (
        "docs/webhooks.md",
        "KEY_ID=$(otpguard api-keys create --name shop | tail -n 1 | cut -d_ -f2)",
    ): (
        "tests/test_webhooks_docs.py",
        "test_setup_commands",
    ),
    ("docs/webhooks.md", "{"): (
        "tests/test_webhooks_docs.py",
        "test_the_documented_payload_is_what_otpguard_posts",
    ),
    (
        "docs/webhooks.md",
        "Otpguard-Signature: t=1800000000,v1=17a2f71e47fce010af64e793e2cb93c6b6992012ae55d19dbde81ee66390ca99",
    ): ("tests/test_webhooks_docs.py", "test_the_documented_signature"),
    ("docs/webhooks.md", "from otpguard.client import WebhookSignatureError, verify_webhook"): (
        "tests/test_webhooks_docs.py",
        "test_the_python_receiver",
    ),
    ("README.md", "import asyncio"): (
        "tests/test_readme.py",
        "test_the_python_sample_prints_what_its_comment_says",
    ),
    (
        "docs/abuse-defenses.md",
        '{"error": {"code": "challenge_required", "message": "show the CAPTCHA and repeat the start with its challenge_token", "reason": "challenge_required", "challenge": {"provider": "turnstile", "site_key": "0x4AAAAAAAfakeSiteKey"}}}',
    ): (
        "tests/test_challenge_docs.py",
        "test_the_documented_428_body_is_the_servers",
    ),
    ("docs/abuse-defenses.md", "from otpguard import ChallengeRequired, Client"): (
        "tests/test_challenge_docs.py",
        "test_the_documented_backend_function",
    ),
    ("docs/email.md", "from otpguard import Client"): (
        "tests/test_email_docs.py",
        "test_the_client_sample_prints_what_its_comment_says",
    ),
    ("docs/email.md", "OTPGUARD_EMAIL_TRANSPORT=smtp"): (
        "tests/test_email_docs.py",
        "test_the_configuration_blocks_start",
    ),
    ("docs/email.md", "OTPGUARD_EMAIL_TRANSPORT=sendgrid"): (
        "tests/test_email_docs.py",
        "test_the_configuration_blocks_start",
    ),
}

# Blocks run here: their key and the test that runs them.
RUN: dict[tuple[str, str], str] = {
    ("README.md", "# 1. an API key for your backend (printed once, alone on the last line)"): (
        "test_readme_quick_start_against_otpguard_serve"
    ),
    (
        "docs/integrating.md",
        "otpguard serve            # development mode, console transport, http://127.0.0.1:8000",
    ): ("test_readme_quick_start_against_otpguard_serve"),
    ("README.md", "otpguard audit: development configuration"): "test_development_audit_output",
    ("docs/hardening.md", "otpguard audit: development configuration"): (
        "test_development_audit_output"
    ),
    ("docs/hardening.md", 'env = "production"'): "test_toml_names_only_settings",
    (
        "docs/deploying-at-scale.md",
        "OTPGUARD_STORE=postgresql://otpguard:secret@db.internal:5432/otpguard?sslmode=require&pool_max_size=20",
    ): ("test_store_urls_are_accepted"),
    ("docs/redis.md", "OTPGUARD_STORE=redis://127.0.0.1:6379/0"): "test_store_urls_are_accepted",
    ("docs/monitoring.md", '{"source": "otpguard", "state": "opened",'): (
        "test_webhook_payload_is_what_the_sink_sends"
    ),
    ("docs/abuse-defenses.md", "HTTP/1.1 429 Too Many Requests"): "test_429_answers",
    ("docs/abuse-defenses.md", "HTTP/1.1 429 Too Many Requests #2"): "test_429_answers",
    (
        "docs/migrating-from-twilio-verify.md",
        '{"code": 60203, "message": "Max send attempts reached",',
    ): ("test_twilio_shaped_60203"),
    (
        "docs/integrating.md",
        "export OTPGUARD_API_KEY=$(otpguard api-keys create --name my-app | tail -n 1)  # shown once",
    ): ("test_shell_blocks_creating_keys"),
    ("docs/migrating-from-twilio-verify.md", "otpguard api-keys create --name shop-backend"): (
        "test_shell_blocks_creating_keys"
    ),
    (
        "docs/integrating.md",
        "from otpguard import Client          # AsyncClient has the same methods, awaited",
    ): ("test_client_sample"),
    ("docs/integrating.md", "from otpguard import load_settings, open_verifier"): (
        "test_embedded_samples"
    ),
    ("docs/integrating.md", "from otpguard import load_settings"): "test_embedded_samples",
    ("docs/twilio.md", "import pytest"): ("test_fake_twilio_sample"),
    ("docs/integrating.md", "from otpguard import Client"): "test_purpose_sample",
    (
        "docs/abuse-defenses.md",
        'otpguard numbers block +447400123456 --for 7d --note "abuse ticket 12"',
    ): ("test_number_list_blocks"),
    (
        "docs/abuse-defenses.md",
        'curl -s -X POST "$OTPGUARD_URL/v1/admin/numbers" -H "Authorization: Bearer $OTPGUARD_ADMIN_KEY" \\',
    ): ("test_number_list_blocks"),
}


def keyed() -> dict[tuple[str, str], Block]:
    """Every block by its key; a first line repeated in one file gets ' #2', ' #3'."""
    out: dict[tuple[str, str], Block] = {}
    for b in blocks():
        key = b.key
        n = 1
        while key in out:
            n += 1
            key = (b.path, f"{b.key[1]} #{n}")
        out[key] = b
    return out


def doc_block(path: str, first: str) -> Block:
    return keyed()[(path, first)]


def test_every_block_is_accounted_for() -> None:
    found = keyed()
    listed = [*NOT_RUN, *ELSEWHERE, *RUN]
    assert len(listed) == len(set(listed)), "a block is listed twice"
    unlisted = [f"{b.path}:{b.line} {k[1]!r}" for k, b in found.items() if k not in listed]
    assert unlisted == [], "new blocks: run them here or say in NOT_RUN why they cannot run"
    stale = [k for k in listed if k not in found]
    assert stale == [], "listed blocks no longer in the docs"
    for path, func in ELSEWHERE.values():
        assert f"def {func}(" in (ROOT / path).read_text(), (path, func)
    here = Path(__file__).read_text()
    for func in RUN.values():
        assert f"def {func}(" in here, func


# -- fast: blocks checked without a server ---------------------------------------------------


def test_toml_names_only_settings() -> None:
    sample = tomllib.loads(doc_block("docs/hardening.md", 'env = "production"').text)
    assert set(sample) <= set(Settings.model_fields), set(sample) - set(Settings.model_fields)


def test_store_urls_are_accepted() -> None:
    lines = [
        *doc_block("docs/redis.md", "OTPGUARD_STORE=redis://127.0.0.1:6379/0").text.splitlines(),
        *keyed()[
            (
                "docs/deploying-at-scale.md",
                "OTPGUARD_STORE=postgresql://otpguard:secret@db.internal:5432/otpguard"
                "?sslmode=require&pool_max_size=20",
            )
        ].text.splitlines(),
    ]
    assert len(lines) == 8
    for line in lines:
        url = line.split("#")[0].strip().removeprefix("OTPGUARD_STORE=")
        store_from_url(url)  # parses the URL and its options; connects to nothing


def test_webhook_payload_is_what_the_sink_sends() -> None:
    documented = json.loads(
        doc_block("docs/monitoring.md", '{"source": "otpguard", "state": "opened",').text
    )
    alert = Alert(**documented["alert"])
    assert Notice(documented["state"], alert).payload() == documented


# -- slow: blocks run against a real otpguard -------------------------------------------------


class Lazy(dict[str, Any]):
    """A sample's namespace: names it assumes (``typed``) computed when first read."""

    def __init__(self, lazy: dict[str, Callable[[], Any]], **names: Any) -> None:
        super().__init__(names)
        self.lazy = lazy

    def __missing__(self, name: str) -> Any:
        if name in self.lazy:
            return self.lazy[name]()
        raise KeyError(name)


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTPGUARD_", "TWILIO_"))}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"  # `otpguard` as installed
    return env | extra


def bash(script: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-e", "-c", script], env=env, cwd=cwd, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with otpguard_server(tmp_path_factory.mktemp("documented")) as running:
        yield running


@pytest.mark.slow
def test_shell_blocks_creating_keys(server: Server, tmp_path: Path) -> None:
    env = clean_env(**{k: v for k, v in server.env.items() if k.startswith("OTPGUARD_")})
    env.pop("OTPGUARD_API_KEY", None)
    integrating = doc_block(
        "docs/integrating.md",
        "export OTPGUARD_API_KEY=$(otpguard api-keys create --name my-app | tail -n 1)"
        "  # shown once",
    )
    listing = bash(integrating.text + 'echo "$OTPGUARD_API_KEY $OTPGUARD_URL"\n', env, tmp_path)
    assert listing.returncode == 0, listing.stderr
    key, url = listing.stdout.split()
    assert re.fullmatch(r"og_[0-9a-f]{12}_\S+", key) and url == "https://otp.internal.example"
    migrating = doc_block(
        "docs/migrating-from-twilio-verify.md", "otpguard api-keys create --name shop-backend"
    )
    created = bash(migrating.text, env, tmp_path)
    assert created.returncode == 0, created.stderr
    # prints the key once: og_3f9a1c0d2b7e_<secret>
    assert re.fullmatch(r"og_[0-9a-f]{12}_\S+", created.stdout.splitlines()[-1])
    names = server.cli("api-keys", "list").stdout
    assert "my-app" in names and "shop-backend" in names


@pytest.mark.slow
def test_client_sample(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    sample = doc_block(
        "docs/integrating.md",
        "from otpguard import Client          # AsyncClient has the same methods, awaited",
    )
    monkeypatch.setenv("OTPGUARD_URL", server.base_url)
    monkeypatch.setenv("OTPGUARD_API_KEY", server.api_key)
    signed_in: list[str] = []
    names = Lazy(
        {"typed": lambda: server.last_code(names["session"]["verification_id"])},
        user_ip="203.0.113.7",
        session={},
        sign_in=signed_in.append,
        account_with_number=lambda number: f"account of {number}",
    )
    exec(compile(sample.text, sample.path, "exec"), {}, names)  # noqa: S102 - our own docs
    assert names["result"].valid and signed_in == ["account of +447400123456"]
    names["otp"].close()


@pytest.mark.slow
def test_purpose_sample(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """The payment sample approves its payment, and its SMS is worded as it says."""
    sample = doc_block("docs/integrating.md", "from otpguard import Client")
    monkeypatch.setenv("OTPGUARD_URL", server.base_url)
    monkeypatch.setenv("OTPGUARD_API_KEY", server.api_key)
    paid: list[tuple[str, ...]] = []
    names = Lazy(
        {"typed": lambda: server.last_code(names["v"].id)},
        user_ip="203.0.113.8",
        pay=lambda *what: paid.append(what),
    )
    exec(compile(sample.text, sample.path, "exec"), {}, names)  # noqa: S102 - our own docs
    assert names["result"].valid and paid == [("25.00", "GBP", "Acme Ltd")]
    names["otp"].close()
    shown = re.search(r'# The SMS reads: "(.*) \.\.\."', sample.text)
    assert shown is not None
    sms = Message(
        verification_id="VE1", to="+447400123456", channel=Channel.SMS, code="482913",
        service_name="Acme", ttl_seconds=300, amount="GBP 25.00", payee="Acme Ltd",
    )  # fmt: skip
    assert sms.render_text().startswith(shown.group(1))


@pytest.mark.slow
def test_embedded_samples(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for k in [k for k in os.environ if k.startswith(("OTPGUARD_", "TWILIO_"))]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("OTPGUARD_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("OTPGUARD_TRANSPORT", "file")  # the code read as a phone would
    outbox = tmp_path / "data" / "outbox.jsonl"
    for first in (
        "from otpguard import load_settings, open_verifier",
        "from otpguard import load_settings",
    ):
        sample = doc_block("docs/integrating.md", first)
        names = Lazy({"typed": lambda: read_outbox(outbox)[-1]["code"]}, user_ip="203.0.113.7")
        code = compile(sample.text, sample.path, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        outcome = eval(code, {}, names)  # noqa: S307 - our own docs
        if outcome is not None:
            asyncio.run(outcome)
        assert names["result"].valid, first


@pytest.mark.slow
def test_429_answers(server: Server) -> None:
    """The documented 429s are the server's: status, Retry-After, the error's fields."""
    to = "+447400776655"
    auth = {"Authorization": f"Bearer {server.api_key}"}
    for _ in range(3):  # limit_phone 3/10m
        r = httpx.post(f"{server.base_url}/v1/verifications", headers=auth, json={"to": to})
        assert r.status_code == 201, r.text
    r = httpx.post(f"{server.base_url}/v1/verifications", headers=auth, json={"to": to})
    for key in [("docs/abuse-defenses.md", "HTTP/1.1 429 Too Many Requests"),
                ("docs/abuse-defenses.md", "HTTP/1.1 429 Too Many Requests #2")]:  # fmt: skip
        head, body = keyed()[key].text.split("\n\n", 1)
        status, header = head.splitlines()
        documented = json.loads(body)
        assert status == f"HTTP/1.1 {r.status_code} {r.reason_phrase}"
        assert header.split(":")[0].lower() in r.headers
        answer = r.json()
        assert set(answer["error"]) == set(documented["error"])
        assert answer["error"]["code"] == documented["error"]["code"] == "rate_limited"
        assert int(r.headers["retry-after"]) == answer["error"]["retry_after"]
    assert answer["error"]["rule"] == "phone"


def json_values(text: str) -> list[Any]:
    """Every JSON value of ``text``, one after another (curl prints bodies back to back)."""
    decoder, out, i = json.JSONDecoder(), [], 0
    while i < len(text.rstrip()):
        value, i = decoder.raw_decode(text, i)
        out.append(value)
        while i < len(text) and text[i].isspace():
            i += 1
    return out


@pytest.mark.slow
def test_number_list_blocks(tmp_path: Path) -> None:
    """The documented list commands, then the admin calls, on a real server's store: the
    block refuses the server's next start, the unblock lets it through."""
    key = (
        "docs/abuse-defenses.md",
        'otpguard numbers block +447400123456 --for 7d --note "abuse ticket 12"',
    )
    commands = keyed()[key].text.splitlines()
    assert commands[-1] == "otpguard numbers unblock +447400123456"
    number, start = "+447400123456", "/v1/verifications"
    with otpguard_server(tmp_path) as server:
        env = clean_env(**{k: v for k, v in server.env.items() if k.startswith("OTPGUARD_")})
        auth = {"Authorization": f"Bearer {server.api_key}"}
        ran = bash("\n".join(commands[:-1]), env, tmp_path)
        assert ran.returncode == 0, ran.stderr
        out = ran.stdout.splitlines()
        assert out[0].startswith("blocked +447400123456 (until ") and out[0].endswith(" UTC)")
        assert out[1:3] == ["blocked +44740099 (until 2030-01-01 00:00 UTC)",
                            "allowed +447400555000 (no expiry)"]  # fmt: skip
        assert out[3].split()[:3] == ["KIND", "NUMBER", "EXPIRES"]
        assert [line.split()[:2] for line in out[4:]] == [
            ["allow", "+447400555000"], ["block", "+44740099"], ["block", number],
        ]  # fmt: skip
        assert "abuse ticket 12" in out[6] and "range pumped on 2 Dec" in out[5]
        r = httpx.post(f"{server.base_url}{start}", headers=auth, json={"to": number})
        assert r.status_code == 403 and r.json()["error"]["reason"] == "blocklisted"
        ran = bash(commands[-1], env, tmp_path)
        assert ran.stdout == f"removed the block entry for {number}\n", ran.stderr
        r = httpx.post(f"{server.base_url}{start}", headers=auth, json={"to": number})
        assert r.status_code == 201, r.text
        created = server.cli("api-keys", "create", "--name", "ops", "--scope", "admin")
        admin = created.stdout.splitlines()[-1]
        curl = keyed()[("docs/abuse-defenses.md", RUN_CURL)].text
        env |= {"OTPGUARD_URL": server.base_url, "OTPGUARD_ADMIN_KEY": admin}
        ran = bash(curl, env, tmp_path)
        assert ran.returncode == 0, ran.stderr
        posted, listed, removed = json_values(ran.stdout)
    assert posted["entry"] | {"created_at": None, "expires_at": None} == {
        "number": number, "kind": "block", "source": "runtime", "note": "abuse ticket 12",
        "created_by": "api key og_" + admin.split("_")[1] + " (ops)",
        "created_at": None, "expires_at": None,
    }  # fmt: skip
    assert [x["number"] for x in listed["entries"]] == [number, "+447400555000", "+44740099"]
    assert removed == {"removed": posted["entry"], "still_configured": False}


RUN_CURL = 'curl -s -X POST "$OTPGUARD_URL/v1/admin/numbers" -H "Authorization: Bearer $OTPGUARD_ADMIN_KEY" \\'


def comment_json(comment: str) -> dict[str, Any]:
    """``# {"id":"VE3f…","sends":1,…}`` -> the fields it shows that are not elided."""
    pairs = re.findall(r'"(\w+)":("[^"]*"|[\w.]+|…)', comment)
    return {k: json.loads(v) for k, v in pairs if "…" not in v}


@pytest.mark.slow
def test_readme_quick_start_against_otpguard_serve(tmp_path: Path) -> None:
    """`otpguard serve` as docs/integrating.md has it, then README's quick start through
    bash and curl, the code read from the server's terminal as step 3 says."""
    with contextlib.closing(socket.socket()) as s:
        try:
            s.bind(("127.0.0.1", 8000))
        except OSError:
            unavailable("127.0.0.1:8000 (the documented address) is in use")
    (tmp_path / ".venv").symlink_to(Path(sys.prefix))  # README's .venv/bin/otpguard
    env = clean_env()
    serve = doc_block(
        "docs/integrating.md",
        "otpguard serve            # development mode, console transport, http://127.0.0.1:8000",
    )
    terminal = tmp_path / "terminal.txt"
    with terminal.open("wb") as out:
        proc = subprocess.Popen(["bash", "-c", "exec " + serve.text.strip()], env=env,
                                cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, terminal.read_text()
            try:
                if httpx.get("http://127.0.0.1:8000/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, terminal.read_text()
            time.sleep(0.05)  # waiting for the server to start, not testing time
        quick = doc_block(
            "README.md", "# 1. an API key for your backend (printed once, alone on the last line)"
        ).text
        steps_1_2, rest = quick.split("# 3.", 1)
        step_4 = rest[rest.index("# 4.") :]
        # One bash reads the block from its stdin; the id and code it shows as VE3f… and
        # 482913 are the ones this run got (a newline lets the answer be read as a line).
        shell = subprocess.Popen(["bash"], env=env, cwd=tmp_path, stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        assert shell.stdin is not None and shell.stdout is not None
        shell.stdin.write(steps_1_2 + "echo\n")
        shell.stdin.flush()
        started = json.loads(shell.stdout.readline())
        shown = comment_json(steps_1_2.split("\n# {", 1)[1])
        assert {k: started[k] for k in shown} == shown
        m = re.search(r"otpguard code: (\d+)\. Valid for 5 min", terminal.read_text())
        assert m and "[otpguard console transport] sms to +447400123456" in terminal.read_text()
        out, err = shell.communicate(
            step_4.replace("VE3f…", started["id"]).replace("482913", m.group(1)), timeout=60
        )
        assert shell.returncode == 0, err
        checked = json.loads(out)
        assert {k: checked[k] for k in comment_json(step_4)} == comment_json(step_4)
        assert checked["valid"] is True
    finally:
        proc.terminate()
        proc.wait(timeout=15)


@pytest.mark.slow
def test_storage_size_command(tmp_path: Path) -> None:
    """The sizing command as written but for fewer verifications (5 000 take minutes):
    it prints a figure per backend in its JSON line."""
    try:
        import psycopg

        psycopg.connect(PG_ADMIN_URL, connect_timeout=3).close()
    except Exception as exc:  # any reason it cannot connect
        unavailable(f"PostgreSQL at {PG_ADMIN_URL}: {exc}")
    (tmp_path / ".venv").symlink_to(Path(sys.prefix))
    (tmp_path / "bench").symlink_to(ROOT / "bench")
    command = doc_block(
        "docs/deploying-at-scale.md",
        ".venv/bin/python bench/storage_size.py -n 5000 --stores sqlite,postgres",
    ).text.strip()
    assert "-n 5000" in command
    done = bash(command.replace("-n 5000", "-n 20") + f" --pg-admin {PG_ADMIN_URL}",
                clean_env(), tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    for backend in ("sqlite", "postgres"):
        assert 0 < figures[backend]["retained"] <= figures[backend]["live"], figures  # pages


@pytest.mark.slow
def test_development_audit_output(tmp_path: Path) -> None:
    """`otpguard audit` in a fresh directory prints what both docs show, line for line
    (the sampled digit frequencies aside)."""
    ran = subprocess.run([str(VENV_BIN / "otpguard"), "audit"], env=clean_env(), cwd=tmp_path,
                         capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    freq = re.compile(r"frequencies \d\.\d+-\d\.\d+")

    def lines(text: str) -> list[str]:
        return [freq.sub("frequencies …", line).rstrip() for line in text.strip().splitlines()]

    for path in ("README.md", "docs/hardening.md"):
        documented = doc_block(path, "otpguard audit: development configuration").text
        assert lines(ran.stdout) == lines(documented), path


@pytest.mark.slow
def test_twilio_shaped_60203(server: Server) -> None:
    """The /v2 answer to a re-send within the cooldown is the documented body, field for field."""
    documented = json.loads(
        doc_block(
            "docs/migrating-from-twilio-verify.md",
            '{"code": 60203, "message": "Max send attempts reached",',
        ).text
    )
    auth = httpx.BasicAuth("og_" + server.api_key.split("_")[1], server.api_key)
    with httpx.Client(base_url=server.base_url, auth=auth) as http:
        sid = http.post("/v2/Services", data={"FriendlyName": "Acme Shop"}).json()["sid"]
        ok = http.post(f"/v2/Services/{sid}/Verifications", data={"To": "+447400554433", "Channel": "sms"})  # fmt: skip
        assert ok.status_code == 201, ok.text
        r = http.post(f"/v2/Services/{sid}/Verifications", data={"To": "+447400554433", "Channel": "sms"})  # fmt: skip
    assert r.status_code == 429 and r.json() == documented


@pytest.mark.slow
def test_fake_twilio_sample() -> None:
    """docs/twilio.md's sketch, with the name it assumes: a message to +447700900123."""
    from otpguard.models import Channel
    from otpguard.transports.base import Message

    sample = doc_block("docs/twilio.md", "import pytest")
    message = Message("VE" + "0" * 32, "+447700900123", Channel.SMS, "482913", "otpguard", 300)
    names = Lazy({}, message=message)
    code = compile(sample.text, sample.path, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    asyncio.run(eval(code, {}, names))  # noqa: S307 - our own docs
    assert names["callback"] is not None and names["receipt"].provider_id
