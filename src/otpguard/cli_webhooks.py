"""``otpguard api-keys webhook ...`` and ``otpguard webhooks ...``: set an API key's
webhook endpoint, list the endpoints, read the delivery log (docs/webhooks.md)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from .cli_shared import key_id_of, settings_from_args, with_verifier
from .service import Verifier
from .stores.webhooks import STATUSES, WebhookDelivery
from .webhooks import EndpointSet, key_scope, service_scope


def cmd_key_webhook(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    key_id = key_id_of(args.key_id)
    if key_id is None:
        return 2
    remove = args.webhook_action == "remove"

    async def run(v: Verifier) -> int:
        if await v.api_key(key_id) is None:
            print(f"no API key og_{key_id}", file=sys.stderr)
            return 1
        return await _set_or_remove(v, args, (key_scope(key_id), f"og_{key_id}"), remove=remove)

    return asyncio.run(with_verifier(settings, run, signs=not remove))


def cmd_service_webhook(args: argparse.Namespace) -> int:
    from .web.verify.services import service_exists  # the web app only for this command

    settings = settings_from_args(args)
    remove = args.action == "remove-service"

    async def run(v: Verifier) -> int:
        if not await service_exists(v, args.sid):
            print(f"no /v2 service {args.sid}", file=sys.stderr)
            return 1
        return await _set_or_remove(v, args, (service_scope(args.sid), args.sid), remove=remove)

    return asyncio.run(with_verifier(settings, run, signs=not remove))


async def _set_or_remove(
    v: Verifier, args: argparse.Namespace, scope: tuple[str, str], *, remove: bool
) -> int:
    """Remove the endpoint of ``scope`` (an API key's or a /v2 service's: the scope and
    its name for people), or set it to ``args.url``; prints what was done and a new
    signing secret, once."""
    scope_id, owner = scope
    if remove:
        ok = await v.delete_webhook_endpoint(scope_id)
        print(f"removed the webhook of {owner}" if ok else "no webhook to remove")
        return 0 if ok else 1
    done = await v.set_webhook_endpoint(scope_id, args.url, rotate=args.rotate_secret)
    _print_set(done, owner)
    return 0


def _print_set(done: EndpointSet, owner: str) -> None:
    print(f"webhook {done.endpoint.id} of {owner}: {done.endpoint.url}")
    if done.secret is None:
        print("signing secret unchanged (--rotate-secret makes a new one)")
    else:
        print("signing secret; store it now: it is shown only once.")
        print(done.secret)


def _line(d: WebhookDelivery) -> str:
    last = d.last
    at = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(d.created_at))
    code = "-" if last is None or last.status_code is None else str(last.status_code)
    latency = "-" if last is None else f"{last.latency_ms}ms"
    nxt = time.strftime("%H:%M:%S", time.gmtime(d.next_at)) if d.status == "pending" else "-"
    error = last.error if last else ""
    return (
        f"{at}  {d.event_type:<9}  {d.status:<9}  {d.attempts:>3}  {code:>4}  {latency:>7}  "
        f"{nxt:>8}  {d.endpoint_id}  {error}"
    )


def cmd_webhooks(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)

    async def run(v: Verifier) -> Any:
        if args.action == "list":
            return await v.webhook_endpoints()
        return await v.webhook_deliveries(
            endpoint_id=args.endpoint, status=args.status, limit=args.limit
        )

    rows = asyncio.run(with_verifier(settings, run))
    if args.action == "list":
        if not rows:
            print("no webhooks; set one with `otpguard api-keys webhook set KEY_ID URL`")
        for e in rows:
            print(f"{e.id}  {e.scope:<18}  {e.url}")
        return 0
    if args.json:
        for d in rows:
            out = {"id": d.id, "endpoint_id": d.endpoint_id, "type": d.event_type,
                   "status": d.status, "attempts": d.attempts, "created_at": d.created_at,
                   "next_at": d.next_at, "log": [a.to_dict() for a in d.log]}  # fmt: skip
            print(json.dumps(out, sort_keys=True))
        return 0
    print(
        "CREATED (UTC)        TYPE       STATUS     TRY  CODE  LATENCY      NEXT  ENDPOINT  ERROR"
    )
    for d in rows:
        print(_line(d))
    return 0


def add_parsers(sub: Any, api_keys: Any) -> None:
    """``webhook`` under ``api-keys``, and the ``webhooks`` command."""
    w = api_keys.add_parser("webhook", help="set or remove the URL a key's events are posted to")
    wsub = w.add_subparsers(dest="webhook_action", required=True)
    ws = wsub.add_parser("set", help="set the URL; prints the signing secret once, when new")
    ws.add_argument("key_id", help="the key's id as `api-keys list` shows it (og_ + 12 hex)")
    ws.add_argument("url", help="https://... (http:// in development)")
    ws.add_argument(
        "--rotate-secret", action="store_true", help="a new signing secret (the old one stops)"
    )
    wr = wsub.add_parser("remove", help="stop posting the key's events")
    wr.add_argument("key_id", help="the key's id (og_ + 12 hex)")
    w.set_defaults(func=cmd_key_webhook)

    h = sub.add_parser("webhooks", help="webhook endpoints and the delivery log")
    hsub = h.add_subparsers(dest="action", required=True)
    hsub.add_parser("list", help="the endpoints (never a secret)")
    hl = hsub.add_parser("log", help="the delivery log, newest first")
    hl.add_argument("--status", choices=list(STATUSES), help="only rows with this status")
    hl.add_argument("--endpoint", help="only this endpoint's rows (we_...)")
    hl.add_argument("--limit", type=int, default=50, help="rows to show (50)")
    hl.add_argument("--json", action="store_true", help="one JSON object per line")
    h.set_defaults(func=cmd_webhooks)
    for name, what in (("set-service", "set"), ("remove-service", "remove")):
        hs = hsub.add_parser(name, help=f"{what} the URL of a /v2 service (instead of its key's)")
        hs.add_argument("sid", help="the service's SID (VA + 32 hex)")
        if what == "set":
            hs.add_argument("url", help="https://... (http:// in development)")
            hs.add_argument("--rotate-secret", action="store_true", help="a new signing secret")
        hs.set_defaults(func=cmd_service_webhook)
