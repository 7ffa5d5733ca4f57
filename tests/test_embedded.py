"""The Verifier in-process, without a server: ``open_verifier`` (async) and
``otpguard.sync.open_sync_verifier`` (blocking), built from the same settings as
``otpguard serve``. Codes are read from the file outbox, as a phone would."""

from __future__ import annotations

import inspect
import threading
from pathlib import Path
from typing import Any

import pytest

from otpguard import (
    ConfigError,
    ManualClock,
    RateLimited,
    Status,
    Verifier,
    load_settings,
    open_verifier,
)
from otpguard.client import Client
from otpguard.codes import new_secret_hex
from otpguard.config import Settings
from otpguard.stores import store_from_url
from otpguard.sync import SyncVerifier, open_sync_verifier
from otpguard.transports.file import FileTransport, read_outbox

from .serverproc import fresh_number, otpguard_server


def file_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "transport": "file",
        "secret_keys": [new_secret_hex()],
    }
    values.update(overrides)
    return load_settings(env={}, **values)


def last_code(settings: Settings, verification_id: str) -> str:
    codes = [
        m["code"]
        for m in read_outbox(settings.outbox_file)
        if m["verification_id"] == verification_id
    ]
    assert codes, f"nothing was sent for {verification_id}"
    return codes[-1]


async def test_async_embedded_flow(tmp_path: Path) -> None:
    settings = file_settings(tmp_path)
    async with open_verifier(settings) as otp:
        v = await otp.start(fresh_number(), "sms", client_ip="203.0.113.7")
        code = last_code(settings, v.id)
        assert (await otp.check(code, verification_id=v.id, client_ip="203.0.113.7")).valid
        assert (await otp.get(v.id)).status is Status.APPROVED
    assert (tmp_path / "data" / "otpguard.db").exists()  # the default store: SQLite in data_dir


def test_sync_embedded_flow(tmp_path: Path) -> None:
    settings = file_settings(tmp_path)
    with open_sync_verifier(settings) as otp:
        to = fresh_number()
        v = otp.start(to, "sms", client_ip="203.0.113.8")
        assert v.status is Status.PENDING
        code = last_code(settings, v.id)
        wrong = otp.check(str((int(code) + 1) % 1_000_000).zfill(6), verification_id=v.id)
        assert not wrong.valid and wrong.attempts_remaining == settings.max_attempts - 1
        assert otp.check(code, to=to, client_ip="203.0.113.8").valid
        assert otp.get(v.id).status is Status.APPROVED
        v2 = otp.start(fresh_number(), client_ip="203.0.113.8")
        assert otp.cancel(v2.id).status is Status.CANCELED


def test_sync_wrapper_uses_the_settings(tmp_path: Path) -> None:
    settings = file_settings(tmp_path, code_length=8, code_ttl=120, limit_phone="1/10m")
    with open_sync_verifier(settings) as otp:
        to = fresh_number()
        v = otp.start(to, client_ip="203.0.113.9")
        assert v.expires_at - v.created_at == 120
        assert len(last_code(settings, v.id)) == 8
        with pytest.raises(RateLimited) as info:  # the Verifier's own errors, unchanged
            otp.start(to, client_ip="203.0.113.9")
        assert info.value.rule.startswith("phone")


def test_sync_wrapper_with_an_injected_clock_expires_codes(tmp_path: Path) -> None:
    from otpguard.service import Verifier

    settings = file_settings(tmp_path, code_ttl=60)
    clock = ManualClock()
    verifier = Verifier(
        settings,
        store_from_url(settings.store_url),
        FileTransport(settings.outbox_file),
        clock=clock,
    )
    with SyncVerifier(verifier) as otp:
        v = otp.start(fresh_number(), client_ip="203.0.113.10")
        clock.advance(61)
        late = otp.check(last_code(settings, v.id), verification_id=v.id)
        assert not late.valid and late.status is Status.EXPIRED


def test_sync_wrapper_is_shared_by_threads(tmp_path: Path) -> None:
    settings = file_settings(tmp_path)
    results: dict[int, bool] = {}
    errors: list[BaseException] = []
    with open_sync_verifier(settings) as otp:
        numbers = [fresh_number() for _ in range(8)]

        def login(i: int) -> None:
            try:
                v = otp.start(numbers[i], client_ip=f"203.0.113.{20 + i}")
                results[i] = otp.check(last_code(settings, v.id), verification_id=v.id).valid
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=login, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []
    assert results == dict.fromkeys(range(8), True)


async def test_sync_wrapper_works_under_a_running_event_loop(tmp_path: Path) -> None:
    """An async view that calls sync code (blocking, but not deadlocked)."""
    settings = file_settings(tmp_path)
    with open_sync_verifier(settings) as otp:
        v = otp.start(fresh_number(), client_ip="203.0.113.30")
        assert otp.check(last_code(settings, v.id), verification_id=v.id).valid


def test_closed_wrapper_refuses_calls(tmp_path: Path) -> None:
    otp = open_sync_verifier(file_settings(tmp_path))
    otp.close()
    otp.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        otp.get("VE00")


def test_production_settings_are_validated_as_serve_would(tmp_path: Path) -> None:
    # (``env`` is load_settings' environment mapping, so the mode comes from there)
    settings = load_settings(
        env={"OTPGUARD_ENV": "production"},
        data_dir=tmp_path / "data",
        transport="file",
        secret_keys=[new_secret_hex()],
    )
    with pytest.raises(ConfigError, match="refusing to start in production"):
        open_sync_verifier(settings)


def test_development_without_keys_gets_the_same_key_file_as_serve(tmp_path: Path) -> None:
    settings = load_settings(env={}, data_dir=tmp_path / "data", transport="file")
    with open_sync_verifier(settings) as otp:
        v = otp.start(fresh_number(), client_ip="203.0.113.31")
        assert otp.check(last_code(settings, v.id), verification_id=v.id).valid
    assert (tmp_path / "data" / "secret.key").exists()


@pytest.mark.slow
def test_embedded_engine_and_server_share_one_data_dir(tmp_path: Path) -> None:
    """Same settings, same store: a code sent in-process is checked through the server."""
    with otpguard_server(tmp_path) as server:
        settings = load_settings(env=server.env)
        with open_sync_verifier(settings) as otp:
            v = otp.start(fresh_number(), client_ip="203.0.113.32")
        with Client(server.base_url, server.api_key) as client:
            assert client.get(v.id).status is Status.PENDING
            assert client.check(server.last_code(v.id), verification_id=v.id).valid


@pytest.mark.parametrize("name", ["start", "resend", "check", "cancel", "get", "purge"])
def test_the_sync_verifier_takes_the_verifiers_own_arguments(name: str) -> None:
    blocking, engine = getattr(SyncVerifier, name), getattr(Verifier, name)
    assert inspect.signature(blocking) == inspect.signature(engine)
    assert blocking.__doc__ == engine.__doc__
