"""``otpguard api-keys webhook`` and ``otpguard webhooks``: set, list, read the log."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from otpguard.cli import main
from otpguard.clock import ManualClock
from otpguard.config import load_settings
from otpguard.service import Verifier
from otpguard.stores import store_from_url
from otpguard.stores.webhooks import WebhookStore
from otpguard.transports.memory import MemoryTransport
from otpguard.webhook_delivery import WebhookOutbox, WebhookWorker

from .conftest import TEST_KEY, UK_MOBILE, open_api
from .webhook_receiver import Receiver, running_receiver


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in list(os.environ):
        if name.startswith(("OTPGUARD_", "TWILIO_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OTPGUARD_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("OTPGUARD_STORE", f"sqlite:///{tmp_path / 'otp.db'}")
    monkeypatch.setenv("OTPGUARD_SECRET_KEYS", TEST_KEY)
    return tmp_path


@pytest.fixture
def receiver(clock: ManualClock) -> Iterator[Receiver]:
    yield from running_receiver(clock)


def new_key(capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["api-keys", "create", "--name", "shop"]) == 0
    return capsys.readouterr().out.strip().splitlines()[-1].split("_")[1]


async def traffic(key_id: str, clock: ManualClock) -> None:
    """A start by the key, its two webhooks attempted once (the first answer is a 500)."""
    settings = load_settings()
    async with Verifier(
        settings, store_from_url(settings.store_url), MemoryTransport(), clock=clock
    ) as otp:
        store = otp.store
        assert isinstance(store, WebhookStore)
        otp.webhooks = hooks = WebhookOutbox(store, settings.webhooks)
        await otp.start(UK_MOBILE, owner=key_id)
        worker = WebhookWorker(store, otp.keyring, settings.webhooks, hooks, clock=clock)
        assert await worker.run_once() == 2


def test_set_list_and_read_the_log(
    cli_env: Path, capsys: pytest.CaptureFixture[str], receiver: Receiver, clock: ManualClock
) -> None:
    key_id = new_key(capsys)
    assert main(["api-keys", "webhook", "set", f"og_{key_id}", receiver.url]) == 0
    out = capsys.readouterr().out.splitlines()
    secret = out[-1]
    assert secret.startswith("whsec_") and "shown only once" in out[1]
    assert main(["api-keys", "webhook", "set", key_id, receiver.url]) == 0
    assert secret not in capsys.readouterr().out  # unchanged: not shown again
    assert main(["webhooks", "list"]) == 0
    listing = capsys.readouterr().out
    assert f"key:{key_id}" in listing and receiver.url in listing and "whsec" not in listing

    receiver.codes = [500]
    asyncio.run(traffic(key_id, clock))
    assert main(["webhooks", "log"]) == 0
    header, *rows = capsys.readouterr().out.splitlines()
    assert header.split()[:4] == ["CREATED", "(UTC)", "TYPE", "STATUS"]
    columns = sorted((r.split()[3], r.split()[5]) for r in rows)
    assert columns == [("delivered", "200"), ("pending", "500")]
    assert sorted(r.split()[2] for r in rows) == ["sent", "started"]
    assert main(["webhooks", "log", "--status", "pending", "--json"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    row = json.loads(line)
    assert row["attempts"] == 1 and row["log"][0]["status_code"] == 500
    assert main(["api-keys", "webhook", "remove", key_id]) == 0
    assert main(["api-keys", "webhook", "remove", key_id]) == 1
    capsys.readouterr()
    assert main(["webhooks", "list"]) == 0
    assert "no webhooks" in capsys.readouterr().out


def test_production_refuses_a_plain_http_url(
    cli_env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    key_id = new_key(capsys)
    monkeypatch.setenv("OTPGUARD_ENV", "production")
    assert main(["api-keys", "webhook", "set", key_id, "http://hooks.example.com/x"]) == 1
    assert "must start with https://" in capsys.readouterr().err
    assert main(["api-keys", "webhook", "set", key_id, "https://127.0.0.1/x"]) == 1
    assert "private" in capsys.readouterr().err
    assert main(["api-keys", "webhook", "set", "og_000000000000", "https://h.example/x"]) == 1
    assert main(["api-keys", "webhook", "set", f"og_{key_id}_secretpart", "https://h.example"]) == 2


def test_setting_a_webhook_needs_the_keys_that_sign_it(
    cli_env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """API keys are managed without OTPGUARD_SECRET_KEYS; a webhook secret is derived
    from them, so setting one without keys is a configuration error, removing is not."""
    monkeypatch.delenv("OTPGUARD_SECRET_KEYS")
    monkeypatch.setenv("OTPGUARD_ENV", "production")  # no development key is made either
    key_id = new_key(capsys)
    assert main(["api-keys", "list"]) == 0 and "shop" in capsys.readouterr().out
    assert main(["api-keys", "webhook", "set", key_id, "https://hooks.example.com/x"]) == 2
    assert "OTPGUARD_SECRET_KEYS" in capsys.readouterr().err
    assert main(["api-keys", "webhook", "remove", key_id]) == 1
    assert "no webhook to remove" in capsys.readouterr().out


async def new_service(clock: ManualClock) -> str:
    """A /v2 service, made through the API as an app would."""
    async with open_api(load_settings(), clock, MemoryTransport(), ("verify",)) as api:
        token = base64.b64encode(f"og_{api.key.split('_')[1]}:{api.key}".encode()).decode()
        r = await api.http.post(
            "/v2/Services", headers={"Authorization": f"Basic {token}"}, data={"FriendlyName": "A"}
        )
        assert r.status_code == 201
        sid: str = r.json()["sid"]
        return sid


def test_a_service_webhook(
    cli_env: Path, capsys: pytest.CaptureFixture[str], clock: ManualClock
) -> None:
    sid = asyncio.run(new_service(clock))
    assert main(["webhooks", "set-service", sid, "https://hooks.example/v2"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("whsec_")
    assert main(["webhooks", "list"]) == 0
    assert f"service:{sid}" in capsys.readouterr().out
    assert main(["webhooks", "set-service", "VA" + "0" * 32, "https://hooks.example/v2"]) == 1
    assert "no /v2 service" in capsys.readouterr().err
    assert main(["webhooks", "remove-service", sid]) == 0
    assert main(["webhooks", "remove-service", sid]) == 1
