"""``otpguard audit --url``: probe a running instance from outside (TLS, HSTS, plain
HTTP, authentication, and one verification whose every response is scanned for the code)."""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from ..transports.file import read_outbox
from .findings import CODE_KEYS, AuditItem, Verdict, fail, ok, warn

TWILIO_MAGIC_VALID = "+15005550006"
HSTS_MIN_AGE = 31_536_000  # one year: what browsers' preload lists ask for


_ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)?$")
_ID = re.compile(r"^VE[0-9a-f]{32}$")
_DIGITS = re.compile(r"(?<!\d)\d{6,10}(?!\d)")
_SKIP_HEADERS = {"date", "content-length", "strict-transport-security"}


def _leaks(value: Any, key: str = "") -> list[str]:
    """Where a JSON document holds something that could be a code."""
    if isinstance(value, dict):
        return [w for k, v in value.items() for w in _leaks(v, f"{key}.{k}" if key else k)]
    if isinstance(value, list):
        return [w for i, v in enumerate(value) for w in _leaks(v, f"{key}[{i}]")]
    leaf = key.rsplit(".", 1)[-1]
    if isinstance(value, bool) or value is None:
        return []
    text = str(value)
    if isinstance(value, str) and (_ISO.match(text) or (leaf == "id" and _ID.match(text))):
        return []
    if _DIGITS.search(text) or (CODE_KEYS.search(leaf) and any(c.isdigit() for c in text)):
        return [key or "body"]
    return []


def response_leaks(r: httpx.Response, code: str | None = None) -> list[str]:
    """Fields or headers of ``r`` that hold (or could hold) a code."""
    where: list[str] = []
    raw = r.content.decode("utf-8", "replace")
    for name, value in r.headers.items():
        suspicious = name.lower() not in _SKIP_HEADERS and _DIGITS.search(value)
        if (code and code in value) or suspicious:
            where.append(f"header {name}")
    if code and code in raw:
        where.append("body")
    try:
        where += _leaks(r.json())
    except ValueError:
        if _DIGITS.search(raw):
            where.append("body")
    return sorted(set(where))


@dataclass
class Remote:
    url: str
    api_key: str | None
    http_url: str | None = None
    verify: ssl.SSLContext | bool = True
    outbox: Path | None = None
    test_number: str = TWILIO_MAGIC_VALID
    timeout: float = 10.0


