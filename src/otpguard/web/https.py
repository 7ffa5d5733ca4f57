"""HTTPS only, and proxies trusted by configuration alone.

One pure ASGI middleware, installed by ``create_app`` through ``install(app)``:

1. **Who is the peer?** The socket peer (``scope["client"]``) is a trusted proxy
   only if its address is inside one of ``OTPGUARD_TRUSTED_PROXIES`` (CIDRs).
   From anyone else, ``X-Forwarded-Proto`` and ``X-Forwarded-For`` are ignored:
   a spoofed header changes neither the scheme nor the client IP.
2. **Scheme.** From a trusted proxy, the right-most ``X-Forwarded-Proto`` value
   (the one the nearest proxy wrote) replaces ``scope["scheme"]``; otherwise the
   socket's own scheme (``https`` when uvicorn terminates TLS) stands.
3. **Client IP.** From a trusted proxy, ``X-Forwarded-For`` is walked right to
   left, skipping trusted hops; the first untrusted address is the client. If
   every hop is trusted, the left-most one is. A malformed entry stops the walk
   and the last good hop (a trusted proxy) is used, so garbage cannot inject an
   address. The result goes to ``scope["client"]`` (what ``request.client``
   reads) and to ``request.state.client_ip``.
4. **HTTPS only in production.** A plain-HTTP request is refused with
   ``403 https_required``, never redirected: a redirect would silently fix a
   client that has just sent an API key in clear, and nobody would learn that
   the key must be rotated. Such requests carrying ``Authorization`` are logged
   (peer and method only) so the operator can rotate the key. Exceptions:

   * ``GET``/``HEAD`` of browser pages (``/dashboard``, ``/demo``, ``/docs``) get a
     ``308`` to the same path over HTTPS (``public_url`` when set, else the
     request's host), since a person typed that address;
   * ``/healthz`` and ``/readyz`` answer over plain HTTP too, because load
     balancers often probe the backend port without TLS. They reveal nothing.

   Development allows plain HTTP everywhere.
5. **HSTS.** ``Strict-Transport-Security: max-age=63072000; includeSubDomains``
   on every HTTPS response, and only on HTTPS responses (browsers ignore it
   over HTTP anyway, and sending it there would mislead an audit).

The client IP here is the *peer's* client. The ``/v1`` API is called by a
business's backend, not by the end user, so its rate limits use the JSON
``client_ip`` the backend passes (authenticated by its API key); without it the
request counts under the shared ``unknown`` bucket, never under the backend's
address. Browser-facing parts (dashboard, demo) use ``request.state.client_ip``.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..config import CoreSection, Settings
from ..errors import HttpsRequired
from .middleware import error_body

if TYPE_CHECKING:
    from fastapi import FastAPI

log = logging.getLogger("otpguard.web.https")

HSTS = (b"strict-transport-security", b"max-age=63072000; includeSubDomains")
#: Answered over plain HTTP even in production (load-balancer probes).
PLAIN_HTTP_PATHS = frozenset({"/healthz", "/readyz"})
#: Browser pages: a plain-HTTP GET is redirected to HTTPS instead of refused.
PAGE_PREFIXES = ("/dashboard", "/demo", "/docs")
_HOST_RE = re.compile(r"^[A-Za-z0-9.\-]+(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_networks(cidrs: Iterable[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(c.strip(), strict=False) for c in cidrs if c.strip())


def _address(text: str) -> Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # "[2001:db8::1]:443"
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # "203.0.113.7:5000"
        text = text.split(":", 1)[0]
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def is_trusted(addr: Address | None, networks: tuple[Network, ...]) -> bool:
    return addr is not None and any(addr in net for net in networks)


def _header_values(scope: Scope, name: bytes) -> list[str]:
    """Every comma-separated value of every ``name`` header, in order."""
    out: list[str] = []
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            out.extend(v.strip() for v in value.decode("latin-1").split(","))
    return out


def client_from_forwarded(peer: Address, hops: list[str], networks: tuple[Network, ...]) -> str:
    """The right-most untrusted hop of ``X-Forwarded-For`` seen from a trusted ``peer``."""
    current = peer
    for raw in reversed(hops):
        addr = _address(raw)
        if addr is None:
            break  # garbage: keep the last good (trusted) hop
        current = addr
        if not is_trusted(addr, networks):
            break
    return str(current)


def resolve(scope: Scope, networks: tuple[Network, ...]) -> tuple[str, str | None]:
    """``(scheme, client_ip)`` for this connection, honouring headers from trusted peers only."""
    secure = scope.get("scheme") in ("https", "wss")
    client = scope.get("client")
    peer_text = str(client[0]) if client else None
    peer = _address(peer_text) if peer_text else None
    if not is_trusted(peer, networks):
        return ("https" if secure else "http"), (str(peer) if peer else peer_text)
    assert peer is not None
    protos = [p.lower() for p in _header_values(scope, b"x-forwarded-proto") if p]
    if protos and protos[-1] in ("https", "http"):
        secure = protos[-1] == "https"
    hops = [h for h in _header_values(scope, b"x-forwarded-for") if h]
    return ("https" if secure else "http"), client_from_forwarded(peer, hops, networks)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            text: str = value.decode("latin-1")
            return text
    return None


class HttpsMiddleware:
    """Resolve scheme and client IP (trusted proxies only); refuse plain HTTP in production;
    add HSTS to HTTPS responses."""

    def __init__(self, app: ASGIApp, core: CoreSection) -> None:
        self.app = app
        self.networks = parse_networks(core.trusted_proxies)
        self.production = core.production
        self.public_url = core.public_url.rstrip("/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        scheme, client_ip = resolve(scope, self.networks)
        websocket = scope["type"] == "websocket"
        scope["scheme"] = ("wss" if scheme == "https" else "ws") if websocket else scheme
        if client_ip is not None:
            port = scope["client"][1] if scope.get("client") else 0
            scope["client"] = (client_ip, port)
        scope.setdefault("state", {})["client_ip"] = client_ip

        if scheme != "https" and self.production:
            if websocket:
                await send({"type": "websocket.close", "code": 1008})
                return
            path: str = scope.get("path", "")
            if path not in PLAIN_HTTP_PATHS:
                await self._refuse(scope, send, client_ip)
                return

        if scheme != "https":
            await self.app(scope, receive, send)
            return

        async def send_with_hsts(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (k, v)
                    for k, v in message.get("headers", [])
                    if k.lower() != b"strict-transport-security"
                ]
                headers.append(HSTS)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_hsts)

    async def _refuse(self, scope: Scope, send: Send, client_ip: str | None) -> None:
        path: str = scope.get("path", "")
        method: str = scope.get("method", "GET")
        is_page = any(path == p or path.startswith(p + "/") for p in PAGE_PREFIXES)
        if method in ("GET", "HEAD") and is_page:
            location = self._https_url(scope, path)
            if location is not None:
                await _respond(send, 308, b"", [(b"location", location.encode("latin-1"))])
                return
        if _header(scope, b"authorization") is not None:
            # Never the header, the path (it may hold a number) or the body: peer and method.
            log.warning(
                "refused a plain-HTTP %s from %s that carried an Authorization header: "
                "the credentials crossed the network in clear; rotate that API key",
                method,
                client_ip or "unknown",
            )
        exc = HttpsRequired(
            "plain HTTP is refused: call this API over https:// (nothing was processed)"
        )
        body = error_body(exc.code, exc.message)
        await _respond(send, exc.status, body, [(b"content-type", b"application/json")])

    def _https_url(self, scope: Scope, path: str) -> str | None:
        query: bytes = scope.get("query_string", b"")
        suffix = path + ("?" + query.decode("latin-1") if query else "")
        if self.public_url.startswith("https://"):
            return self.public_url + suffix
        host = _header(scope, b"host")
        if host is None or not _HOST_RE.match(host):
            return None
        return f"https://{host}{suffix}"


async def _respond(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def install(app: FastAPI) -> None:
    """The ``create_app`` extension hook."""
    settings: Settings = app.state.settings
    app.add_middleware(HttpsMiddleware, core=settings.core)
