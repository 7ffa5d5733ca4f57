"""The challenge step: a CAPTCHA token checked server-side with the provider.

When a start needs a challenge, the Verifier raises
:class:`~otpguard.errors.ChallengeRequired` (HTTP 428) carrying :meth:`ChallengeVerifier.describe`;
the backend shows the provider's widget and repeats the same start with the widget's
token as ``challenge_token``. :meth:`ChallengeVerifier.verify` asks the provider's
siteverify API whether the token is good. Cloudflare Turnstile, hCaptcha and
reCAPTCHA share that API's wire format: a form-encoded POST of ``secret``,
``response`` and (optionally) ``remoteip``, answered with JSON holding a boolean
``success`` and, on failure, ``error-codes``.

It fails closed: a timeout, a refused connection, a non-2xx answer, a body that is
not that JSON, or a provider refusing our own secret raise
:class:`~otpguard.errors.ChallengeUnavailable` (HTTP 503, nothing sent). The whole
call, connection included, is bounded by ``OTPGUARD_CHALLENGE_TIMEOUT``.

Neither the token nor the secret is ever logged, echoed in an error or stored;
:func:`token_fingerprint` gives the Verifier a hash to remember a token by, so that
each token admits one start only (the providers also refuse a second siteverify of
the same token, with ``timeout-or-duplicate`` or hCaptcha's ``already-seen-response``).
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import json
import logging
import re
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

import httpx

from .errors import ChallengeUnavailable, ConfigError
from .limits import UNKNOWN_IP
from .version import VERSION

if TYPE_CHECKING:
    from .config import ChallengeSection

log = logging.getLogger("otpguard.challenge")

Provider = Literal["turnstile", "hcaptcha", "recaptcha"]
Mode = Literal["pressure", "always"]

#: Each provider's own siteverify endpoint (their server-side validation docs).
VERIFY_URLS: dict[str, str] = {
    "turnstile": "https://challenges.cloudflare.com/turnstile/v0/siteverify",
    "hcaptcha": "https://api.hcaptcha.com/siteverify",
    "recaptcha": "https://www.google.com/recaptcha/api/siteverify",
}

#: Longest token sent to a provider. Turnstile documents 2048 characters; hCaptcha
#: and reCAPTCHA document no maximum, so they get a looser (still bounded) cap.
MAX_TOKEN_LENGTH: dict[str, int] = {"turnstile": 2048, "hcaptcha": 4096, "recaptcha": 4096}
#: The /v1 field's own bound: the loosest of the caps above.
TOKEN_FIELD_MAX = max(MAX_TOKEN_LENGTH.values())
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_\-.:+/=]+$")  # base64(url) and dots; no spaces
_SITE_KEY_RE = re.compile(r"^[A-Za-z0-9_\-.]+$")
_MAX_BODY = 64 * 1024  # a siteverify answer is a few hundred bytes
#: error-codes meaning our configuration is wrong, not the user's token.
_OUR_FAULT = frozenset({"missing-input-secret", "invalid-input-secret", "sitekey-secret-mismatch"})
_LOOPBACK_NAMES = frozenset({"localhost"})


def token_fingerprint(token: str) -> str:
    """A stable hash of a token, for remembering that it was used (never the token)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def challenge_problems(section: ChallengeSection) -> list[str]:
    """Why the challenge settings cannot work (empty when they can), every one named."""
    problems: list[str] = []
    on = section.provider != "off"
    secret = section.secret.get_secret_value()
    if not on:
        stray = [
            name
            for name, value in (
                ("OTPGUARD_CHALLENGE_SITE_KEY", section.site_key),
                ("OTPGUARD_CHALLENGE_SECRET", secret),
                ("OTPGUARD_CHALLENGE_VERIFY_URL", section.verify_url),
            )
            if value
        ]
        if section.mode == "always":
            stray.append("OTPGUARD_CHALLENGE_MODE=always")
        if stray:
            problems.append(
                f"{', '.join(stray)} set but OTPGUARD_CHALLENGE_PROVIDER is off: set the "
                "provider (turnstile, hcaptcha or recaptcha) or unset them"
            )
        return problems
    if not section.site_key:
        problems.append(
            "OTPGUARD_CHALLENGE_SITE_KEY is not set: copy the site key from your "
            f"{section.provider} dashboard"
        )
    elif not _SITE_KEY_RE.fullmatch(section.site_key):
        problems.append(
            "OTPGUARD_CHALLENGE_SITE_KEY has characters a site key does not have "
            "(letters, digits, '-', '_' and '.' only)"
        )
    if not secret:
        problems.append(
            "OTPGUARD_CHALLENGE_SECRET is not set: copy the secret key from your "
            f"{section.provider} dashboard"
        )
    elif not secret.isprintable() or secret != secret.strip():
        problems.append("OTPGUARD_CHALLENGE_SECRET has spaces or control characters")
    url = section.verify_url
    if url:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            problems.append(
                f"OTPGUARD_CHALLENGE_VERIFY_URL {url!r} is not an http(s) URL with a host"
            )
        elif parts.username or parts.password:
            problems.append("OTPGUARD_CHALLENGE_VERIFY_URL must not hold credentials")
        elif section.production and parts.scheme != "https" and not _is_loopback(parts.hostname):
            problems.append(
                "OTPGUARD_CHALLENGE_VERIFY_URL must be https in production (plain http only "
                "to a loopback address: the secret travels in the request)"
            )
    return problems


