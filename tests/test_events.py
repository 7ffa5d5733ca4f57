"""``Event.to_dict`` and ``to_json``: what is stored and logged of an event."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import pytest

from otpguard.events import Event


def reference(e: Event) -> dict[str, Any]:
    """What ``to_dict`` returned when it was ``asdict`` minus owner (and a count of 1)."""
    data = asdict(e)
    del data["owner"]
    if e.count == 1:
        del data["count"]
    return data


EVENTS = [
    Event("check.passed", 1.5, "id1", verification_id="VE1", details={"a": 1, "b": "c"}),
    Event("request.refused", 2.25, "id2", reason="rate", rule="ip", count=4, owner="k1"),
    Event("x", 3.0, details={"nested": [1, {"z": 2}], "t": (1, 2)}),
    Event("y", 4.0, provider_code=30003, details={"f": 0.5, "none": None, "ok": True}),
]


@pytest.mark.parametrize("e", EVENTS)
def test_to_dict_is_asdict_without_the_owner(e: Event) -> None:
    data = e.to_dict()
    assert data == reference(e)
    assert list(data) == list(reference(e))  # the same order: the same JSON
    assert "owner" not in data
    assert e.to_json() == json.dumps(reference(e), separators=(",", ":"), sort_keys=True)


@pytest.mark.parametrize("e", EVENTS)
def test_to_dict_is_a_copy(e: Event) -> None:
    data = e.to_dict()
    data["details"]["added"] = 1
    for value in data["details"].values():
        if isinstance(value, list):
            value.append("changed")
    assert "added" not in e.details
    assert e.to_dict() == reference(e)
