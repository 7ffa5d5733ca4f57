"""The ASGI application: ``create_app(settings)``.

Thin: routes translate HTTP to :class:`otpguard.service.Verifier` calls and
otpguard errors to JSON ``{"error": {"code", "message", ...}}``. Never a stack
trace, never a code.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import importlib.resources
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..apikeys import KeyCache
from ..clock import Clock, system_clock
from ..config import Settings, load_settings
from ..errors import OtpguardError, RateLimited, StorageError
from ..service import Verifier
from ..startup import check_startup
from ..stores import store_from_url
from ..transports import email_transport_from_settings, transport_from_settings
from ..version import VERSION
from .api import router as api_router
from .middleware import BodyLimitMiddleware, SecurityHeadersMiddleware

log = logging.getLogger("otpguard.web")

AppHook = Callable[[FastAPI], None]
#: Functions that add routers or middleware (monitoring, dashboard, demo, ...).
#: Each receives the app after the core routes are in place.
EXTENSIONS: list[str] = [
    "otpguard.web.twilio_webhooks:install",
    "otpguard.web.admin:install",
    "otpguard.web.webhooks:install",
    "otpguard.web.admin_numbers:install",
    "otpguard.web.dashboard:install",
    "otpguard.web.demo:install",
    "otpguard.web.verify:install",
    # Last: its middleware wraps every other extension's, so they all see the
    # scheme and client IP as resolved from trusted proxies only.
    "otpguard.web.https:install",
]


def _error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None, **details: object
) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message, **details}},
        status_code=status,
        headers=headers,
    )


def _validation_message(exc: RequestValidationError, content_type: str = "") -> tuple[int, str]:
    parts = []
    status = 422
    json_sent = content_type.split(";")[0].strip().lower().endswith(("/json", "+json"))
    for err in exc.errors()[:5]:
        if err.get("type") == "json_invalid":
            return 400, "the request body is not valid JSON"
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path")]
        if not loc and not json_sent and err.get("type") in ("model_attributes_type", "dict_type"):
            sent = f"Content-Type {content_type!r}" if content_type else "no Content-Type"
            return 422, f"send a JSON object with Content-Type: application/json (got {sent})"
        where = f"'{'.'.join(loc)}'" if loc else "body"
        msg = str(err.get("msg", "invalid"))
        if err.get("type") == "extra_forbidden":
            msg = "unknown field"
        elif err.get("type") == "missing" and not loc:
            msg = "a JSON object body is required"
        parts.append(f"{where}: {msg}")
    return status, "; ".join(parts) or "invalid request"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(OtpguardError)
    async def otpguard_error(request: Request, exc: OtpguardError) -> JSONResponse:
        if isinstance(exc, StorageError):
            # The store cannot record a store.error event; count it where it can be seen.
            monitor = getattr(request.app.state, "monitor", None)
            if monitor is not None:
                monitor.metrics.events.labels("store.error").inc()
        headers = {}
        if isinstance(exc, RateLimited):
            headers["Retry-After"] = str(exc.retry_after)
        status = exc.status if exc.status < 500 or exc.status in (502, 503) else 500
        return _error(status, exc.code, exc.message, headers, **exc.details())

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        status, message = _validation_message(exc, request.headers.get("content-type", "")[:100])
        return _error(status, "invalid_request", message)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {401: "unauthorized", 403: "forbidden", 404: "not_found"}.get(
            exc.status_code, "invalid_request"
        )
        message = {404: "no such endpoint", 405: "method not allowed"}.get(
            exc.status_code, str(exc.detail)
        )
        return _error(exc.status_code, code, message, dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected error: %s", type(exc).__name__)  # no args: they may hold secrets
        return _error(500, "internal_error", "internal error")


def _install_docs(app: FastAPI) -> None:
    # fastapi-offline's package data: Swagger UI 5, which reads the OpenAPI 3.1 FastAPI
    # writes (swagger-ui-bundle's 4.15 rendered nothing). Only its static files are used.
    static = Path(str(importlib.resources.files("fastapi_offline") / "static"))
    app.mount("/docs/static", StaticFiles(directory=static), name="swagger-static")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="otpguard API",
            swagger_js_url="/docs/static/swagger-ui-bundle.js",
            swagger_css_url="/docs/static/swagger-ui.css",
            swagger_favicon_url="/docs/static/favicon.png",
        )


def _install_extensions(app: FastAPI) -> None:
    for target in EXTENSIONS:
        module_name, func = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue  # that capability is not built into this version
            raise
        if hasattr(module, func):
            getattr(module, func)(app)
        elif hasattr(module, "router"):
            app.include_router(module.router)


#: A serving process's young generation: collected after this many net container
#: allocations (Python's default is 700). A request frees nearly everything it makes
#: by reference counting, so the net count seldom climbs this far. At 700 one
#: collected about every ten pairs, and about one in a thousand pairs waited on a full
#: collection of the whole start-up heap, 68-90 ms long (bench/gc_cost.py).
GC_YOUNG = 20_000


def tune_gc() -> None:
    """For a process that serves from now on: freeze what start-up made (it is never
    collected, and a full collection no longer walks it), then collect less often.
    Cyclic garbage is still collected, once 20,000 more objects are alive than freed."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG, middle, old)


def _lifespan(verifier: Verifier, background: bool, serving: bool) -> Callable[[FastAPI], Any]:
    """Open the engine, run the periodic jobs (with ``background``), close it all;
    ``serving``: then tune the process's collector (``tune_gc``)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await verifier.open()
        if serving:
            tune_gc()
        stop = asyncio.Event()
        tasks = []
        if background:
            tasks.append(asyncio.create_task(verifier.run_maintenance(stop)))
            tasks.extend(asyncio.create_task(job(stop)) for job in app.state.jobs)
        try:
            yield
        finally:
            stop.set()
            for t in tasks:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(t, timeout=5)
            await verifier.aclose()

    return lifespan


def create_app(
    settings: Settings,
    verifier: Verifier | None = None,
    *,
    clock: Clock = system_clock,
    background: bool = True,
    serving: bool = False,
) -> FastAPI:
    """Build the app. Without ``verifier``, one is made from the settings (store by URL,
    transport by name). ``background`` runs the purge job (and other periodic jobs);
    ``serving`` (``otpguard serve``'s processes) tunes the collector once started, which
    a library's host process or a test suite keeps for itself."""
    settings = check_startup(settings)
    if verifier is None:
        verifier = Verifier(
            settings,
            store_from_url(settings.core.store_url),
            transport_from_settings(settings),
            clock=clock,
            email_transport=email_transport_from_settings(settings),
        )
    jobs: list[Callable[[asyncio.Event], Any]] = []
    app = FastAPI(
        title="otpguard",
        version=VERSION,
        summary="Self-hosted, secure one-time-passcode verification.",
        docs_url=None,
        redoc_url=None,
        lifespan=_lifespan(verifier, background, serving),
    )
    app.state.settings = settings
    app.state.verifier = verifier
    app.state.jobs = jobs
    app.state.key_cache = KeyCache(settings.core.api_key_cache_ttl)
    install_error_handlers(app)
    app.include_router(api_router)
    _install_docs(app)

    @app.get("/noop", include_in_schema=False)
    async def noop() -> Response:
        """The cheapest request this server answers: the benchmarks' ceiling."""
        return Response(b"ok", media_type="text/plain")

    _install_extensions(app)
    app.add_middleware(BodyLimitMiddleware)
    app.add_middleware(SecurityHeadersMiddleware)
    return app


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory`` and worker processes: settings from the environment."""
    return create_app(load_settings(), serving=True)
