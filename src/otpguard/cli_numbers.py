"""``otpguard numbers block/allow/unblock/list``: the run-time block and allow lists
(``listedit.py``) from the command line, on the configured store. Every instance
sharing that store applies a change at its next send.

The CLI prints numbers in clear (the operator typed them); the events it records
carry them masked."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from .cli_shared import offline_verifier, settings_from_args
from .listedit import Change, ListEditor
from .numberlists import ListEntry, entry_out

T = TypeVar("T")


def _by() -> str:
    try:
        return f"cli ({getpass.getuser()})"
    except (KeyError, OSError):  # no user name in this environment
        return "cli"


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _with_lists(args: argparse.Namespace, fn: Callable[[ListEditor], Awaitable[T]]) -> T:
    settings = settings_from_args(args)

    async def run() -> T:
        async with offline_verifier(settings) as v:
            return await fn(v.lists)

    return asyncio.run(run())


def _when(ts: float | None) -> str:
    return "never" if ts is None else time.strftime("%Y-%m-%d %H:%M", time.gmtime(ts))


def cmd_add(args: argparse.Namespace) -> int:
    def add(lists: ListEditor) -> Awaitable[Change]:
        return lists.add(args.number, args.kind, by=_by(), note=args.note,
                         duration=args.duration, until=args.until)  # fmt: skip

    change = _with_lists(args, add)
    entry = change.entry
    verb = "blocked" if entry.kind == "block" else "allowed"
    expiry = "no expiry" if entry.expires_at is None else f"until {_when(entry.expires_at)} UTC"
    line = f"{verb} {entry.pattern} ({expiry})"
    if change.replaced is not None and change.replaced.kind != entry.kind:
        line += f" (replaces its {change.replaced.kind} entry)"
    print(line)
    if entry.kind == "allow" and change.shadowed_by_config is not None:
        print(f"note: {entry.pattern} is also in {change.shadowed_by_config.note}", file=sys.stderr)
    return 0


def cmd_unblock(args: argparse.Namespace) -> int:
    change = _with_lists(args, lambda lists: lists.remove(args.number, by=_by()))
    print(f"removed the {change.entry.kind} entry for {change.entry.pattern}")
    if change.shadowed_by_config is not None:
        print(
            f"{change.entry.pattern} is still in {change.shadowed_by_config.note} "
            "(the configuration): it still applies",
            file=sys.stderr,
        )
    return 0


def table(entries: list[ListEntry]) -> list[str]:
    """The listing as lines: a header, then one entry a line."""
    rows = [("KIND", "NUMBER", "EXPIRES (UTC)", "SOURCE", "ADDED BY", "NOTE")]
    rows += [
        (x.kind, x.pattern, _when(x.expires_at), x.source, x.created_by or "-", x.note)
        for x in entries
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return ["  ".join([*(c.ljust(w) for c, w in zip(r, widths, strict=False)), r[5]]).rstrip()
            for r in rows]  # fmt: skip


def cmd_list(args: argparse.Namespace) -> int:
    entries = _with_lists(args, lambda lists: lists.entries())
    if args.json:
        print(json.dumps([entry_out(x, iso) for x in entries], indent=2))
        return 0
    if not entries:
        print("no block or allow entries; add one with `otpguard numbers block NUMBER`")
        return 0
    for line in table(entries):
        print(line)
    return 0


def add_parsers(nsub: Any) -> None:
    """The list commands, under ``otpguard numbers`` (``nsub``: its subparsers)."""
    for kind, what in (("block", "refuse every send to"), ("allow", "skip the fraud rules for")):
        a = nsub.add_parser(
            kind,
            help=f"{what} a number or prefix, on every instance sharing the store",
            description=f"{what.capitalize()} a number or prefix (a run-time {kind} entry).",
        )
        a.add_argument("number", help="a number or a prefix, like +447400123456 or +447400")
        when = a.add_mutually_exclusive_group()
        when.add_argument("--for", dest="duration", help="expire after 90m, 12h, 7d, 2w, ...")
        when.add_argument("--until", help="expire at this time (ISO 8601, UTC by default)")
        a.add_argument("--note", help="why, e.g. a ticket number (at most 200 characters)")
        a.set_defaults(func=cmd_add, kind=kind)
    u = nsub.add_parser(
        "unblock",
        help="remove the run-time block or allow entry of a number or prefix",
        description="Remove the run-time block or allow entry of a number or prefix.",
    )
    u.add_argument("number", help="the number or prefix as listed")
    u.set_defaults(func=cmd_unblock)
    li = nsub.add_parser(
        "list",
        help="the block and allow entries: run-time, then configured",
        description="The block and allow entries: run-time (newest first), then configured.",
    )
    li.add_argument("--json", action="store_true", help="machine-readable output")
    li.set_defaults(func=cmd_list)
