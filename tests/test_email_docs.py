"""docs/email.md's code blocks, run: the client sample against ``otpguard serve``, the
two configuration blocks through the settings loader and the start-up checks."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from otpguard.config import load_settings
from otpguard.startup import startup_problems
from otpguard.transports import email_transport_from_settings

from .serverproc import Server, otpguard_server
from .test_documented_path import doc_block

DOC = "docs/email.md"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with otpguard_server(tmp_path_factory.mktemp("email-docs")) as running:
        yield running


@pytest.mark.slow
def test_the_client_sample_prints_what_its_comment_says(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    sample = doc_block(DOC, "from otpguard import Client")
    monkeypatch.setenv("OTPGUARD_URL", server.base_url)
    monkeypatch.setenv("OTPGUARD_API_KEY", server.api_key)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(sample.text, sample.path, "exec"), {})  # noqa: S102 - our own docs
    printed = out.getvalue().strip()
    assert printed == sample.text.split("# ")[-1].strip() == "email j***@e***.com"


def env_of(first_line: str) -> dict[str, str]:
    text = doc_block(DOC, first_line).text
    return dict(line.split("=", 1) for line in text.splitlines() if line.strip())


@pytest.mark.parametrize(
    ("first_line", "name"),
    [("OTPGUARD_EMAIL_TRANSPORT=smtp", "smtp"), ("OTPGUARD_EMAIL_TRANSPORT=sendgrid", "sendgrid")],
)
def test_the_configuration_blocks_start(tmp_path: Path, first_line: str, name: str) -> None:
    env = env_of(first_line)
    assert all(k.startswith("OTPGUARD_EMAIL_") for k in env)
    settings = load_settings(env=env, data_dir=tmp_path)
    assert startup_problems(settings) == []
    transport = email_transport_from_settings(settings)
    assert transport is not None and transport.name == name
