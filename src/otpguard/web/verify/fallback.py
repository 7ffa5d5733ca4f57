"""What no /v2 route serves, answered in Twilio's shape: a path that names no
resource is 20404 (404); a resource asked with a method it does not take is 20004
(405, with ``Allow``). Installed after every other /v2 router."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from starlette.routing import Match, Route

from . import attempts, checks, routes
from .errors import METHOD_NOT_ALLOWED, TwilioError, TwilioRoute, not_found
from .services import AuthDep

router = APIRouter(route_class=TwilioRoute, include_in_schema=False)

_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


def _allowed(request: Request) -> set[str]:
    """The methods of the /v2 routes whose path matches this request's."""
    scope = {**request.scope, "path": request.url.path.removeprefix("/v2"), "root_path": ""}
    methods: set[str] = set()
    for route in [*routes.router.routes, *checks.router.routes, *attempts.router.routes]:
        if isinstance(route, Route) and route.matches(scope)[0] is not Match.NONE:
            methods |= route.methods or set()
    return methods


@router.api_route("/{path:path}", methods=_METHODS)
async def unknown(request: Request, who: AuthDep) -> Response:
    allowed = _allowed(request)
    if allowed:
        raise TwilioError(
            METHOD_NOT_ALLOWED, 405, "Method not allowed", {"Allow": ", ".join(sorted(allowed))}
        )
    raise not_found(request)
