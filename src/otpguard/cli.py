"""``otpguard`` command line: each command a thin ``asyncio.run`` shell."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from . import cli_numbers
from .apikeys import SCOPES
from .audit import add_parser as add_audit_parser
from .cli_shared import (
    configure_logging,
    key_id_of,
    offline_verifier,
    settings_from_args,
    with_tls_flags,
    with_verifier,
)
from .cli_webhooks import add_parsers as add_webhook_parsers
from .codes import new_secret_hex
from .errors import ConfigError, OtpguardError
from .phone import DestinationPolicy, parse
from .startup import check_startup

# -- serve ---------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn  # here: only `serve` needs the server (and its start-up cost)

    settings = check_startup(with_tls_flags(settings_from_args(args), args))
    configure_logging(args.log_level.upper())
    tls: dict[str, Any] = {}
    if settings.tls_certfile and settings.tls_keyfile:
        tls = {"ssl_certfile": str(settings.tls_certfile), "ssl_keyfile": str(settings.tls_keyfile)}
    scheme = "https" if tls else "http"
    print(
        f"otpguard {settings.env} on {scheme}://{args.host}:{args.port} "
        f"(store {settings.store_url.split('@')[-1]}, transport {settings.transport}); "
        f"API docs at {scheme}://{args.host}:{args.port}/docs",
        file=sys.stderr,
    )
    # Worker processes rebuild the app from the environment: pass what the CLI resolved.
    if args.config:
        os.environ["OTPGUARD_CONFIG"] = str(Path(args.config).resolve())
    if settings.secret_keys and "OTPGUARD_SECRET_KEYS" not in os.environ:
        os.environ["OTPGUARD_SECRET_KEYS"] = ",".join(
            k.get_secret_value() for k in settings.secret_keys
        )
    for name in ("tls_certfile", "tls_keyfile"):
        value = getattr(settings, name)
        if value:
            os.environ[f"OTPGUARD_{name.upper()}"] = str(value)
    forwarded = ",".join(settings.trusted_proxies) or None
    uvicorn.run(
        "otpguard.web.app:app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_config=None,
        access_log=args.access_log,
        proxy_headers=False,  # otpguard.web.https decides whom to trust
        forwarded_allow_ips=forwarded,
        server_header=False,
        **tls,
    )
    return 0


# -- init ----------------------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> int:
    path = Path(args.path)
    if path.exists() and not args.force:
        print(f"{path} exists; pass --force to replace it (its key would be lost)", file=sys.stderr)
        return 1
    env = "production" if args.production else "development"
    text = (
        "# otpguard configuration (written by `otpguard init`). Keep this file secret: mode 0600.\n"
        "# Every setting can also come from an OTPGUARD_* environment variable.\n"
        f'env = "{env}"\n'
        "# HMAC keys, newest first: the first signs, all verify. To rotate, put a new key\n"
        "# first and drop the oldest once its codes have expired (10 minutes at most).\n"
        f'secret_keys = ["{new_secret_hex()}"]\n'
    )
    if args.production:
        text += (
            'transport = "twilio"\n'
            '# twilio_account_sid = "AC..."   # or TWILIO_ACCOUNT_SID\n'
            '# twilio_from = "+44..."         # or twilio_messaging_service_sid = "MG..."\n'
            '# trusted_proxies = ["10.0.0.0/8"]   # or serve --certfile/--keyfile\n'
        )
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(tmp, 0o600)
    tmp.replace(path)
    print(f"wrote {path} (mode 0600) with a fresh 32-byte key")
    return 0


# -- api-keys --------------------------------------------------------------------------


def cmd_api_keys(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    if args.action == "create":
        # Exactly the scopes asked for: an admin or monitor key does not also send codes.
        scopes = tuple(dict.fromkeys(args.scope or ["verify"]))
        record, key = asyncio.run(
            with_verifier(settings, lambda v: v.create_api_key(args.name, scopes))
        )
        print(f"created API key og_{record.id} ({record.name}, scopes: {', '.join(scopes)}).")
        print("Store it now: it is shown only once.")
        print(key)
        return 0
    if args.action == "list":
        keys = asyncio.run(with_verifier(settings, lambda v: v.api_keys()))
        if not keys:
            print("no API keys; create one with `otpguard api-keys create --name NAME`")
            return 0
        print(f"{'ID':<15}  {'STATE':<7}  {'SCOPES':<12}  {'CREATED (UTC)':<16}  NAME")
        for k in keys:
            state = "revoked" if k.revoked_at else "active"
            created = time.strftime("%Y-%m-%d %H:%M", time.gmtime(k.created_at))
            print(f"og_{k.id:<12}  {state:<7}  {','.join(k.scopes):<12}  {created:<16}  {k.name}")
        return 0
    key_id = key_id_of(args.key_id)
    if key_id is None:
        return 2
    ok = asyncio.run(with_verifier(settings, lambda v: v.revoke_api_key(key_id)))
    print(f"revoked og_{key_id}" if ok else f"no active key og_{key_id}")
    return 0 if ok else 1


# -- numbers -------------------------------------------------------------------------


def cmd_numbers(args: argparse.Namespace) -> int:
    s = settings_from_args(args)
    policy = DestinationPolicy.from_settings(s)
    info = policy.explain(parse(args.number, s.default_region))
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"number   {info['number']}")
    print(f"country  {info['country'] or 'unknown'}")
    print(f"type     {info['type']}")
    channels = info["channels"]
    assert isinstance(channels, dict)
    for ch, d in channels.items():
        verdict = "allowed" if d["allowed"] else f"refused ({d['reason']})"
        print(f"{ch:8} {verdict}")
    return 0


def cmd_purge(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)

    async def run() -> int:
        async with offline_verifier(settings) as v:
            return await v.purge()

    print(f"purged {asyncio.run(run())} stale rows")
    return 0


# -- main ----------------------------------------------------------------------------


CONFIG_HELP = "TOML config file (default: $OTPGUARD_CONFIG or ./otpguard.toml)"


class _Parser(argparse.ArgumentParser):
    """A parser whose every command and nested subcommand takes ``--config``
    (`otpguard --config x api-keys list` and `otpguard api-keys list --config x` alike).

    Subparsers are made with the parent's class (argparse's default), so nesting needs no
    help. A subcommand's ``--config`` defaults to SUPPRESS: leaving it out does not hide one
    given earlier on the line.
    """

    def __init__(self, *args: Any, config_default: Any = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.register("action", "parsers", _Subcommands)
        self.add_argument("--config", default=config_default, help=CONFIG_HELP)


class _Subcommands(argparse._SubParsersAction):  # type: ignore[type-arg]  # not generic at runtime
    """Subcommands whose one-line help is also the description their ``--help`` shows."""

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        kwargs.setdefault("description", kwargs.get("help"))
        parser: argparse.ArgumentParser = super().add_parser(name, **kwargs)
        return parser


def _add_serve(sub: Any) -> None:
    s = sub.add_parser("serve", help="run the HTTP service")
    s.add_argument("--host", default="127.0.0.1", help="interface to listen on (127.0.0.1)")
    s.add_argument("--port", type=int, default=8000, help="port to listen on (8000)")
    s.add_argument("--workers", type=int, default=1, help="worker processes sharing the store (1)")
    s.add_argument(
        "--certfile", help="serve TLS with this certificate (PEM; or OTPGUARD_TLS_CERTFILE)"
    )
    s.add_argument("--keyfile", help="the certificate's private key (PEM; or OTPGUARD_TLS_KEYFILE)")
    s.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="log level (info)",
    )
    s.add_argument(
        "--no-access-log",
        dest="access_log",
        action="store_false",
        help="do not log one line per request",
    )
    s.set_defaults(func=cmd_serve)


def _add_init(sub: Any) -> None:
    i = sub.add_parser("init", help="write a config file with a fresh secret key (mode 0600)")
    i.add_argument("--path", default="otpguard.toml", help="file to write (otpguard.toml)")
    i.add_argument("--production", action="store_true", help="write a production template")
    i.add_argument(
        "--force", action="store_true", help="replace an existing file (its key is lost)"
    )
    i.set_defaults(func=cmd_init)


def _add_api_keys(sub: Any) -> None:
    k = sub.add_parser("api-keys", help="create, list and revoke API keys")
    ksub = k.add_subparsers(dest="action", required=True)
    kc = ksub.add_parser("create", help="create a key; prints it alone on the last line, once")
    kc.add_argument("--name", required=True, help="who uses the key, e.g. shop-backend")
    kc.add_argument(
        "--scope",
        action="append",
        choices=list(SCOPES),
        help="verify (the default: send and check codes), monitor (read-only: dashboard, "
        "metrics, admin reads) or admin (monitor plus admin actions); repeat for several",
    )
    ksub.add_parser("list", help="list keys (never the secrets)")
    kr = ksub.add_parser("revoke", help="revoke a key by id")
    kr.add_argument("key_id", help="the key's id as `api-keys list` shows it (og_ + 12 hex)")
    k.set_defaults(func=cmd_api_keys)
    add_webhook_parsers(sub, ksub)


def _add_numbers(sub: Any) -> None:
    n = sub.add_parser("numbers", help="phone number tools; the block and allow lists")
    nsub = n.add_subparsers(dest="action", required=True)
    ne = nsub.add_parser("explain", help="country, type and the decision for each channel")
    ne.add_argument("number", help="in international (+44...) or national form")
    ne.add_argument("--json", action="store_true", help="machine-readable output")
    n.set_defaults(func=cmd_numbers)
    cli_numbers.add_parsers(nsub)  # block, allow, unblock, list


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="otpguard", description=__doc__, config_default=None)
    sub = p.add_subparsers(dest="command", required=True)
    _add_serve(sub)
    _add_init(sub)
    _add_api_keys(sub)
    _add_numbers(sub)
    pu = sub.add_parser("purge", help="delete expired verifications, old events and rate entries")
    pu.set_defaults(func=cmd_purge)
    add_audit_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        print(f"otpguard: configuration error: {exc.message}", file=sys.stderr)
        return 2
    except OtpguardError as exc:
        print(f"otpguard: {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
