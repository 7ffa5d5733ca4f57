"""The store contract's error translation: applied once, in ``Store.__init_subclass__``,
to every public coroutine a backend or its mixins define."""

from __future__ import annotations

from typing import Any

import pytest

from otpguard.errors import StorageError
from otpguard.stores.base import Store


class DriverError(Exception):
    """What a driver raises when its server is gone."""


class Mixin:
    async def from_mixin(self) -> None:
        raise DriverError("connection reset: key=secret-value")


def _abstract_names() -> set[str]:
    return set(getattr(Store, "__abstractmethods__", ()))


def _fake_store(**methods: Any) -> type[Store]:
    """A concrete backend whose every abstract method raises DriverError."""

    async def broken(self: Store, *args: Any, **kwargs: Any) -> Any:
        raise DriverError("connection reset: key=secret-value")

    body: dict[str, Any] = {name: broken for name in _abstract_names()}
    body.update(methods)
    body["backend"] = "fake"
    body["backend_error"] = lambda self, exc: (
        type(exc).__name__ if isinstance(exc, DriverError) else None
    )
    return type("FakeStore", (Mixin, Store), body)


async def test_a_backend_error_becomes_storage_error_naming_the_operation() -> None:
    store = _fake_store()()
    with pytest.raises(StorageError) as caught:
        await store.get_verification("VE1")
    assert str(caught.value) == "fake store: get_verification failed (DriverError)"
    assert isinstance(caught.value.__cause__, DriverError)
    assert "secret-value" not in str(caught.value)


async def test_mixin_methods_are_translated_too() -> None:
    store = _fake_store()()
    with pytest.raises(StorageError, match="from_mixin failed"):
        await store.from_mixin()  # type: ignore[attr-defined]


async def test_a_bug_is_not_disguised_as_a_storage_failure() -> None:
    async def buggy(self: Store, verification_id: str) -> None:
        raise KeyError(verification_id)

    store = _fake_store(get_verification=buggy)()
    with pytest.raises(KeyError):
        await store.get_verification("VE1")


async def test_a_storage_error_passes_unchanged_and_is_wrapped_once() -> None:
    async def already(self: Store, verification_id: str) -> None:
        raise StorageError("fake store: get_verification failed (closed)")

    cls = _fake_store(get_verification=already)
    sub = type("SubStore", (cls,), {})
    with pytest.raises(StorageError) as caught:
        await sub().get_verification("VE1")
    assert str(caught.value) == "fake store: get_verification failed (closed)"
    assert caught.value.__cause__ is None
