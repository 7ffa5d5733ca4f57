"""The operator dashboard at ``/dashboard``: server-rendered HTML with inline SVG charts.

Sign-in takes an API key with the ``monitor`` scope (``admin`` implies it); give
the dashboard a ``monitor``-only key, which cannot send codes. The session cookie is
``HttpOnly``, ``SameSite=Strict``, ``Secure`` outside development, scoped to
``/dashboard``; its value is signed with itsdangerous under the newest key and
accepted under any listed key (``dashboard_session``). Each request re-checks the
signature, the age (``SESSION_TTL``), that the API key still exists with the monitor
scope and is not revoked, and that the session was not signed out (a Verifier record per
nonce).

Every form carries a CSRF token: before sign-in it is a signature over a random
``otpguard_csrf`` cookie, after sign-in over the session nonce, each purpose with
its own subkey. No inline script or style: CSS and JS are static files of this package
served from ``/static/dashboard/`` (CSP ``default-src 'self'``).
"""

from __future__ import annotations

import secrets
from importlib import resources
from string import Template
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from ..apikeys import has_scope
from ..errors import OtpguardError
from ..stores.base import EventQuery
from .admin import open_and_recent_alerts
from .api import iso, verifier_of
from .dashboard_lists import lists_panel
from .dashboard_render import (
    alerts_table,
    bar_chart,
    countries_table,
    e,
    events_table,
    ranked_table,
    tiles,
    traffic_chart,
    webhooks_table,
)
from .dashboard_session import SESSION_TTL, csrf_ok, csrf_token, new_session, read_session

SESSION_COOKIE = "otpguard_session"
CSRF_COOKIE = "otpguard_csrf"
COOKIE_PATH = "/dashboard"
WINDOWS = {"15m": 900, "1h": 3600, "24h": 86400, "7d": 7 * 86400}
STATIC_FILES = {
    "dashboard.css": "text/css",
    "dashboard.js": "text/javascript",
    "dashboard-favicon.svg": "image/svg+xml",
}

router = APIRouter(include_in_schema=False)


def _template(name: str) -> Template:
    return Template(resources.files("otpguard.web").joinpath("templates", name).read_text("utf-8"))


def _static(name: str) -> bytes:
    return resources.files("otpguard.web").joinpath("static", name).read_bytes()


# -- sessions and CSRF --------------------------------------------------------------------


def _set_cookie(request: Request, response: Response, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=COOKIE_PATH,
        secure=request.app.state.settings.production,
        httponly=True,
        samesite="strict",
    )


async def _session(request: Request) -> str | None:
    """The session nonce if the cookie is a live session of a live monitor key."""
    v = verifier_of(request)
    signed = read_session(v.keyring, v.clock, request.cookies.get(SESSION_COOKIE, ""))
    if signed is None:
        return None
    key_id, nonce = signed
    key = await v.api_key(key_id)
    if key is None or key.revoked_at is not None or not has_scope(key, "monitor"):
        return None
    if await v.signed_out(nonce):
        return None
    return nonce


async def _form(request: Request) -> dict[str, str] | None:
    """The posted form, or None if it is not one (too many fields, say): the sign-in
    and sign-out pages take two fields, and anyone may post to them."""
    body = (await request.body()).decode("utf-8", "replace")
    try:
        return {k: vals[0] for k, vals in parse_qs(body, max_num_fields=10).items()}
    except ValueError:
        return None


def _login_page(request: Request, status: int = 200, error: str = "") -> HTMLResponse:
    token = secrets.token_urlsafe(32)
    page = _template("login.html").substitute(
        csrf=e(csrf_token(verifier_of(request).keyring, "dashboard-login-csrf", token)),
        error=f'<p class="error" role="alert">{e(error)}</p>' if error else "",
    )
    response = HTMLResponse(page, status_code=status)
    _set_cookie(request, response, CSRF_COOKIE, token, 3600)
    return response


@router.get("/dashboard/login")
async def login_form(request: Request) -> Response:
    if await _session(request) is not None:
        return RedirectResponse("/dashboard", status_code=303)
    return _login_page(request)