def _plain_url(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(("http", netloc, "", "", ""))


async def _tls_checks(client: httpx.AsyncClient, remote: Remote) -> list[AuditItem]:
    out: list[AuditItem] = []
    if not remote.url.startswith("https://"):
        return [
            fail("remote.tls", f"{remote.url} is plain HTTP", "audit the https:// address"),
        ]
    try:
        r = await client.get(remote.url + "/healthz")
    except httpx.HTTPError as exc:
        return [
            fail(
                "remote.tls",
                f"no verified TLS connection to {remote.url} ({type(exc).__name__})",
                "check the certificate (pass --cacert for a private CA) and the address",
            )
        ]
    out.append(ok("remote.tls", f"TLS with a verified certificate at {remote.url}"))
    hsts = r.headers.get("strict-transport-security", "")
    m = re.search(r"max-age=([0-9]+)", hsts)
    if not m:
        out.append(
            fail(
                "remote.hsts",
                "no Strict-Transport-Security header on an HTTPS response",
                "serve through otpguard's HTTPS middleware, or add HSTS at your proxy",
            )
        )
    elif int(m.group(1)) < HSTS_MIN_AGE or "includesubdomains" not in hsts.lower():
        out.append(
            warn(
                "remote.hsts",
                f"weak HSTS: {hsts}",
                "send max-age=63072000; includeSubDomains (a proxy may be overriding it)",
            )
        )
    else:
        out.append(ok("remote.hsts", f"Strict-Transport-Security: {hsts}"))
    want = {"x-content-type-options": "nosniff", "cache-control": "no-store"}
    missing = [k for k, v in want.items() if v not in r.headers.get(k, "")]
    if missing:
        out.append(
            warn(
                "remote.headers",
                "missing security headers: " + ", ".join(missing),
                "do not let your proxy strip otpguard's response headers",
            )
        )
    else:
        out.append(ok("remote.headers", "nosniff, no-store and the other security headers set"))
    return out


async def _plain_http_check(client: httpx.AsyncClient, remote: Remote) -> AuditItem:
    base = remote.http_url or _plain_url(remote.url)
    url = base + "/v1/verifications"

    async def probe(headers: dict[str, str]) -> httpx.Response | None:
        try:
            return await client.post(url, json={}, headers=headers)
        except httpx.HTTPError:
            return None

    spoofed = await probe({"X-Forwarded-Proto": "https"})
    if spoofed is None:
        return ok("remote.plain_http", f"nothing answers plain HTTP at {base}")
    if spoofed.is_redirect:
        return warn(
            "remote.plain_http",
            f"plain-HTTP API requests at {base} are redirected, not refused: clients "
            "that send keys in clear never notice",
            "refuse plain HTTP with 403 at your proxy, or let otpguard answer it",
        )
    code = _error_code(spoofed)
    if spoofed.status_code == 403 and code == "https_required":
        return ok(
            "remote.plain_http",
            f"plain HTTP at {base} refused with 403 https_required, even with a forged "
            "X-Forwarded-Proto",
        )
    plain = await probe({})
    if plain is not None and plain.status_code == 403 and _error_code(plain) == "https_required":
        return warn(
            "remote.plain_http",
            "plain HTTP is refused, but this host's X-Forwarded-Proto is trusted",
            "run the audit from outside OTPGUARD_TRUSTED_PROXIES",
        )
    return fail(
        "remote.plain_http",
        f"the API answers plain HTTP at {base} (HTTP {spoofed.status_code})",
        "set OTPGUARD_ENV=production, or stop forwarding plain HTTP to otpguard",
    )


def _error_code(r: httpx.Response) -> str | None:
    try:
        body = r.json()
    except ValueError:
        return None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        code = body["error"].get("code")
        return code if isinstance(code, str) else None
    return None


def _sent_code(outbox: Path | None, verification_id: str) -> str | None:
    if outbox is None:
        return None
    for msg in reversed(read_outbox(outbox)):
        if msg.get("verification_id") == verification_id:
            code = msg.get("code")
            return str(code) if code is not None else None
    return None


async def _auth_check(client: httpx.AsyncClient, remote: Remote) -> AuditItem:
    r = await client.get(remote.url + "/v1/verifications/VE" + "0" * 32)
    if r.status_code == 401:
        return ok("remote.auth", "the API refuses requests without an API key (401)")
    return fail(
        "remote.auth",
        f"a request without an API key got HTTP {r.status_code}",
        "put otpguard's /v1 API behind its API keys; do not strip Authorization at the proxy",
    )


async def _code_probe(client: httpx.AsyncClient, remote: Remote) -> AuditItem:
    id_ = "remote.code_never_returned"
    if not remote.api_key:
        return warn(
            id_,
            "skipped: no API key",
            "pass --api-key-file (or set OTPGUARD_API_KEY) to probe the API",
        )
    auth = {"Authorization": f"Bearer {remote.api_key}"}
    r = await client.post(
        remote.url + "/v1/verifications",
        json={"to": remote.test_number, "channel": "sms"},
        headers=auth,
    )
    if r.status_code >= 500:
        return fail(id_, f"starting a verification failed with HTTP {r.status_code}", "see logs")
    leaks = response_leaks(r)
    if r.status_code != 201:
        detail = (
            f"the probe to {remote.test_number} was refused ({_error_code(r) or r.status_code})"
        )
        if leaks:
            return fail(id_, detail + "; the refusal held digits at " + ", ".join(leaks), "")
        return warn(
            id_,
            detail + ", so no response holding a live code could be inspected",
            "set OTPGUARD_AUDIT_TEST_NUMBER to a number your policy allows "
            "(a Twilio magic number with test credentials)",
        )
    vid = str(r.json().get("id", ""))
    responses = [("start", r)]
    if re.fullmatch(r"[A-Za-z0-9_-]{1,64}", vid):
        base = f"{remote.url}/v1/verifications"
        responses.append(("get", await client.get(f"{base}/{vid}", headers=auth)))
        responses.append(
            (
                "check",
                await client.post(
                    f"{base}/check", json={"id": vid, "code": "000000"}, headers=auth
                ),
            )
        )
        responses.append(("cancel", await client.post(f"{base}/{vid}/cancel", headers=auth)))
    code = _sent_code(remote.outbox, vid)
    found = [f"{name}: {w}" for name, resp in responses for w in response_leaks(resp, code)]
    how = "compared with the code sent" if code else "scanned for code-like digits"
    if found:
        return fail(
            id_,
            "a response may carry the code: " + ", ".join(found),
            "remove the code from every response; only the phone may see it",
        )
    return ok(
        id_,
        f"start, get, check and cancel responses (headers and bodies) {how}: no code",
    )


async def audit_remote(remote: Remote) -> list[AuditItem]:
    remote.url = remote.url.rstrip("/")
    async with httpx.AsyncClient(
        verify=remote.verify, timeout=remote.timeout, follow_redirects=False
    ) as client:
        out = await _tls_checks(client, remote)
        out.append(await _plain_http_check(client, remote))
        if out[0].status is Verdict.FAIL:
            return out
        out.append(await _auth_check(client, remote))
        out.append(await _code_probe(client, remote))
    return out
