"""A client for the otpguard HTTP API: :class:`Client` (sync) and :class:`AsyncClient`.

Your backend talks to otpguard server to server, with an API key
(``otpguard api-keys create --name my-app``)::

    from otpguard import Client, RateLimited

    otp = Client("http://127.0.0.1:8000", api_key)
    v = otp.start("+447400123456", "sms", client_ip=end_user_ip)
    ...
    result = otp.check(typed_code, verification_id=v.id, client_ip=end_user_ip)
    if result.valid:
        log_the_user_in()

A code for a payment names it, and its check must name the same::

    v = otp.start(number, purpose="transaction", amount="25.00", currency="GBP",
                  payee="Acme Ltd")
    result = otp.check(typed_code, verification_id=v.id, purpose="transaction",
                       amount="25.00", currency="GBP", payee="Acme Ltd")

Failures raise the classes of :mod:`otpguard.errors`, rebuilt from the API's
``{"error": {"code", "message", ...}}``: :class:`~otpguard.errors.RateLimited`
(``rule``, ``retry_after``), :class:`~otpguard.errors.DestinationRefused`
(``reason``), :class:`DeliveryFailed` (``reason``, ``provider_code``),
:class:`~otpguard.errors.Conflict` (``reason``),
:class:`~otpguard.errors.ChallengeRequired` (``provider``, ``site_key``, ``reason``:
show the CAPTCHA, then repeat the start with ``challenge_token=``), ... A server that cannot be
reached or does not answer in time raises :class:`Unreachable`. Both mean the
same to a login page: no code was checked, so nobody signs in (fail closed).

The modules: ``clients`` (the two classes, their methods written once), ``calls``
(each call as data, its arguments checked), ``http`` (the connection settings and
reading an answer), ``errors`` (error bodies back into exceptions) and ``results``
(the typed results).
"""

from __future__ import annotations

from ..webhook_signature import WebhookSignatureError, verify_webhook
from .clients import AsyncClient, Client
from .errors import DeliveryFailed, Unreachable
from .errors import error_from_response as error_from_response
from .http import DEFAULT_TIMEOUT
from .http import USER_AGENT as USER_AGENT
from .results import CheckOutcome, VerificationInfo

__all__ = [
    "DEFAULT_TIMEOUT",
    "AsyncClient",
    "CheckOutcome",
    "Client",
    "DeliveryFailed",
    "Unreachable",
    "VerificationInfo",
    "WebhookSignatureError",
    "verify_webhook",
]
