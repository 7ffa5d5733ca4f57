"""Phone login for a FastAPI app, with otpguard's AsyncClient.

From the repository's root, in the venv of the README's install, once
``.venv/bin/pip install -e '.[examples]'`` has added ``itsdangerous`` (Starlette's
session cookie needs it):

    .venv/bin/otpguard serve                                          # terminal 1
    .venv/bin/otpguard api-keys create --name fastapi-example         # prints the key
    OTPGUARD_API_KEY=<key> .venv/bin/python examples/fastapi_app.py   # terminal 2

then open http://127.0.0.1:8001 (``PORT`` changes the port). The code appears in
the ``otpguard serve`` console. ``OTPGUARD_URL`` defaults to http://127.0.0.1:8000.
Production: set SESSION_SECRET, serve behind HTTPS, protect
the forms against CSRF.
"""

from __future__ import annotations

import contextlib
import html
import logging
import os
import secrets
from collections.abc import AsyncIterator
from urllib.parse import parse_qs

import phonenumbers
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.middleware.sessions import SessionMiddleware

from otpguard.client import AsyncClient, Unreachable
from otpguard.errors import (
    Forbidden,
    InvalidPhoneNumber,
    InvalidRequest,
    OtpguardError,
    RateLimited,
    StorageError,
    Unauthorized,
)
from otpguard.models import Status

log = logging.getLogger("fastapi_app")

INVALID_NUMBER = "Enter a valid mobile number, like 07400 123456 or +44 7400 123456."
NOT_SENT = "We couldn't send a code to that number. Check it, or try again later."
UNAVAILABLE = "Signing in by phone is unavailable right now. Try again in a few minutes."
NO_LONGER_VALID = "This code can no longer be used. Ask for a new one."
OUTAGE = (Unreachable, StorageError, Unauthorized, Forbidden)  # our problem, not the user's

PHONE_FORM = """<form method="post" action="/login">
  <label>Mobile number <input name="phone" type="tel" autocomplete="tel"></label>
  <button>Send code</button></form>"""
CODE_FORM = """<p>We sent a code to {masked}.</p>
<form method="post" action="/login/code">
  <label>Code <input name="code" inputmode="numeric" autocomplete="one-time-code"></label>
  <button>Sign in</button></form>
<form method="post" action="/login/resend"><button>Resend code</button></form>"""
SIGNED_IN = """<p>Signed in as {user}.</p>
<form method="post" action="/logout"><button>Sign out</button></form>"""


def e164(raw: str, region: str = "GB") -> str | None:
    """The account key: one spelling per number, whatever the user typed."""
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


async def form(request: Request) -> dict[str, str]:
    """A urlencoded form without python-multipart (FastAPI's Form() needs it)."""
    fields = parse_qs((await request.body()).decode(errors="replace"))
    return {k: v[0] for k, v in fields.items()}


def ip(request: Request) -> str | None:
    # Behind a proxy, run uvicorn with --proxy-headers --forwarded-allow-ips=<proxy>.
    return request.client.host if request.client else None


def create_app(otp: AsyncClient | None = None) -> FastAPI:
    client = otp or AsyncClient()  # OTPGUARD_URL, OTPGUARD_API_KEY

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await client.aclose()

    app = FastAPI(lifespan=lifespan)
    secret = os.environ.get("SESSION_SECRET") or secrets.token_hex(32)
    app.add_middleware(SessionMiddleware, secret_key=secret, same_site="lax")

    def page(request: Request, error: str | None = None, step: str | None = None) -> HTMLResponse:
        s = request.session
        step = step or ("user" if "user" in s else "code" if "verification_id" in s else "phone")
        body = {
            "user": SIGNED_IN.format(user=html.escape(s.get("user", ""))),
            "code": CODE_FORM.format(masked=html.escape(s.get("masked", ""))),
            "phone": PHONE_FORM,
        }[step]
        notice = f'<p class="error">{html.escape(error)}</p>' if error else ""
        return HTMLResponse(f"<!doctype html><title>Sign in</title>{notice}{body}")

    @app.get("/")
    async def index(request: Request) -> HTMLResponse:
        return page(request)

    @app.post("/login")
    async def start(request: Request) -> Response:
        phone = e164((await form(request)).get("phone", ""))
        if phone is None:
            return page(request, INVALID_NUMBER, "phone")
        try:
            v = await client.start(phone, "sms", client_ip=ip(request))
        except InvalidPhoneNumber:
            return page(request, INVALID_NUMBER, "phone")
        except OUTAGE:
            log.exception("otpguard unavailable")
            return page(request, UNAVAILABLE, "phone")
        except OtpguardError as exc:  # refused, rate-limited, delivery failed: all look alike
            log.info("code not sent: %s", exc.code)
            return page(request, NOT_SENT, "phone")
        request.session.update(verification_id=v.id, phone=phone, masked=v.to)
        return RedirectResponse("/", status_code=303)

    @app.post("/login/resend")
    async def resend(request: Request) -> Response:
        vid = request.session.get("verification_id")
        if vid is None:
            return RedirectResponse("/", status_code=303)
        try:
            await client.resend(vid, client_ip=ip(request))
        except RateLimited as exc:
            if exc.rule == "cooldown":
                return page(request, f"You can ask for a new code in {exc.retry_after} s.")
            return page(request, NOT_SENT)
        except OUTAGE:
            return page(request, UNAVAILABLE)
        except OtpguardError:
            request.session.pop("verification_id", None)
            return page(request, NO_LONGER_VALID)
        return page(request, "A new code is on its way.")

    @app.post("/login/code")
    async def check(request: Request) -> Response:
        vid = request.session.get("verification_id")
        if vid is None:
            return RedirectResponse("/", status_code=303)
        code = (await form(request)).get("code", "").strip()
        try:
            result = await client.check(code, verification_id=vid, client_ip=ip(request))
        except OUTAGE:
            return page(request, UNAVAILABLE)
        except InvalidRequest:
            return page(request, "Enter the code from the message: digits only.")
        except OtpguardError:
            request.session.pop("verification_id", None)
            return page(request, NO_LONGER_VALID)
        if result.valid:
            phone = request.session["phone"]
            request.session.clear()
            request.session["user"] = phone
            return RedirectResponse("/", status_code=303)
        if result.status is Status.PENDING:
            left = result.attempts_remaining
            return page(request, f"That code isn't right. {left} attempt{'s' * (left != 1)} left.")
        request.session.pop("verification_id", None)
        return page(request, NO_LONGER_VALID)

    @app.post("/logout")
    async def logout(request: Request) -> Response:
        request.session.clear()
        return RedirectResponse("/", status_code=303)

    return app


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(create_app(), host="127.0.0.1", port=int(os.environ.get("PORT", "8001")))
