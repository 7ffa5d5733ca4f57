"""A fake Twilio REST API: a real HTTP server on 127.0.0.1 that speaks Twilio's wire format.

It runs in a thread (a ``ThreadingHTTPServer``), so it works the same from
sync tests and from tests running an event loop::

    with FakeTwilio() as fake:
        settings = fake.settings(public_url="https://otp.example")
        transport = TwilioTransport(settings.twilio)
        await transport.send(message)
        assert fake.last_code("+447700900123") == message.code
        assert fake.requests[0].form["Body"].startswith("otpguard code")

or as a fixture: ``from tests.fake_twilio import fake_twilio`` in a conftest
(or a test module), then take ``fake_twilio`` as an argument.

What it does:

* ``POST /2010-04-01/Accounts/{AccountSid}/Messages.json`` and ``/Calls.json``,
  form-encoded, HTTP Basic auth: the account SID and auth token, or the API
  key pair with the account SID in the path. Anything else is a 401 with
  Twilio's error 20003.
* 201 with a resource shaped like Twilio's (``SM``/``CA`` SIDs of 34
  characters, ``status`` ``queued``; messages echo ``body`` as Twilio does).
* Errors as Twilio sends them: ``{"code", "message", "more_info", "status"}``.
* With ``test_credentials=True``, Twilio's documented magic numbers (see
  ``MESSAGE_FROM``, ``MESSAGE_TO``, ``CALL_FROM``, ``CALL_TO``).
* Every request is recorded (:class:`RecordedRequest`) in ``fake.requests``.
* Fault injection: ``fake.fail_next(Fault.error(status=500), Fault.drop())``
  queues what the next requests get, in order; after the queue is empty the
  fake answers normally. ``Fault.accepted_then_drop()`` and
  ``Fault.accepted_then_error(500)`` create the message first (it is sent, and
  counts in ``sent()``) and then fail the answer. ``Fault.stall()`` holds a
  request server-side until ``fake.release()`` (or shutdown), so a client
  timeout fires without the test sleeping.
* ``fake.codes_sent_to(number)`` reads codes the way a phone would: the digits
  in an SMS body, the WhatsApp template variable, the digits a call reads out.
* ``fake.status_callback(sid, "delivered")`` builds the signed request Twilio
  would post to the StatusCallback URL; ``twilio_signature`` is Twilio's
  published signing algorithm.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import re
import secrets
import socket
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

import pytest

ACCOUNT_SID = "AC" + "0" * 31 + "1"
AUTH_TOKEN = "fake-auth-token-0123456789abcdef"
API_KEY = "SK" + "0" * 31 + "2"
API_SECRET = "fake-api-secret-0123456789abcdef"
MAGIC_FROM = "+15005550006"  # the one sender test credentials accept

_PATH_RE = re.compile(
    r"^/2010-04-01/Accounts/(?P<account>[^/]+)/(?P<resource>Messages|Calls)\.json$"
)
_STALL_LIMIT = 30.0  # seconds a stalled request waits at most, so threads always end

# Test-credential magic numbers (twilio.com/docs/iam/test-credentials):
# value -> (Twilio error code, message); a From not listed is refused with the default.
MESSAGE_FROM: dict[str, tuple[int, str] | None] = {
    "+15005550001": (21212, "The 'From' number {n} is not a valid phone number."),
    "+15005550006": None,
    "+15005550007": (21606, "The 'From' phone number {n} is not owned by your account."),
    "+15005550008": (21611, "This 'From' number {n} has exceeded its outbound SMS queue."),
}
MESSAGE_FROM_DEFAULT = (21606, "The 'From' phone number {n} is not a valid, SMS-capable number.")
MESSAGE_TO: dict[str, tuple[int, str]] = {
    "+15005550001": (21211, "The 'To' number {n} is not a valid phone number."),
    "+15005550002": (21612, "The 'To' phone number {n} is not currently reachable."),
    "+15005550003": (21408, "Permission to send an SMS has not been enabled for the region."),
    "+15005550004": (21610, "Attempt to send to unsubscribed recipient."),
    "+15005550009": (21614, "'To' number {n} is not a valid mobile number."),
}
CALL_FROM: dict[str, tuple[int, str] | None] = {
    "+15005550001": (21212, "The 'From' number {n} is not a valid phone number."),
    "+15005550006": None,
}
CALL_FROM_DEFAULT = (21210, "The source phone number {n} is not verified for your account.")
CALL_TO: dict[str, tuple[int, str]] = {
    "+15005550001": (21217, "Phone number {n} does not appear to be valid."),
    "+15005550002": (21214, "'To' phone number {n} cannot be reached."),
    "+15005550003": (21215, "Geo permissions do not allow calls to {n}."),
    "+15005550004": (21216, "Account not allowed to call {n}."),
}

_STATUS_BY_CODE = {20003: 401, 20404: 404, 20429: 429, 20500: 500, 20503: 503}


def twilio_signature(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """X-Twilio-Signature as Twilio computes it: base64(HMAC-SHA1(token, url + sorted k+v))."""
    payload = url + "".join(k + params[k] for k in sorted(params))
    digest = hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


@dataclass(frozen=True)
class Fault:
    """What the fake does to one request instead of answering it normally."""

    kind: Literal["error", "raw", "drop", "stall"]
    status: int = 0
    code: int | None = None
    message: str = ""
    body: bytes = b""
    #: Create the message or call first (Twilio sends it), then fail the answer.
    after_create: bool = False

    @classmethod
    def error(cls, code: int | None = None, *, status: int | None = None) -> Fault:
        """A Twilio error: ``Fault.error(20429)``, ``Fault.error(status=500)`` (code 20500)."""
        if status is None:
            status = _STATUS_BY_CODE.get(code or 0, 400)
        if code is None and status >= 500:
            code = 20000 + status
        return cls("error", status=status, code=code, message=f"fake error {code or status}")

    @classmethod
    def raw(cls, status: int, body: bytes = b"<html>Bad Gateway</html>") -> Fault:
        """A response that is not Twilio's JSON (say, from a proxy in the way)."""
        return cls("raw", status=status, body=body)

    @classmethod
    def drop(cls) -> Fault:
        """Read the request, then close the connection without answering."""
        return cls("drop")

    @classmethod
    def accepted_then_drop(cls) -> Fault:
        """Twilio creates the message (the phone gets it), then the connection drops
        before the answer: the sender cannot know it was sent."""
        return cls("drop", after_create=True)

    @classmethod
    def accepted_then_error(cls, status: int = 500) -> Fault:
        """Twilio creates the message, then answers a 5xx error anyway."""
        code = 20000 + status if status >= 500 else None
        return cls("error", status=status, code=code, message="fake error", after_create=True)

    @classmethod
    def stall(cls) -> Fault:
        """Hold the request until ``FakeTwilio.release()``, then answer it normally."""
        return cls("stall")


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    form: dict[str, str]  # last value of each field
    status: int  # what the fake answered; 0 when it dropped the connection
    fault: Fault | None = None

    @property
    def resource(self) -> str | None:
        m = _PATH_RE.match(self.path)
        return m["resource"] if m else None

    @property
    def username(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Basic "):
            return None
        return base64.b64decode(auth[6:]).decode().partition(":")[0]


@dataclass(frozen=True)
class StatusCallback:
    """A signed request as Twilio would post it to a StatusCallback URL."""

    url: str
    form: dict[str, str]
    headers: dict[str, str]

    @property
    def path_and_query(self) -> str:
        """``/webhooks/twilio/status?vid=...``: what to post to an in-process app."""
        parts = urlsplit(self.url)
        return parts.path + (f"?{parts.query}" if parts.query else "")


@dataclass
class FakeTwilio:
    """A fake Twilio API server; see the module docstring."""

    account_sid: str = ACCOUNT_SID
    auth_token: str = AUTH_TOKEN
    api_key: str | None = API_KEY
    api_secret: str | None = API_SECRET
    test_credentials: bool = False

    requests: list[RecordedRequest] = field(default_factory=list, init=False)
    resources: dict[str, dict[str, Any]] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._release = threading.Event()
        self._stalled = threading.Semaphore(0)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> FakeTwilio:
        fake = self

        class Handler(_Handler):
            owner = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.02},  # so that stop() is quick
            name="fake-twilio",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> FakeTwilio:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``: give it to ``twilio_api_base``."""
        assert self._server is not None, "start the fake first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def settings(self, *, api_key: bool = False, **overrides: Any) -> Any:
        """otpguard Settings that send to this fake (``api_key=True``: the API key pair)."""
        from otpguard.config import Settings

        values: dict[str, Any] = {
            "transport": "twilio",
            "twilio_api_base": self.base_url,
            "twilio_account_sid": self.account_sid,
            "twilio_auth_token": self.auth_token,
            "twilio_from": MAGIC_FROM,
            "twilio_test_credentials": self.test_credentials,
            "twilio_connect_timeout": 2.0,
            "twilio_timeout": 5.0,
        }
        if api_key:
            values["twilio_api_key"] = self.api_key
            values["twilio_api_secret"] = self.api_secret
        values.update(overrides)
        return Settings(**values)

    # -- fault injection --------------------------------------------------------

    def fail_next(self, *faults: Fault) -> None:
        """Queue faults for the next requests, one each, in order."""
        with self._lock:
            self._faults.extend(faults)

    def release(self) -> None:
        """Let every stalled request (and any later one) go on."""
        self._release.set()

    def wait_stalled(self, timeout: float = 5.0) -> bool:
        """Block until a request is being held by ``Fault.stall()``."""
        return self._stalled.acquire(timeout=timeout)

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.resources.clear()
            self._faults.clear()
        self._release.clear()

    # -- reading what was sent ---------------------------------------------------

    def sent(self, resource: str | None = None) -> list[RecordedRequest]:
        """Requests the fake accepted (201), optionally only ``Messages`` or ``Calls``."""
        with self._lock:
            return [
                r
                for r in self.requests
                if r.status == 201 and (resource is None or r.resource == resource)
            ]

    def codes_sent_to(self, number: str) -> list[str]:
        """Every code delivered to ``number`` (E.164), oldest first, read as a phone would."""
        codes = []
        for req in self.sent():
            if _bare(req.form.get("To", "")) != number:
                continue
            code = read_code(req.form)
            if code is not None:
                codes.append(code)
        return codes

    def last_code(self, number: str) -> str:
        codes = self.codes_sent_to(number)
        if not codes:
            raise LookupError(f"the fake Twilio sent no code to {number}")
        return codes[-1]

    def status_callback(
        self, sid: str, status: str, *, error_code: int | None = None
    ) -> StatusCallback:
        """The signed status callback Twilio would post for resource ``sid``."""
        resource = self.resources[sid]
        url = resource["_status_callback"]
        if not url:
            raise LookupError(f"{sid} was created without a StatusCallback")
        form = {
            "AccountSid": self.account_sid,
            "From": resource["from"] or "",
            "To": resource["to"],
            "ApiVersion": "2010-04-01",
        }
        if sid.startswith("SM"):
            form |= {"MessageSid": sid, "SmsSid": sid, "MessageStatus": status, "SmsStatus": status}
        else:
            form |= {"CallSid": sid, "CallStatus": status, "Direction": "outbound-api"}
        if error_code is not None:
            form["ErrorCode"] = str(error_code)
        headers = {
            "X-Twilio-Signature": twilio_signature(self.auth_token, url, form),
            "Content-Type": "application/x-www-form-urlencoded",
        }
        return StatusCallback(url=url, form=form, headers=headers)

    # -- the API ------------------------------------------------------------------

    def _next_fault(self) -> Fault | None:
        with self._lock:
            return self._faults.pop(0) if self._faults else None

    def _record(self, req: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(req)

    def _authorized(self, account: str, authorization: str) -> bool:
        if not authorization.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(authorization[6:]).decode().partition(":")
        except ValueError:
            return False
        pairs = {self.account_sid: self.auth_token}
        if self.api_key and self.api_secret:
            pairs[self.api_key] = self.api_secret
        expected = pairs.get(user)
        return (
            account == self.account_sid
            and expected is not None
            and hmac.compare_digest(expected.encode(), password.encode())
        )

    def _create(
        self, account: str, resource: str, form: dict[str, str]
    ) -> tuple[int, dict[str, Any]]:
        is_message = resource == "Messages"
        to, sender = form.get("To", ""), form.get("From", "")
        if not to:
            return _error(21604 if is_message else 21201, "A 'To' phone number is required.")
        if is_message:
            if not (sender or form.get("MessagingServiceSid")):
                return _error(21603, "A 'From' phone number is required.")
            if not (form.get("Body") or form.get("MediaUrl") or form.get("ContentSid")):
                return _error(21602, "Message body is required.")
        else:
            if not sender:
                return _error(21213, "No 'From' number is specified.")
            if not (form.get("Twiml") or form.get("Url") or form.get("ApplicationSid")):
                return _error(21205, "Url or Twiml is required.")
        if not re.fullmatch(r"\+[1-9]\d{6,14}", _bare(to)):
            return _error(21211 if is_message else 21217, f"The 'To' number {to} is not valid.")
        if self.test_credentials:
            refused = self._magic(is_message, _bare(sender), _bare(to), bool(sender))
            if refused is not None:
                return _error(*refused)
        now = formatdate(usegmt=True)
        prefix = "SM" if is_message else "CA"
        sid = prefix + secrets.token_hex(16)
        uri = f"/2010-04-01/Accounts/{account}/{resource}/{sid}.json"
        body: dict[str, Any] = {
            "sid": sid,
            "account_sid": account,
            "api_version": "2010-04-01",
            "to": to,
            "from": sender or None,
            "status": "queued" if sender else "accepted",
            "direction": "outbound-api",
            "date_created": now,
            "date_updated": now,
            "price": None,
            "price_unit": "USD",
            "uri": uri,
        }
        if is_message:
            body |= {
                "body": form.get("Body", ""),  # Twilio echoes the body
                "messaging_service_sid": form.get("MessagingServiceSid"),
                "num_segments": "1",
                "num_media": "0",
                "date_sent": None,
                "error_code": None,
                "error_message": None,
                "subresource_uris": {"media": uri.replace(".json", "/Media.json")},
            }
        else:
            body |= {
                "start_time": None,
                "end_time": None,
                "duration": None,
                "parent_call_sid": None,
            }
        with self._lock:
            self.resources[sid] = body | {"_status_callback": form.get("StatusCallback")}
        return 201, body

    def _magic(
        self, is_message: bool, sender: str, to: str, has_from: bool
    ) -> tuple[int, str] | None:
        from_table, default, to_table = (
            (MESSAGE_FROM, MESSAGE_FROM_DEFAULT, MESSAGE_TO)
            if is_message
            else (CALL_FROM, CALL_FROM_DEFAULT, CALL_TO)
        )
        if has_from:
            found = from_table.get(sender, default)
            if found is not None:
                return found[0], found[1].format(n=sender)
        if to in to_table:
            code, msg = to_table[to]
            return code, msg.format(n=to)
        return None


def _bare(number: str) -> str:
    """``whatsapp:+44...`` -> ``+44...``."""
    return number.partition(":")[2] if ":" in number else number


def _error(code: int, message: str, status: int | None = None) -> tuple[int, dict[str, Any]]:
    status = status or _STATUS_BY_CODE.get(code, 400)
    return status, {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


def read_code(form: Mapping[str, str]) -> str | None:
    """The code in one recorded request, read as a person would: SMS, WhatsApp or voice."""
    if form.get("ContentVariables"):
        value = json.loads(form["ContentVariables"]).get("1")
        return str(value) if value is not None else None
    if form.get("Body"):
        m = re.search(r"(?<!\d)\d{4,10}(?!\d)", form["Body"])
        return m[0] if m else None
    if form.get("Twiml"):
        said = [el.text or "" for el in ET.fromstring(form["Twiml"]).iter("Say")]  # noqa: S314
        heard = []
        for text in said:
            m = re.search(r"\d(?:\s*,\s*\d){3,}", text)
            if m:
                heard.append(re.sub(r"\D", "", m[0]))
        # A caller who hears two different codes has heard none.
        return heard[0] if heard and len(set(heard)) == 1 else None
    return None


class _Handler(BaseHTTPRequestHandler):
    owner: FakeTwilio
    server_version = "FakeTwilio/1.0"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self._send_json(*_error(20404, "The requested resource was not found"))

    def do_POST(self) -> None:
        owner = self.owner
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode()
        form = dict(parse_qsl(raw, keep_blank_values=True))
        headers = dict(self.headers.items())
        fault = owner._next_fault()

        if fault is not None and fault.kind == "stall":
            owner._stalled.release()
            owner._release.wait(_STALL_LIMIT)
            fault = None if owner._release.is_set() else Fault.drop()
        if fault is not None and fault.after_create:
            status, _ = self._route(form)  # created: it counts in sent() and reaches phones
            owner._record(RecordedRequest("POST", self.path, headers, form, status, fault))
            if fault.kind == "drop":
                self._drop()
            else:
                self._send_json(*_error(fault.code or 20500, fault.message, fault.status))
            return
        if fault is not None and fault.kind == "drop":
            owner._record(RecordedRequest("POST", self.path, headers, form, 0, fault))
            self._drop()
            return
        if fault is not None and fault.kind == "raw":
            owner._record(RecordedRequest("POST", self.path, headers, form, fault.status, fault))
            self._send(fault.status, fault.body, "text/html")
            return
        if fault is not None:
            status, body = _error(fault.code or 20500, fault.message, fault.status)
        else:
            status, body = self._route(form)
        owner._record(RecordedRequest("POST", self.path, headers, form, status, fault))
        self._send_json(status, body)

    def _drop(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):  # the client went away
            self.connection.shutdown(socket.SHUT_RDWR)

    def _route(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        m = _PATH_RE.match(self.path)
        if m is None:
            return _error(20404, "The requested resource was not found")
        if not self.owner._authorized(m["account"], self.headers.get("Authorization", "")):
            return _error(20003, "Authenticate")
        return self.owner._create(m["account"], m["resource"], form)

    def _send_json(self, status: int, body: dict[str, Any]) -> None:
        self._send(status, json.dumps(body).encode(), "application/json")

    def _send(self, status: int, payload: bytes, content_type: str) -> None:
        with contextlib.suppress(OSError):  # the client went away
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            if status == 401:
                self.send_header("WWW-Authenticate", 'Basic realm="Twilio API"')
            self.end_headers()
            self.wfile.write(payload)


@pytest.fixture
def fake_twilio() -> Iterator[FakeTwilio]:
    """A started FakeTwilio (live credentials); stopped after the test."""
    with FakeTwilio() as fake:
        yield fake
