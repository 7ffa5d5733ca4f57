"""Twilio Verify v2-compatible endpoints under ``/v2``: move by changing one URL.

A Twilio client (the official SDKs, or plain HTTP) pointed at otpguard instead
of ``https://verify.twilio.com`` keeps working, and every otpguard protection
still applies: the calls go through :class:`otpguard.service.Verifier` like
``/v1`` ones (destination policy, fraud rules, rate limits, HMAC storage,
events) with otpguard's defaults (5-minute expiry, 3 sends per 10 minutes)::

    GET    /v2/Services                                   the key's services, paged
    POST   /v2/Services                                   create a service (201)
    GET    /v2/Services/{ServiceSid}                      fetch it
    POST   /v2/Services/{ServiceSid}                      update FriendlyName, CodeLength
    DELETE /v2/Services/{ServiceSid}                      delete it (204)
    POST   /v2/Services/{ServiceSid}/Verifications        To, Channel, Locale,
                                                          CustomFriendlyName, DeviceIp,
                                                          Amount, Payee (201)
    GET    /v2/Services/{ServiceSid}/Verifications/{Sid}  fetch a verification
    POST   /v2/Services/{ServiceSid}/Verifications/{Sid}  Status=canceled
    POST   /v2/Services/{ServiceSid}/VerificationCheck    Code and To or VerificationSid,
                                                          Amount, Payee
    GET    /v2/Attempts, /v2/Attempts/{Sid}               messages sent, from the events
    GET    /v2/Attempts/Summary                           their totals

Decisions where otpguard differs from Twilio (docs/migrating-from-twilio-verify.md):

* **Auth**: HTTP Basic, the username is the API key's id ``og_<12 hex>`` and the
  password the whole key ``og_<id>_<secret>`` (what Twilio calls the account SID
  and auth token). Anything else is Twilio's 20003 (401); a key without the
  ``verify`` scope is 20403 (403).
* **CodeLength** 6-10 (Twilio allows 4-10): below 6 is 60200.
* **FriendlyName** and **CustomFriendlyName** go into the message, so they are
  kept to a brand name (:data:`NAME_RULE`): no URL, no phone number, ASCII only.
* **Status=approved is refused** (60200): otpguard has no custom codes, and an
  out-of-band approval would let anyone holding an API key approve any pending
  verification without its code.
* **Parameters otpguard cannot honour** (CustomCode, CustomMessage, RateLimits, ...)
  are refused with 60200 naming them, never silently ignored.
* **Amount and Payee** (Twilio's PSD2 fields) are taken on any service, both or
  neither (one alone: 60206): the code becomes a ``transaction`` code bound to them
  (``purpose.py``), its message names them, and a check must carry the same two (a
  mismatch is a wrong code). A create for another amount or payee is a new
  verification, never a re-send. Amount names its currency (``EUR 39.99``,
  ``39.99 EUR``, ``€39.99``, ``£25``); it is shown back as ``EUR 39.99``.
* **A create while the number has a pending verification** (same service and
  channel) re-sends on it, as Twilio does, but with a new code: otpguard cannot
  send a code again (it keeps only its HMAC), so every code sent for the
  verification stays valid until it expires, which a re-send does not move
  (:mod:`.sending`, :mod:`otpguard.tags`). A wrong code by ``To`` is 20404,
  counted; once the number's verification is locked, 60202.
* **DoNotShareWarningEnabled** and **SkipSmsToLandlines** are accepted as
  ``true`` (otpguard always behaves so) and refused as ``false``.
* **Services belong to the API key** that created them (another key: 20404).
* **Finished verifications** (approved, canceled, expired) answer checks and
  updates with 20404 as Twilio's do, but a fetch still shows them until purged.
* ``to`` is the full E.164 number, as Twilio returns it: the caller sent it, and
  the ``/v1`` API keeps masking. Codes never appear in a response, log or error.
* **A start that needs a CAPTCHA** (``OTPGUARD_CHALLENGE_*``) is refused with 60410
  (403): Twilio's API has no parameter to carry the token, so ``/v2`` cannot pass
  the challenge step; ``/v1`` can.

Errors are Twilio's shape ``{"code", "message", "more_info", "status"}``: each
route catches every error itself (:class:`errors.TwilioRoute`), so the app-wide
``{"error": {...}}`` handlers stay untouched. A path or method no route serves
is Twilio's 20404 or 20004 too (:mod:`.fallback`), never otpguard's own body.

The package, one concern a module: ``errors`` (Twilio's error shape and the
translation of otpguard's), ``forms`` (form body, Basic auth, restricted values),
``services`` (services kept as flags, and the FastAPI dependencies every route
takes: :data:`services.AuthDep`, :data:`services.ServiceDep`), ``paging``
(Twilio's list pages), ``shapes`` (the JSON bodies), ``sending`` (one
verification per number: re-sends), ``routes`` (services and verifications),
``checks`` (VerificationCheck), ``attempts`` (Verification Attempts from the
events), ``fallback`` (20404 / 20004 for the rest).
"""

from __future__ import annotations

from fastapi import FastAPI

from . import attempts, checks, fallback, routes


def install(app: FastAPI) -> None:
    """EXTENSIONS hook: the Twilio Verify-compatible routes under /v2."""
    app.include_router(routes.router, prefix="/v2")
    app.include_router(checks.router, prefix="/v2")
    app.include_router(attempts.router, prefix="/v2")
    app.include_router(fallback.router, prefix="/v2")  # last: what no route above serves
