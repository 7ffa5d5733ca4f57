"""``otpguard audit``: the founders' security checklist, run against the effective
configuration and, with ``--url``, against a running instance.

Each item prints as PASS, WARN or FAIL; WARN and FAIL carry a one-line fix. The
exit status is 1 when any item FAILs (so the command can gate a deployment),
0 otherwise; ``--json`` prints the same findings for machines.

Checklist item (founders' article)        check ids
---------------------------------------   -----------------------------------------
1 codes truly random, long enough        codes.random, codes.length (the odds of a
                                          guess within the limits)
2 expiry 3-5 minutes                      codes.expiry, codes.attempts
3 limit requests per number / IP          limits.phone, limits.ip, limits.checks,
                                          limits.global
4 codes not stored in plain text          storage.hmac, storage.tag_form, secrets.files
5 HTTPS everywhere                        https.enforced, https.proxies, remote.tls,
                                          remote.hsts, remote.plain_http
6 never return the code                   codes.never_returned, remote.code_never_returned
7 no premium-rate numbers                 policy.premium_rate, policy.countries
8 Twilio test mode in development         twilio.mode
9 monitor and alert                       monitoring.tracking, monitoring.alerts

The remote probe starts one verification to ``audit_test_number`` (default: the
Twilio magic number +15005550006, which only test credentials accept), reads
it back, checks one wrong code and cancels it, and inspects every response,
headers and body, for anything that could be the code. With ``--outbox`` (a
development file outbox) it compares against the code actually sent. Nothing
the audit prints contains a code or a secret.

Modules: ``findings`` (the result type and its rendering), ``checks`` and
``checks_policy`` (the configuration), ``probe`` (the running instance),
``command`` (the CLI). Every check can fail; tests/test_audit.py makes each one fail.
"""

from __future__ import annotations

from .checks import guesses_per_day, max_in_window
from .checks_policy import audit_settings, check_never_returned
from .command import add_parser, cmd_audit
from .findings import AuditItem, Verdict, render_json, render_text, summary
from .probe import TWILIO_MAGIC_VALID, Remote, audit_remote, response_leaks

__all__ = [
    "TWILIO_MAGIC_VALID",
    "AuditItem",
    "Remote",
    "Verdict",
    "add_parser",
    "audit_remote",
    "audit_settings",
    "check_never_returned",
    "cmd_audit",
    "guesses_per_day",
    "max_in_window",
    "render_json",
    "render_text",
    "response_leaks",
    "summary",
]
