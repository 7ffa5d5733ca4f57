"""Phone login for Django, with otpguard: the views, in a one-file project.

From the repository's root, in the venv of the README's install, once
``.venv/bin/pip install -e '.[examples]'`` has added Django:

    .venv/bin/otpguard serve                                                   # terminal 1
    .venv/bin/otpguard api-keys create --name django-example                   # prints the key
    OTPGUARD_API_KEY=<key> .venv/bin/python examples/django_app.py runserver   # terminal 2

then open http://127.0.0.1:8002 (``runserver`` alone listens there, on ``PORT`` if set;
an address after it works as in any Django project). The code appears in the
``otpguard serve`` console.

In your own project, copy the view functions (``login_start``,
``login_resend``, ``login_check``) into a views module, add ``OTPGUARD_URL`` and
``OTPGUARD_API_KEY`` to settings.py, and map the URLs. On success, log the user
in with ``django.contrib.auth.login`` for the account that owns the number; this
file keeps the number in the session so it needs no database.
"""

from __future__ import annotations

import logging
import os
import sys

import django
import phonenumbers
from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template import engines
from django.urls import path
from django.views.decorators.http import require_GET, require_POST

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

if not settings.configured:
    settings.configure(
        DEBUG=os.environ.get("DJANGO_DEBUG", "1") == "1",
        SECRET_KEY=os.environ.get("DJANGO_SECRET_KEY", "dev-only-" + os.urandom(16).hex()),
        ROOT_URLCONF=__name__,
        ALLOWED_HOSTS=["127.0.0.1", "localhost", "testserver"],
        INSTALLED_APPS=[],
        MIDDLEWARE=[
            "django.contrib.sessions.middleware.SessionMiddleware",
            "django.middleware.csrf.CsrfViewMiddleware",
        ],
        SESSION_ENGINE="django.contrib.sessions.backends.signed_cookies",
        TEMPLATES=[{"BACKEND": "django.template.backends.django.DjangoTemplates"}],
        OTPGUARD_URL=os.environ.get("OTPGUARD_URL", "http://127.0.0.1:8000"),
        OTPGUARD_API_KEY=os.environ.get("OTPGUARD_API_KEY", ""),
    )
    django.setup()

log = logging.getLogger("django_app")

INVALID_NUMBER = "Enter a valid mobile number, like 07400 123456 or +44 7400 123456."
NOT_SENT = "We couldn't send a code to that number. Check it, or try again later."
UNAVAILABLE = "Signing in by phone is unavailable right now. Try again in a few minutes."
NO_LONGER_VALID = "This code can no longer be used. Ask for a new one."
OUTAGE = (Unreachable, StorageError, Unauthorized, Forbidden)  # our problem, not the user's

PAGE = engines["django"].from_string(
    """<!doctype html><title>Sign in</title>
{% if error %}<p class="error">{{ error }}</p>{% endif %}
{% if user %}
  <p>Signed in as {{ user }}.</p>
  <form method="post" action="/logout">{% csrf_token %}<button>Sign out</button></form>
{% elif step == "code" %}
  <p>We sent a code to {{ masked }}.</p>
  <form method="post" action="/login/code">{% csrf_token %}
    <label>Code <input name="code" inputmode="numeric" autocomplete="one-time-code"></label>
    <button>Sign in</button>
  </form>
  <form method="post" action="/login/resend">{% csrf_token %}<button>Resend code</button></form>
{% else %}
  <form method="post" action="/login">{% csrf_token %}
    <label>Mobile number <input name="phone" type="tel" autocomplete="tel"></label>
    <button>Send code</button>
  </form>
{% endif %}"""
)


_clients: dict[tuple[str, str], Client] = {}


def otp() -> Client:
    """One client (one connection pool) per configured server, shared by request threads."""
    key = (settings.OTPGUARD_URL, settings.OTPGUARD_API_KEY)
    client = _clients.get(key)
    if client is None:
        client = _clients.setdefault(key, Client(*key))
    return client


