"""``/v1/admin/numbers``: the run-time block and allow lists (``listedit.py``) over HTTP.

Every route needs an API key with the ``admin`` scope, the listing too: it shows the
numbers in clear (a ``monitor`` key sees the counts and the masked changes on the
dashboard). Each change is recorded as an event naming the key that made it.

    GET    /v1/admin/numbers             run-time entries (newest first), then configured
    POST   /v1/admin/numbers             {"number", "kind", "for" | "until", "note"} -> 201
    DELETE /v1/admin/numbers/{number}    remove a run-time entry (a prefix: +447400)
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI
from pydantic import Field

from ..numberlists import MAX_NOTE, entry_out
from ..stores.base import ApiKey
from .api import ERRORS, VerifierDep, _Strict, admin_key, iso

Admin = Annotated[ApiKey, Depends(admin_key)]

router = APIRouter(prefix="/v1/admin", tags=["admin"])


class ListEntryIn(_Strict):
    number: str = Field(max_length=32, description="A number or a prefix: +447400123456, +447400")
    kind: Literal["block", "allow"] = Field(
        description="block: refuse every send; allow: skip the fraud rules and admission"
    )
    duration: str | None = Field(
        None, alias="for", max_length=16, description="Expire after 90m, 12h, 7d, 2w, ..."
    )
    until: str | None = Field(
        None, max_length=40, description="Expire at this ISO 8601 time (UTC by default)"
    )
    note: str | None = Field(
        None, max_length=4 * MAX_NOTE, description=f"Why (at most {MAX_NOTE} characters)"
    )


def _by(key: ApiKey) -> str:
    return f"api key og_{key.id} ({key.name})"


@router.get("/numbers", responses=ERRORS)
async def list_numbers(verifier: VerifierDep, _: Admin) -> dict[str, Any]:
    """Every entry, run-time ones newest first, then the configured ones
    (``source: config``, from OTPGUARD_BLOCKLIST / OTPGUARD_ALLOWLIST)."""
    entries = await verifier.lists.entries()
    return {
        "entries": [entry_out(x, iso) for x in entries],
        "counts": await verifier.lists.counts(),
        "max_entries": verifier.settings.number_list_max,
    }


@router.post("/numbers", status_code=201, responses=ERRORS)
async def add_number(body: ListEntryIn, verifier: VerifierDep, key: Admin) -> dict[str, Any]:
    """Add a block or allow entry, or replace the one the number or prefix has. It
    applies from the next send on, on every instance sharing the store."""
    change = await verifier.lists.add(
        body.number, body.kind, by=_by(key), note=body.note,
        duration=body.duration, until=body.until,
    )  # fmt: skip
    return {
        "entry": entry_out(change.entry, iso),
        "replaced": change.replaced.kind if change.replaced is not None else None,
    }


@router.delete("/numbers/{number}", responses=ERRORS)
async def remove_number(number: str, verifier: VerifierDep, key: Admin) -> dict[str, Any]:
    """Remove the run-time entry of a number or prefix, whatever its kind. A configured
    entry answers 409 ``configured``: it is removed from the configuration."""
    change = await verifier.lists.remove(number, by=_by(key))
    return {
        "removed": entry_out(change.entry, iso),
        "still_configured": change.shadowed_by_config is not None,
    }


def install(app: FastAPI) -> None:
    app.include_router(router)
