"""The ``otpguard audit`` command: configuration checks, then the probe with ``--url``."""

from __future__ import annotations

import argparse
import asyncio
import os
import ssl
import sys
from pathlib import Path
from typing import Any

from ..cli_shared import with_tls_flags
from ..config import load_settings
from .checks_policy import audit_settings
from .findings import Verdict, render_json, render_text
from .probe import TWILIO_MAGIC_VALID, Remote, audit_remote


def _config_path(args: argparse.Namespace) -> Path | None:
    if getattr(args, "config", None):
        return Path(args.config)
    if os.environ.get("OTPGUARD_CONFIG"):
        return Path(os.environ["OTPGUARD_CONFIG"])
    default = Path("otpguard.toml")
    return default if default.is_file() else None


def _read_key(args: argparse.Namespace) -> str | None:
    if args.api_key_file:
        text = sys.stdin.read() if args.api_key_file == "-" else Path(args.api_key_file).read_text()
        return text.strip() or None
    key: str | None = args.api_key or os.environ.get("OTPGUARD_API_KEY") or None
    return key


def cmd_audit(args: argparse.Namespace) -> int:
    config_path = _config_path(args)
    settings = with_tls_flags(load_settings(config_file=config_path), args)
    findings = audit_settings(settings, config_path)
    title = f"otpguard audit: {settings.env} configuration" + (
        f" ({config_path})" if config_path else ""
    )
    if args.url:
        verify: ssl.SSLContext | bool = True
        if args.cacert:
            verify = ssl.create_default_context(cafile=args.cacert)
        remote = Remote(
            url=args.url,
            api_key=_read_key(args),
            http_url=args.http_url,
            verify=verify,
            outbox=Path(args.outbox) if args.outbox else None,
            test_number=settings.audit_test_number or TWILIO_MAGIC_VALID,
        )
        findings += asyncio.run(audit_remote(remote))
        title += f" and {args.url}"
    print(render_json(findings, title) if args.json else render_text(findings, title))
    return 1 if any(f.status is Verdict.FAIL for f in findings) else 0


def add_parser(subparsers: Any) -> None:
    """Add ``otpguard audit`` to the CLI (called by ``otpguard.cli.build_parser``)."""
    a = subparsers.add_parser(
        "audit",
        help="run the security checklist on the configuration (and a running instance)",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    a.add_argument("--json", action="store_true", help="machine-readable output")
    a.add_argument("--url", help="also probe a running instance, e.g. https://otp.example.com")
    a.add_argument(
        "--api-key-file",
        help="file holding an API key for the probe ('-' reads stdin)",
    )
    a.add_argument("--api-key", help="the API key itself (visible in `ps`: prefer --api-key-file)")
    a.add_argument("--cacert", help="CA bundle to verify the instance's certificate")
    a.add_argument(
        "--http-url",
        help="plain-HTTP address to probe (default: the --url host and port over http://)",
    )
    a.add_argument("--outbox", help="development file outbox: compare against the code sent")
    a.add_argument("--certfile", help="as `otpguard serve --certfile`")
    a.add_argument("--keyfile", help="as `otpguard serve --keyfile`")
    a.set_defaults(func=cmd_audit)
