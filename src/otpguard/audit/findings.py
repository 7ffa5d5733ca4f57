"""What every audit check returns: a finding (PASS, WARN or FAIL, with a fix), and
the two ways the command prints them."""

from __future__ import annotations

import enum
import json
import re
from dataclasses import asdict, dataclass

#: Field names that would carry a code (``code``, ``otp_code``, ``pin``...).
CODE_KEYS = re.compile(r"(^|_)(code|otp|pin|passcode)$", re.IGNORECASE)


class Status(enum.StrEnum):
    PASS = "PASS"  # noqa: S105 - a verdict, not a password
    WARN = "WARN"
    FAIL = "FAIL"


@dataclass(frozen=True)
class Finding:
    id: str
    status: Status
    detail: str
    fix: str = ""


def ok(id_: str, detail: str) -> Finding:
    return Finding(id_, Status.PASS, detail)


def warn(id_: str, detail: str, fix: str) -> Finding:
    return Finding(id_, Status.WARN, detail, fix)


def fail(id_: str, detail: str, fix: str) -> Finding:
    return Finding(id_, Status.FAIL, detail, fix)


def judge(status: Status, id_: str, detail: str, fix: str) -> Finding:
    """A finding whose level depends on the environment; a PASS carries no fix."""
    return Finding(id_, status, detail, "" if status is Status.PASS else fix)


def summary(findings: list[Finding]) -> dict[str, int]:
    return {s.value.lower(): sum(f.status is s for f in findings) for s in Status}


def render_text(findings: list[Finding], title: str) -> str:
    width = max((len(f.id) for f in findings), default=10)
    lines = [title, ""]
    for f in findings:
        lines.append(f"{f.status.value}  {f.id:<{width}}  {f.detail}")
        if f.fix:
            lines.append(f"{'':6}{'':<{width}}  fix: {f.fix}")
    s = summary(findings)
    lines += ["", f"{s['pass']} passed, {s['warn']} warnings, {s['fail']} failed"]
    return "\n".join(lines)


def render_json(findings: list[Finding], title: str) -> str:
    return json.dumps(
        {
            "title": title,
            "ok": not any(f.status is Status.FAIL for f in findings),
            "summary": summary(findings),
            "checks": [asdict(f) | {"status": f.status.value} for f in findings],
        },
        indent=2,
    )