class ChallengeVerifier:
    """Checks CAPTCHA tokens with one provider's siteverify API."""

    def __init__(
        self,
        provider: Provider,
        site_key: str,
        secret: str,
        *,
        mode: Mode = "pressure",
        verify_url: str | None = None,
        timeout: float = 3.0,
    ) -> None:
        self.provider: Provider = provider
        self.site_key = site_key
        self.mode: Mode = mode
        self.verify_url = verify_url or VERIFY_URLS[provider]
        self.timeout = timeout
        self._secret = secret
        self._max_token = MAX_TOKEN_LENGTH[provider]
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            follow_redirects=False,
            headers={"User-Agent": f"otpguard/{VERSION}"},
        )

    @classmethod
    def from_section(cls, section: ChallengeSection) -> ChallengeVerifier | None:
        """The verifier the settings describe; ``None`` when the provider is ``off``."""
        problems = challenge_problems(section)
        if problems:
            raise ConfigError("the challenge step is not ready:\n  - " + "\n  - ".join(problems))
        if section.provider == "off":
            return None
        return cls(
            section.provider,
            section.site_key,
            section.secret.get_secret_value(),
            mode=section.mode,
            verify_url=section.verify_url or None,
            timeout=section.timeout,
        )

    def __repr__(self) -> str:  # never the secret
        return f"ChallengeVerifier(provider={self.provider!r}, mode={self.mode!r})"

    def describe(self) -> dict[str, str]:
        """What a browser needs to show the widget (both values are public)."""
        return {"provider": self.provider, "site_key": self.site_key}

    def well_formed(self, token: object) -> bool:
        """A string a provider could have issued: bounded, base64-like, no spaces."""
        return (
            isinstance(token, str)
            and 0 < len(token) <= self._max_token
            and _TOKEN_RE.fullmatch(token) is not None
        )

    async def verify(self, token: str, remote_ip: str | None) -> bool:
        """True when the provider says the token passed; False when it says no (or the
        token is malformed and was not sent). Raises ``ChallengeUnavailable`` when the
        provider cannot be asked or gives no usable answer."""
        if not self.well_formed(token):
            log.info("challenge: malformed token refused without asking %s", self.provider)
            return False
        form = {"secret": self._secret, "response": token}
        if remote_ip and remote_ip != UNKNOWN_IP:
            form["remoteip"] = remote_ip
        try:
            async with asyncio.timeout(self.timeout):
                status, body = await self._post(form)
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise self._unavailable(f"did not answer within {self.timeout:g} s") from exc
        except httpx.HTTPError as exc:
            raise self._unavailable(f"could not be reached ({type(exc).__name__})") from exc
        if not 200 <= status < 300:
            raise self._unavailable(f"answered HTTP {status}")
        success, codes = _parse(body)
        if success is None:
            raise self._unavailable("answered without a siteverify result")
        if success:
            return True
        if _OUR_FAULT.intersection(codes):
            # Every token would fail: that is our configuration, not the user's doing.
            log.error(
                "challenge: %s refused otpguard's secret (%s): check OTPGUARD_CHALLENGE_SECRET",
                self.provider,
                ", ".join(sorted(_OUR_FAULT.intersection(codes))),
            )
            raise ChallengeUnavailable("the CAPTCHA provider refused otpguard's configuration")
        log.info("challenge: %s refused a token (%s)", self.provider, ", ".join(codes) or "-")
        return False

    async def _post(self, form: dict[str, str]) -> tuple[int, bytes]:
        async with self._http.stream("POST", self.verify_url, data=form) as response:
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > _MAX_BODY:
                    return response.status_code, b""  # not a siteverify answer
                chunks.append(chunk)
            return response.status_code, b"".join(chunks)

    def _unavailable(self, why: str) -> ChallengeUnavailable:
        log.warning("challenge: %s siteverify %s; nothing sent", self.provider, why)
        return ChallengeUnavailable(f"the CAPTCHA provider {why}; nothing was sent")

    async def aclose(self) -> None:
        await self._http.aclose()


def _parse(body: bytes) -> tuple[bool | None, list[str]]:
    """``success`` (None when the body is not a siteverify answer) and the error codes,
    kept short and printable so that they can be logged."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None, []
    if not isinstance(data, dict) or not isinstance(data.get("success"), bool):
        return None, []
    raw = data.get("error-codes")
    codes = (
        [c[:40] for c in raw[:5] if isinstance(c, str) and c.isprintable()]
        if isinstance(raw, list)
        else []
    )
    return data["success"], codes
