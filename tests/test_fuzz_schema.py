"""Schemathesis against the app's own OpenAPI schema: no 5xx, nothing outside the schema.

Bounded and deterministic: a few examples per operation and mode, hypothesis'
``derandomize=True``, no example database. Runs in-process through
schemathesis' ASGI client (which runs the app's lifespan), with a valid Bearer
key created beforehand in the SQLite file the app then opens.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from otpguard.apikeys import create_api_key
from otpguard.stores import store_from_url
from otpguard.web.app import create_app

from .conftest import make_settings

pytestmark = pytest.mark.slow  # hypothesis over every operation: seconds each

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
EXAMPLES = 10


async def _new_key(url: str) -> str:
    store = store_from_url(url)
    await store.open()
    try:
        _, key = await create_api_key(store, "fuzz", ("verify", "admin"), 0.0)
    finally:
        await store.aclose()
    return key


@pytest.fixture(scope="module")
def fuzz_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str]]:
    tmp = tmp_path_factory.mktemp("fuzz")
    app_settings = make_settings(
        tmp,
        store=f"sqlite:///{tmp / 'fuzz.db'}",
        # Generous limits so that most examples reach the Verifier instead of a 429.
        limit_phone="1000/10m",
        limit_ip="1000/10m",
        limit_network="1000/10m",
        limit_prefix="1000/10m",
        limit_global="10000/1m",
        allowed_countries=["GB", "US", "FR", "DE"],
    )
    key = asyncio.run(_new_key(app_settings.store_url))
    app = create_app(app_settings, background=False)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    try:
        yield schema, key
    finally:
        asgi.shutdown_lifespans()


def _operations(schema: Any) -> list[Any]:
    return [r.ok() for r in schema.get_all_operations() if isinstance(r, Ok)]


def test_the_schema_lists_the_v1_operations(fuzz_target: tuple[Any, str]) -> None:
    schema, _ = fuzz_target
    labels = {op.label for op in _operations(schema)}
    assert "POST /v1/verifications" in labels
    assert "POST /v1/verifications/check" in labels
    assert "GET /v1/verifications/{verification_id}" in labels


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_server_error_and_no_response_outside_the_schema(
    fuzz_target: tuple[Any, str], mode: GenerationMode
) -> None:
    schema, key = fuzz_target
    called: dict[str, int] = {}
    for operation in _operations(schema):

        @settings(
            max_examples=EXAMPLES,
            derandomize=True,
            database=None,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(generation_mode=mode))
        def run(case: Any) -> None:
            called[case.operation.label] = called.get(case.operation.label, 0) + 1
            case.call_and_validate(headers={"Authorization": f"Bearer {key}"}, checks=CHECKS)

        try:
            run()
        except Unsatisfiable:
            # No negative example exists for an operation without parameters or body.
            assert mode is GenerationMode.NEGATIVE, operation.label
    if mode is GenerationMode.POSITIVE:
        assert set(called) == {op.label for op in _operations(schema)}
    assert "POST /v1/verifications" in called
