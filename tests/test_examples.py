"""The example apps under examples/ (Flask, FastAPI, Django), each driven in-process by its
own test client while it talks to a real ``otpguard serve`` subprocess through
otpguard.Client. Codes are read from the server's file outbox, as a phone would.
Each example is also started the way its docstring says, in one command."""

from __future__ import annotations

import ast
import contextlib
import html
import importlib.util
import os
import re
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

import httpx
import pytest

from otpguard.client import AsyncClient, Client

from .serverproc import Server, free_port, fresh_number, otpguard_server

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
FRAMEWORKS = ["flask", "fastapi", "django"]
BLOCKED = "+447400999999"


def load(name: str) -> ModuleType:
    """Import examples/<name>.py as a top-level module (Django's ROOT_URLCONF needs that)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


class Browser(Protocol):
    async def get(self, path: str) -> str: ...
    async def post(self, path: str, **form: str) -> str: ...


class FlaskBrowser:
    def __init__(self, app: Any, ip: str) -> None:
        self.client = app.test_client()
        self.ip = ip

    async def get(self, path: str) -> str:
        r = self.client.get(path, environ_base={"REMOTE_ADDR": self.ip})
        assert r.status_code == 200
        return html.unescape(r.get_data(as_text=True))

    async def post(self, path: str, **form: str) -> str:
        r = self.client.post(
            path, data=form, follow_redirects=True, environ_base={"REMOTE_ADDR": self.ip}
        )
        assert r.status_code == 200
        return html.unescape(r.get_data(as_text=True))


class HttpxBrowser:
    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def get(self, path: str) -> str:
        r = await self.http.get(path)
        assert r.status_code == 200
        return html.unescape(r.text)

    async def post(self, path: str, **form: str) -> str:
        r = await self.http.post(path, data=form)
        assert r.status_code == 200
        return html.unescape(r.text)


class DjangoBrowser:
    def __init__(self, ip: str) -> None:
        from django.test import Client as DjangoClient

        self.client = DjangoClient(enforce_csrf_checks=True, REMOTE_ADDR=ip)

    def _csrf(self) -> str:
        r = self.client.get("/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', r.content.decode())
        assert token is not None, "the page has no CSRF token"
        return token.group(1)

    async def get(self, path: str) -> str:
        r = self.client.get(path)
        assert r.status_code == 200
        return html.unescape(r.content.decode())

    async def post(self, path: str, **form: str) -> str:
        data = {**form, "csrfmiddlewaretoken": self._csrf()}
        r = self.client.post(path, data, follow=True)
        assert r.status_code == 200
        return html.unescape(r.content.decode())


@contextlib.asynccontextmanager
async def browser(framework: str, url: str, api_key: str, ip: str) -> AsyncIterator[Browser]:
    if framework == "flask":
        with Client(url, api_key) as otp:
            yield FlaskBrowser(load("flask_app").create_app(otp), ip)
    elif framework == "fastapi":
        app = load("fastapi_app").create_app(AsyncClient(url, api_key))
        async with app.router.lifespan_context(app):  # closes the AsyncClient on exit
            transport = httpx.ASGITransport(app=app, client=(ip, 50000))
            async with httpx.AsyncClient(
                transport=transport, base_url="http://testserver", follow_redirects=True
            ) as http:
                yield HttpxBrowser(http)
    else:
        from django.test import override_settings

        load("django_app")
        with override_settings(OTPGUARD_URL=url, OTPGUARD_API_KEY=api_key):
            yield DjangoBrowser(ip)


@pytest.fixture(scope="module", autouse=True)
def _close_django_clients() -> Iterator[None]:
    yield
    if "django_app" in sys.modules:
        for client in sys.modules["django_app"]._clients.values():
            client.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with otpguard_server(tmp_path_factory.mktemp("examples"), blocklist=BLOCKED) as running:
        yield running


def national(e164: str) -> str:
    digits = "0" + e164.removeprefix("+44")
    return f"{digits[:5]} {digits[5:]}"


def wrong(code: str) -> str:
    return str((int(code) + 1) % 10 ** len(code)).zfill(len(code))


_ips = iter(range(1, 250))


def new_ip() -> str:
    return f"198.51.100.{next(_ips)}"


@pytest.mark.parametrize("framework", FRAMEWORKS)
async def test_phone_login(framework: str, server: Server) -> None:
    to = fresh_number()
    async with browser(framework, server.base_url, server.api_key, new_ip()) as b:
        assert "Mobile number" in await b.get("/")
        page = await b.post("/login", phone=national(to))
        assert f"We sent a code to +44******{to[-4:]}" in page
        code = server.last_code_to(to)
        assert code not in page

        page = await b.post("/login/code", code=wrong(code))
        assert "That code isn't right. 4 attempts left." in page
        page = await b.post("/login/code", code=code)
        assert f"Signed in as {to}." in page
        assert f"Signed in as {to}." in await b.get("/")  # the session remembers

        page = await b.post("/logout")
        assert "Mobile number" in page and "Signed in" not in page


@pytest.mark.parametrize("framework", FRAMEWORKS)
async def test_what_users_see_when_no_code_is_sent(framework: str, server: Server) -> None:
    module = load(f"{framework}_app")
    async with browser(framework, server.base_url, server.api_key, new_ip()) as b:
        assert module.INVALID_NUMBER in await b.post("/login", phone="12345")
        blocked = await b.post("/login", phone=BLOCKED)
        assert module.NOT_SENT in blocked
        hot = fresh_number()
        for _ in range(3):  # limit_phone 3/10m
            assert "We sent a code" in await b.post("/login", phone=hot)
        limited = await b.post("/login", phone=hot)
        assert module.NOT_SENT in limited  # a rate limit reads exactly like a refusal
        assert "rate" not in limited.lower() and "block" not in limited.lower()


@pytest.mark.parametrize("framework", FRAMEWORKS)
async def test_resend_cooldown_is_shown(framework: str, server: Server) -> None:
    async with browser(framework, server.base_url, server.api_key, new_ip()) as b:
        await b.post("/login", phone=fresh_number())
        page = await b.post("/login/resend")
        assert re.search(r"You can ask for a new code in (\d+) s\.", page)


@pytest.mark.parametrize("framework", FRAMEWORKS)
async def test_otpguard_down_means_nobody_signs_in(framework: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    module = load(f"{framework}_app")
    async with browser(framework, dead, "some-key", new_ip()) as b:
        page = await b.post("/login", phone=fresh_number())
        assert module.UNAVAILABLE in page and "Signed in" not in page


# -- each example runs as its docstring and examples/README.md say ------------------------
#
# The commands are read from the files and run as written, through bash, from a directory
# laid out like the repository's root (examples/ and the README's .venv). Terminal 1's
# `.venv/bin/otpguard serve` is the module's server (a file outbox, so the test reads the
# code as a phone would); terminal 2 is given its address and a free port in OTPGUARD_URL
# and PORT, as the docstrings say it may be.

SERVE = ".venv/bin/otpguard serve"


def docstring_commands(framework: str) -> list[str]:
    """The indented command lines of an example's docstring, comments dropped."""
    doc = ast.get_docstring(ast.parse((EXAMPLES / f"{framework}_app.py").read_text()))
    assert doc is not None
    return [line.split("#")[0].strip() for line in doc.splitlines() if line.startswith("    ")]


