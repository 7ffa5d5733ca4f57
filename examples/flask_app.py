"""Phone login for a Flask app, with otpguard.

From the repository's root, in the venv of the README's install, once
``.venv/bin/pip install -e '.[examples]'`` has added Flask:

    .venv/bin/otpguard serve                                        # terminal 1
    .venv/bin/otpguard api-keys create --name flask-example         # prints the key
    OTPGUARD_API_KEY=<key> .venv/bin/python examples/flask_app.py   # terminal 2

then open http://127.0.0.1:5000 (``PORT`` changes the port). The code appears in
the ``otpguard serve`` console. ``OTPGUARD_URL`` defaults to http://127.0.0.1:8000.
Production: set FLASK_SECRET_KEY, serve behind HTTPS, and add CSRF protection to
the forms (Flask-WTF).
"""

from __future__ import annotations

import logging
import os
import secrets

import phonenumbers
from flask import Flask, redirect, render_template_string, request, session, url_for
from werkzeug.wrappers import Response

from otpguard.client import Client, Unreachable
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

log = logging.getLogger("flask_app")

# What the end user reads (docs/integrating.md explains each choice).
INVALID_NUMBER = "Enter a valid mobile number, like 07400 123456 or +44 7400 123456."
NOT_SENT = "We couldn't send a code to that number. Check it, or try again later."
UNAVAILABLE = "Signing in by phone is unavailable right now. Try again in a few minutes."
NO_LONGER_VALID = "This code can no longer be used. Ask for a new one."
OUTAGE = (Unreachable, StorageError, Unauthorized, Forbidden)  # our problem, not the user's

PAGE = """<!doctype html><title>Sign in</title>
{% if error %}<p class="error">{{ error }}</p>{% endif %}
{% if user %}
  <p>Signed in as {{ user }}.</p>
  <form method="post" action="{{ url_for('logout') }}"><button>Sign out</button></form>
{% elif step == "code" %}
  <p>We sent a code to {{ masked }}.</p>
  <form method="post" action="{{ url_for('check') }}">
    <label>Code <input name="code" inputmode="numeric" autocomplete="one-time-code"></label>
    <button>Sign in</button>
  </form>
  <form method="post" action="{{ url_for('resend') }}"><button>Resend code</button></form>
{% else %}
  <form method="post" action="{{ url_for('start') }}">
    <label>Mobile number <input name="phone" type="tel" autocomplete="tel"></label>
    <button>Send code</button>
  </form>
{% endif %}
"""


def e164(raw: str, region: str = "GB") -> str | None:
    """The account key: one spelling per number, whatever the user typed."""
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def create_app(otp: Client | None = None) -> Flask:
    app = Flask(__name__)
    app.secret_key = os.environ.get("FLASK_SECRET_KEY") or secrets.token_hex(32)
    otp = otp or Client()  # OTPGUARD_URL, OTPGUARD_API_KEY

    def page(error: str | None = None, step: str = "phone") -> str:
        return render_template_string(
            PAGE, error=error, step=step, user=session.get("user"), masked=session.get("masked")
        )

    @app.get("/")
    def index() -> str:
        return page(step="code" if "verification_id" in session else "phone")

    @app.post("/login")
    def start() -> str | Response:
        phone = e164(request.form.get("phone", ""))
        if phone is None:
            return page(INVALID_NUMBER)
        try:
            # request.remote_addr: behind a proxy, use werkzeug's ProxyFix so this is the user.
            v = otp.start(phone, "sms", client_ip=request.remote_addr)
        except InvalidPhoneNumber:
            return page(INVALID_NUMBER)
        except OUTAGE:
            log.exception("otpguard unavailable")
            return page(UNAVAILABLE)
        except OtpguardError as exc:  # refused, rate-limited, delivery failed: all look alike
            log.info("code not sent: %s", exc.code)
            return page(NOT_SENT)
        session.update(verification_id=v.id, phone=phone, masked=v.to)
        return redirect(url_for("index"))

    @app.post("/login/resend")
    def resend() -> str | Response:
        vid = session.get("verification_id")
        if vid is None:
            return redirect(url_for("index"))
        try:
            otp.resend(vid, client_ip=request.remote_addr)
        except RateLimited as exc:
            if exc.rule == "cooldown":
                return page(f"You can ask for a new code in {exc.retry_after} s.", "code")
            return page(NOT_SENT, "code")
        except OUTAGE:
            return page(UNAVAILABLE, "code")
        except OtpguardError:
            session.pop("verification_id", None)
            return page(NO_LONGER_VALID)
        return page("A new code is on its way.", "code")

    @app.post("/login/code")
    def check() -> str | Response:
        vid = session.get("verification_id")
        if vid is None:
            return redirect(url_for("index"))
        try:
            result = otp.check(
                request.form.get("code", "").strip(),
                verification_id=vid,
                client_ip=request.remote_addr,
            )
        except OUTAGE:
            return page(UNAVAILABLE, "code")
        except InvalidRequest:
            return page("Enter the code from the message: digits only.", "code")
        except OtpguardError:
            session.pop("verification_id", None)
            return page(NO_LONGER_VALID)
        if result.valid:
            phone = session["phone"]
            session.clear()  # a fresh session on login
            session["user"] = phone
            return redirect(url_for("index"))
        if result.status is Status.PENDING:
            left = result.attempts_remaining
            return page(f"That code isn't right. {left} attempt{'s' * (left != 1)} left.", "code")
        session.pop("verification_id", None)
        return page(NO_LONGER_VALID)

    @app.post("/logout")
    def logout() -> Response:
        session.clear()
        return redirect(url_for("index"))

    return app


if __name__ == "__main__":
    create_app().run(host="127.0.0.1", port=int(os.environ.get("PORT", "5000")))
