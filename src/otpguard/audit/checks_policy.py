"""Configuration checks: what is returned, destination policy, Twilio, monitoring and
start-up; and :func:`audit_settings`, every configuration check in checklist order."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import phonenumbers
from fastapi import APIRouter
from fastapi.routing import APIRoute
from phonenumbers import PhoneNumberType
from pydantic import TypeAdapter

from ..config import Settings
from ..errors import ConfigError
from ..models import Channel
from ..phone import DestinationPolicy, parse
from ..sinks import sinks_from_section
from ..startup import startup_problems
from ..web import admin, api
from .checks import check_codes, check_https, check_limits, check_secret_files, check_storage
from .findings import CODE_KEYS, AuditItem, Verdict, fail, judge, ok, warn


def _field_names(schema: Any) -> Iterator[str]:
    """Every property name anywhere in a JSON schema (nested models included)."""
    if isinstance(schema, dict):
        for name, sub in schema.get("properties", {}).items():
            yield name
            yield from _field_names(sub)
        for key, sub in schema.items():
            if key != "properties":
                yield from _field_names(sub)
    elif isinstance(schema, list):
        for sub in schema:
            yield from _field_names(sub)


def check_never_returned(routers: Iterable[APIRouter] | None = None) -> Iterator[AuditItem]:
    """codes.never_returned: no response schema of the /v1 API and the admin API has a
    field named like a code. (/v2 answers Twilio's shapes; ``--url`` probes them.)"""
    routes = [
        r
        for router in (routers if routers is not None else (api.router, admin.router))
        for r in router.routes
        if isinstance(r, APIRoute) and r.response_model is not None
    ]
    leaky, fields = [], 0
    for route in routes:
        names = list(_field_names(TypeAdapter(route.response_model).json_schema()))
        fields += len(names)
        leaky += [f"{route.path} {name}" for name in names if CODE_KEYS.search(name)]
    if not fields:
        yield fail(
            "codes.never_returned",
            "no response schema found to check",
            "reinstall otpguard: the API's routes are missing",
        )
    elif leaky:
        yield fail(
            "codes.never_returned",
            "API responses have code-like fields: " + ", ".join(sorted(set(leaky))),
            "remove them: only the phone may ever see the code",
        )
    else:
        yield ok(
            "codes.never_returned",
            "no /v1 or admin response schema has a code-like field; the probe (--url) "
            "scans live answers",
        )


def check_policy(
    settings: Settings, policy: DestinationPolicy | None = None
) -> Iterator[AuditItem]:
    """policy.premium_rate probes ``policy`` (the settings' own by default) with each
    allowed country's example premium-rate and shared-cost numbers; policy.countries."""
    try:
        policy = policy or DestinationPolicy.from_settings(settings)
    except ConfigError as exc:
        yield fail("policy.premium_rate", f"the destination policy is invalid: {exc.message}", "")
        return
    let_through = []
    probed = 0
    for region in sorted(policy.allowed_countries) or ["GB"]:
        for kind in (PhoneNumberType.PREMIUM_RATE, PhoneNumberType.SHARED_COST):
            example = phonenumbers.example_number_for_type(region, kind)
            if example is None:
                continue
            number = parse(phonenumbers.format_number(example, 0), region)
            probed += 1
            for ch in Channel:
                if policy.decide(number, ch).allowed:
                    let_through.append(f"{number.type} {region} via {ch.value}")
    if let_through:
        yield fail(
            "policy.premium_rate",
            "premium-rate/shared-cost numbers would be sent codes: " + ", ".join(let_through),
            "remove them from OTPGUARD_ALLOWLIST; never allow premium_rate",
        )
    else:
        extra = "; VoIP allowed" if settings.allow_voip else ""
        yield ok(
            "policy.premium_rate",
            f"premium-rate and shared-cost numbers refused on every channel "
            f"({probed} example number(s) probed){extra}",
        )
    countries = sorted(policy.allowed_countries)
    if not countries:
        yield warn(
            "policy.countries",
            "no country allowed: every send is refused",
            "set OTPGUARD_ALLOWED_COUNTRIES to the countries your customers live in",
        )
    elif len(countries) > 20:
        yield warn(
            "policy.countries",
            f"{len(countries)} countries allowed: SMS pumping thrives on wide lists",
            "allow only the countries your customers live in (OTPGUARD_ALLOWED_COUNTRIES)",
        )
    else:
        yield ok("policy.countries", "codes go only to " + ", ".join(countries))


def check_twilio(settings: Settings) -> Iterator[AuditItem]:
    t = settings.transport
    if not settings.production:
        if t in ("console", "memory", "file"):
            yield ok("twilio.mode", f"development on the {t} transport: no real SMS")
        elif settings.twilio_test_credentials:
            yield ok("twilio.mode", "development with Twilio test credentials")
        else:
            yield warn(
                "twilio.mode",
                "development with live Twilio credentials (only magic and "
                "OTPGUARD_DEV_ALLOWED_NUMBERS numbers are reached)",
                "use OTPGUARD_TRANSPORT=console or Twilio test credentials "
                "(OTPGUARD_TWILIO_TEST_CREDENTIALS=true)",
            )
        return
    if t != "twilio":
        yield fail(
            "twilio.mode",
            f"production on the {t} transport",
            "set OTPGUARD_TRANSPORT=twilio with live credentials",
        )
        return
    if settings.twilio_test_credentials:
        yield fail(
            "twilio.mode",
            "production with Twilio test credentials: no message is delivered",
            "unset OTPGUARD_TWILIO_TEST_CREDENTIALS and use live credentials",
        )
        return
    try:
        from ..transports.twilio import TwilioTransport  # the SDK is heavy: audits on Twilio only

        problems = TwilioTransport(settings.twilio).problems([Channel.SMS])
    except ConfigError as exc:
        problems = [exc.message]
    if problems:
        yield fail("twilio.mode", "Twilio not ready: " + "; ".join(problems), problems[0])
    else:
        yield ok("twilio.mode", "production on Twilio with live credentials and a sender")


def check_monitoring(settings: Settings) -> Iterator[AuditItem]:
    retention = f"every decision stored as an event ({settings.event_retention_days} days)"
    if settings.log_events:
        yield ok("monitoring.tracking", retention + " and logged as JSON")
    else:
        yield warn(
            "monitoring.tracking",
            retention + ", not logged",
            "set OTPGUARD_LOG_EVENTS=true to ship events with your logs",
        )
    try:
        sinks_from_section(settings.alerts)
    except ConfigError as exc:
        yield fail(
            "monitoring.alerts", f"an alert sink is misconfigured: {exc.message}", exc.message
        )
        return
    except ModuleNotFoundError:
        pass
    sinks = list(dict.fromkeys(settings.alert_sinks))
    if not sinks:
        yield judge(
            Verdict.FAIL if settings.production else Verdict.WARN,
            "monitoring.alerts",
            "no alert sink: spikes and fraud go unnoticed",
            "set OTPGUARD_ALERT_SINKS=log,webhook (or slack, email)",
        )
    elif sinks == ["log"]:
        yield judge(
            Verdict.WARN if settings.production else Verdict.PASS,
            "monitoring.alerts",
            "alerts go to the log only",
            "add a sink someone reads: OTPGUARD_ALERT_SINKS=log,slack (or webhook, email)",
        )
    else:
        yield ok("monitoring.alerts", "alerts go to " + ", ".join(sinks))


def check_config(settings: Settings) -> Iterator[AuditItem]:

    problems = startup_problems(settings)
    if problems:
        yield fail(
            "config.startup",
            f"`otpguard serve` would refuse to start ({len(problems)} problem(s)): "
            + "; ".join(problems),
            "fix every problem listed",
        )
    else:
        mode = "production start-up checks pass" if settings.production else "development"
        yield ok("config.startup", mode)


def audit_settings(settings: Settings, config_path: Path | None = None) -> list[AuditItem]:
    """Every configuration check, in checklist order."""
    return [
        *check_config(settings),
        *check_codes(settings),
        *check_limits(settings),
        *check_storage(settings),
        *check_secret_files(settings, config_path),
        *check_https(settings),
        *check_never_returned(),
        *check_policy(settings),
        *check_twilio(settings),
        *check_monitoring(settings),
    ]