def readme_block() -> list[str]:
    """examples/README.md's "Try one" block: its command lines, comments dropped."""
    text = (EXAMPLES / "README.md").read_text()
    block = re.search(r"## Try one.*?```sh\n(.*?)```", text, re.DOTALL)
    assert block is not None
    lines = [line.split("  #")[0].strip() for line in block.group(1).splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


@pytest.fixture
def repo_root(tmp_path: Path) -> Path:
    (tmp_path / "examples").symlink_to(EXAMPLES)
    (tmp_path / ".venv").symlink_to(Path(sys.prefix))  # the README's .venv
    return tmp_path


def bash(script: str, env: dict[str, str], cwd: Path) -> str:
    done = subprocess.run(["bash", "-e", "-c", script], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def sign_in_through(script: str, env: dict[str, str], cwd: Path, server: Server) -> None:
    """Run ``script`` (it starts an example app on $PORT) and send a code through the app."""
    port = free_port()
    log_path = cwd / "app.log"
    env = env | {"OTPGUARD_URL": server.base_url, "PORT": str(port)}
    with log_path.open("wb") as log:
        # Its own session: the whole group is stopped, Django's autoreloader child included.
        proc = subprocess.Popen(["bash", "-e", "-c", script], cwd=cwd, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, log_path.read_text()
            try:
                first = httpx.get(base + "/", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.05)  # waiting for the process to listen, not testing time
        assert first.status_code == 200 and "Mobile number" in first.text
        with httpx.Client(base_url=base, follow_redirects=True) as http:
            form = {"phone": national(to := fresh_number())}
            token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', http.get("/").text)
            if token:
                form["csrfmiddlewaretoken"] = token.group(1)
            page = http.post("/login", data=form)
        assert page.status_code == 200 and "We sent a code" in page.text, log_path.read_text()
        assert server.last_code_to(to)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)


def app_env() -> dict[str, str]:
    """A shell with none of the server's settings (terminal 2)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("OTPGUARD_", "TWILIO_"))}


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_runs_as_its_docstring_says(framework: str, server: Server, repo_root: Path) -> None:
    serve, create, run = docstring_commands(framework)
    assert serve == SERVE
    assert create == f".venv/bin/otpguard api-keys create --name {framework}-example"
    # The key is made in the server's store, as `otpguard serve` and this command share
    # the data directory of the repository's root.
    key = bash(create, server.env, repo_root).strip().splitlines()[-1]
    assert key.startswith("og_") and run.startswith("OTPGUARD_API_KEY=<key> .venv/bin/python ")
    sign_in_through(run.replace("<key>", key), app_env(), repo_root, server)
    # examples/README.md's table lists the same command.
    assert (
        f"`{run.removeprefix('OTPGUARD_API_KEY=<key> ')}`" in (EXAMPLES / "README.md").read_text()
    )


def test_the_readme_block_runs_as_written(server: Server, repo_root: Path) -> None:
    install, serve, *terminal_2 = readme_block()
    assert install == ".venv/bin/pip install -e '.[examples]'" and serve == SERVE
    # The install itself needs the package index; what it adds is the extra's list, which
    # must name every framework the examples import.
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = " ".join(extra["optional-dependencies"]["examples"])
    assert all(name in wanted for name in ("flask", "django", "itsdangerous"))
    # Terminal 2 as one shell: the key it exports is made in the server's store.
    env = app_env() | {"OTPGUARD_DATA_DIR": server.env["OTPGUARD_DATA_DIR"],
                       "OTPGUARD_SECRET_KEYS": server.env["OTPGUARD_SECRET_KEYS"]}  # fmt: skip
    sign_in_through("\n".join(terminal_2), env, repo_root, server)