@router.post("/dashboard/login")
async def login(request: Request) -> Response:
    v = verifier_of(request)
    form = await _form(request)
    if form is None:
        return _login_page(request, 400, "That was not a sign-in form; please sign in again.")
    cookie = request.cookies.get(CSRF_COOKIE, "")
    if not csrf_ok(v.keyring, "dashboard-login-csrf", cookie, form.get("csrf", "")):
        return _login_page(request, 403, "The form expired; please sign in again.")
    try:
        key = await v.authenticate(form.get("api_key", "").strip())
    except OtpguardError:
        return _login_page(request, 401, "That API key is not valid.")
    if not has_scope(key, "monitor"):
        return _login_page(request, 403, "That API key does not have the monitor scope.")
    cookie = new_session(v.keyring, v.clock, key.id)
    response = RedirectResponse("/dashboard", status_code=303)
    _set_cookie(request, response, SESSION_COOKIE, cookie, SESSION_TTL)
    response.delete_cookie(CSRF_COOKIE, path=COOKIE_PATH)
    return response


@router.post("/dashboard/logout")
async def logout(request: Request) -> Response:
    v = verifier_of(request)
    nonce = await _session(request)
    form = await _form(request)
    if nonce is not None:
        if form is None or not csrf_ok(v.keyring, "dashboard-csrf", nonce, form.get("csrf", "")):
            return HTMLResponse("<p>Invalid form token.</p>", status_code=403)
        await v.sign_out(nonce, v.clock() + SESSION_TTL)
    response = RedirectResponse("/dashboard/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH)
    return response


@router.get("/static/dashboard/{name}")
async def static(name: str) -> Response:
    if name not in STATIC_FILES:
        return Response(b"not found", status_code=404, media_type="text/plain")
    return Response(_static(name), media_type=STATIC_FILES[name])


@router.get("/dashboard")
async def dashboard(request: Request, window: str = "1h") -> Response:
    nonce = await _session(request)
    if nonce is None:
        return RedirectResponse("/dashboard/login", status_code=303)
    v = verifier_of(request)
    if window not in WINDOWS:
        window = "1h"
    now = v.clock()
    stats = await v.stats(WINDOWS[window])
    alerts = await open_and_recent_alerts(v, now)
    recent = await v.events(EventQuery(limit=50))
    hooks = await v.webhook_deliveries(limit=20)
    open_n = sum(1 for a in alerts if a.status == "open")
    currency = v.settings.alerts.price_currency
    countries = [
        (c.country, round(100 * (c.conversion or 0), 1), "ok") for c in stats.countries[:12]
    ]
    ctx: dict[str, Any] = {
        "window": e(window),
        "until": e(iso(now)),
        "truncated": "Figures are truncated (too many events)." if stats.truncated else "",
        "csrf": e(csrf_token(v.keyring, "dashboard-csrf", nonce)),
        "windows": "".join(
            f'<a href="/dashboard?window={k}"{" class=current" if k == window else ""}>{k}</a>'
            for k in WINDOWS
        ),
        "currency": e(currency),
        "tiles": tiles(stats, open_n, currency),
        "alerts": alerts_table(alerts),
        "traffic_chart": traffic_chart(stats.series, WINDOWS[window]),
        "refusal_chart": bar_chart(
            [(r.label, r.count, "") for r in stats.refusals[:12]], label="Refusals by reason"
        ),
        "country_chart": bar_chart(countries, label="Conversion by country", unit="%"),
        "top_numbers": ranked_table(stats.top_numbers, "number"),
        "top_ips": ranked_table(stats.top_ips, "ip"),
        "countries": countries_table(stats.countries, currency),
        "events": events_table(recent),
        "webhooks": webhooks_table(hooks),
        "lists": lists_panel(await v.lists.counts(), await v.lists.runtime_entries()),
    }
    return HTMLResponse(_template("dashboard.html").substitute(ctx))


def install(app: FastAPI) -> None:
    app.include_router(router)
