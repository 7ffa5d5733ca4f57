"""Dashboard sessions and CSRF tokens across key rotation, through the real app.

Each step is a restart of the app on the same store with another
``OTPGUARD_SECRET_KEYS``: adding a key signs nobody out, new sessions are signed
with the newest key, and retiring the oldest ends only the sessions it signed.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from itsdangerous import TimestampSigner

from otpguard.clock import ManualClock
from otpguard.codes import new_secret_hex
from otpguard.config import Settings
from otpguard.transports.memory import MemoryTransport

from .conftest import ApiClient, open_api
from .test_admin import csrf_of

OLD, NEW = new_secret_hex(), new_secret_hex()
SESSION = "otpguard_session"


@pytest.fixture
def app_on(
    settings_factory: Callable[..., Settings],
    clock: ManualClock,
    outbox: MemoryTransport,
    tmp_path: Path,
) -> Callable[..., contextlib.AbstractAsyncContextManager[ApiClient]]:
    """``async with app_on(keys) as api``: the app on ``keys``, one store for all."""
    url = f"sqlite:///{tmp_path / 'dash.db'}"

    @contextlib.asynccontextmanager
    async def open_(keys: list[str]) -> AsyncIterator[ApiClient]:
        settings = settings_factory(store=url, secret_keys=keys)
        async with open_api(settings, clock, outbox, ("monitor",)) as api:
            yield api

    return open_


async def signed_in(api: ApiClient) -> tuple[str, str]:
    """Sign in afresh with the app's monitor key: ``(session cookie, the page's CSRF
    token)``."""
    api.http.cookies.clear()
    login = await api.http.get("/dashboard/login")
    r = await api.http.post(
        "/dashboard/login", data={"csrf": csrf_of(login.text), "api_key": api.key}
    )
    assert r.status_code == 303 and r.headers["location"] == "/dashboard"
    session = api.http.cookies.get(SESSION)
    assert session is not None
    page = await api.http.get("/dashboard")
    assert page.status_code == 200
    return session, csrf_of(page.text)


async def status_with(api: ApiClient, session: str) -> int:
    """The dashboard's status for a request that carries ``session``."""
    api.http.cookies.set(SESSION, session, path="/dashboard")
    return (await api.http.get("/dashboard")).status_code


async def sign_out(api: ApiClient, session: str, csrf: str) -> httpx.Response:
    api.http.cookies.set(SESSION, session, path="/dashboard")
    return await api.http.post("/dashboard/logout", data={"csrf": csrf})


async def test_adding_a_key_keeps_sessions_and_forms_and_signs_new_ones_with_it(
    app_on: Callable[..., contextlib.AbstractAsyncContextManager[ApiClient]],
) -> None:
    async with app_on([OLD]) as api:
        login_page = await api.http.get("/dashboard/login")
        login_csrf, login_cookie = csrf_of(login_page.text), api.http.cookies["otpguard_csrf"]
        old_session, old_csrf = await signed_in(api)
        old_key = api.key
    async with app_on([NEW, OLD]) as api:
        assert await status_with(api, old_session) == 200
        # A sign-in form served before the restart still signs in.
        api.http.cookies.clear()
        api.http.cookies.set("otpguard_csrf", login_cookie, path="/dashboard")
        r = await api.http.post("/dashboard/login", data={"csrf": login_csrf, "api_key": old_key})
        assert r.status_code == 303 and r.headers["location"] == "/dashboard"
        new_session, new_csrf = await signed_in(api)
        assert new_csrf != old_csrf
        # The page's CSRF token from before the restart still signs that session out.
        assert (await sign_out(api, old_session, "forged")).status_code == 403
        assert (await sign_out(api, old_session, old_csrf)).status_code == 303
        assert await status_with(api, old_session) == 303
    async with app_on([NEW]) as api:  # the new session was signed by the newest key
        assert await status_with(api, new_session) == 200


async def test_retiring_the_oldest_key_ends_only_its_sessions(
    app_on: Callable[..., contextlib.AbstractAsyncContextManager[ApiClient]],
) -> None:
    async with app_on([OLD]) as api:
        old_session, _ = await signed_in(api)
    async with app_on([NEW, OLD]) as api:
        new_session, new_csrf = await signed_in(api)
    async with app_on([NEW]) as api:
        assert await status_with(api, old_session) == 303
        assert await status_with(api, new_session) == 200
        assert (await sign_out(api, new_session, new_csrf)).status_code == 303
        assert await status_with(api, new_session) == 303


async def test_a_session_expires_by_the_engine_clock_after_rotation(
    app_on: Callable[..., contextlib.AbstractAsyncContextManager[ApiClient]],
    clock: ManualClock,
) -> None:
    async with app_on([OLD]) as api:
        session, _ = await signed_in(api)
    clock.advance(8 * 3600 - 1)
    async with app_on([NEW, OLD]) as api:
        assert await status_with(api, session) == 200
        clock.advance(1)
        assert await status_with(api, session) == 303


async def test_a_value_signed_for_another_purpose_or_with_the_raw_key_is_no_session(
    app_on: Callable[..., contextlib.AbstractAsyncContextManager[ApiClient]],
    clock: ManualClock,
) -> None:
    async with app_on([OLD]) as api:
        session, _ = await signed_in(api)
        payload = session.rsplit(".", 2)[0]  # "<API key id>.<nonce>"
        ring = api.verifier.keyring

        def signed_with(key: bytes) -> str:
            signer = TimestampSigner(key, key_derivation="none", digest_method=hashlib.sha256)
            signer.get_timestamp = lambda: int(clock())
            return signer.sign(payload).decode()

        for key in (*ring.subkeys("dashboard-csrf"), bytes.fromhex(OLD)):
            assert await status_with(api, signed_with(key)) == 303
        # The same payload under the session subkey is a session: the forgeries above
        # failed for their key alone.
        assert await status_with(api, signed_with(ring.subkeys("dashboard-session")[0])) == 200