def client_ip(request: HttpRequest) -> str | None:
    # Behind a proxy, REMOTE_ADDR is the proxy: take the user's address from the header
    # your proxy sets, and only from your proxy (docs/integrating.md, "the end user's IP").
    return request.META.get("REMOTE_ADDR")


def e164(raw: str, region: str = "GB") -> str | None:
    """The account key: one spelling per number, whatever the user typed."""
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def page(request: HttpRequest, error: str | None = None, step: str = "phone") -> HttpResponse:
    s = request.session
    if "verification_id" in s and step == "phone" and error is None:
        step = "code"
    context = {"error": error, "step": step, "user": s.get("user"), "masked": s.get("masked")}
    return HttpResponse(PAGE.render(context, request))


@require_GET
def index(request: HttpRequest) -> HttpResponse:
    return page(request)


@require_POST
def login_start(request: HttpRequest) -> HttpResponse:
    phone = e164(request.POST.get("phone", ""))
    if phone is None:
        return page(request, INVALID_NUMBER)
    try:
        v = otp().start(phone, "sms", client_ip=client_ip(request))
    except InvalidPhoneNumber:
        return page(request, INVALID_NUMBER)
    except OUTAGE:
        log.exception("otpguard unavailable")
        return page(request, UNAVAILABLE)
    except OtpguardError as exc:  # refused, rate-limited, delivery failed: all look alike
        log.info("code not sent: %s", exc.code)
        return page(request, NOT_SENT)
    request.session.update({"verification_id": v.id, "phone": phone, "masked": v.to})
    return HttpResponseRedirect("/")


@require_POST
def login_resend(request: HttpRequest) -> HttpResponse:
    vid = request.session.get("verification_id")
    if vid is None:
        return HttpResponseRedirect("/")
    try:
        otp().resend(vid, client_ip=client_ip(request))
    except RateLimited as exc:
        if exc.rule == "cooldown":
            return page(request, f"You can ask for a new code in {exc.retry_after} s.", "code")
        return page(request, NOT_SENT, "code")
    except OUTAGE:
        return page(request, UNAVAILABLE, "code")
    except OtpguardError:
        request.session.pop("verification_id", None)
        return page(request, NO_LONGER_VALID)
    return page(request, "A new code is on its way.", "code")


@require_POST
def login_check(request: HttpRequest) -> HttpResponse:
    vid = request.session.get("verification_id")
    if vid is None:
        return HttpResponseRedirect("/")
    code = request.POST.get("code", "").strip()
    try:
        result = otp().check(code, verification_id=vid, client_ip=client_ip(request))
    except OUTAGE:
        return page(request, UNAVAILABLE, "code")
    except InvalidRequest:
        return page(request, "Enter the code from the message: digits only.", "code")
    except OtpguardError:
        request.session.pop("verification_id", None)
        return page(request, NO_LONGER_VALID)
    if result.valid:
        phone = request.session["phone"]
        request.session.flush()  # a fresh session on login (django.contrib.auth.login does this)
        request.session["user"] = phone
        return HttpResponseRedirect("/")
    if result.status is Status.PENDING:
        left = result.attempts_remaining
        return page(
            request, f"That code isn't right. {left} attempt{'s' * (left != 1)} left.", "code"
        )
    request.session.pop("verification_id", None)
    return page(request, NO_LONGER_VALID)


@require_POST
def logout(request: HttpRequest) -> HttpResponse:
    request.session.flush()
    return HttpResponseRedirect("/")


urlpatterns = [
    path("", index),
    path("login", login_start),
    path("login/resend", login_resend),
    path("login/code", login_check),
    path("logout", logout),
]


if __name__ == "__main__":
    from django.core.management import execute_from_command_line

    if sys.argv[1:] == ["runserver"]:  # not Django's 8000, where otpguard serve listens
        sys.argv.append(f"127.0.0.1:{os.environ.get('PORT', '8002')}")
    execute_from_command_line(sys.argv)
