"""Twilio's list paging: ``PageSize``, ``Page``, ``PageToken`` in the query, and a
``meta`` block whose ``next_page_url`` the SDK follows until it is null."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from fastapi import Request

from .errors import invalid
from .forms import base_url

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000  # Twilio's
_PAGING = frozenset({"PageSize", "Page", "PageToken"})


@dataclass(frozen=True)
class PageRequest:
    page: int
    size: int
    token: str | None
    filters: dict[str, str] = field(default_factory=dict)


def _small_int(name: str, raw: str, low: int, high: int) -> int:
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 7) or not low <= int(raw) <= high:
        raise invalid(name, f"a whole number from {low} to {high}")
    return int(raw)


def page_request(request: Request, filters: frozenset[str]) -> PageRequest:
    """The query's paging and ``filters``, each once; any other parameter is 60200."""
    seen: dict[str, str] = {}
    for name, value in request.query_params.multi_items():
        if name not in _PAGING and name not in filters:
            raise invalid(name[:40], "not supported by otpguard")
        if name in seen:
            raise invalid(name, "given more than once")
        seen[name] = value
    size = _small_int("PageSize", seen.pop("PageSize", str(DEFAULT_PAGE_SIZE)), 1, MAX_PAGE_SIZE)
    page = _small_int("Page", seen.pop("Page", "0"), 0, 10**6)
    token = seen.pop("PageToken", None) or None
    return PageRequest(page, size, token, seen)


def _url(request: Request, req: PageRequest, page: int, token: str | None) -> str:
    params = {**req.filters, "PageSize": str(req.size), "Page": str(page)}
    if token is not None:
        params["PageToken"] = token
    return f"{base_url(request)}{request.url.path}?{urlencode(params)}"


def page_body(
    request: Request,
    key: str,
    items: list[dict[str, Any]],
    req: PageRequest,
    next_token: str | None,
    has_next: bool,
) -> dict[str, Any]:
    """The list body: ``{key: items, "meta": {...}}`` as Twilio pages it."""
    return {
        key: items,
        "meta": {
            "page": req.page,
            "page_size": req.size,
            "first_page_url": _url(request, req, 0, None),
            "previous_page_url": None,
            "url": _url(request, req, req.page, req.token),
            "next_page_url": _url(request, req, req.page + 1, next_token) if has_next else None,
            "key": key,
        },
    }
