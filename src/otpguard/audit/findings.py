"""What every audit check returns: a finding (PASS, WARN or FAIL, with a fix), and
the two ways the command prints them."""

from __future__ import annotations

import enum
import json
import re
from dataclasses import asdict, dataclass

#: Field names that would carry a code (``code``, ``otp_code``, ``pin``...).
CODE_KEYS = re.compile(r"(^|_)(code|otp|pin|passcode)$", re.IGNORECASE)


class Verdict(enum.StrEnum):
    PASS = "PASS"  # noqa: S105 - a verdict, not a password
    WARN = "WARN"
    FAIL = "FAIL"


@dataclass(frozen=True)
class AuditItem:
    id: str
    status: Verdict
    detail: str
    fix: str = ""


def ok(id_: str, detail: str) -> AuditItem:
    return AuditItem(id_, Verdict.PASS, detail)


def warn(id_: str, detail: str, fix: str) -> AuditItem:
    return AuditItem(id_, Verdict.WARN, detail, fix)


def fail(id_: str, detail: str, fix: str) -> AuditItem:
    return AuditItem(id_, Verdict.FAIL, detail, fix)


def judge(status: Verdict, id_: str, detail: str, fix: str) -> AuditItem:
    """A finding whose level depends on the environment; a PASS carries no fix."""
    return AuditItem(id_, status, detail, "" if status is Verdict.PASS else fix)


def summary(findings: list[AuditItem]) -> dict[str, int]:
    return {s.value.lower(): sum(f.status is s for f in findings) for s in Verdict}


def render_text(findings: list[AuditItem], title: str) -> str:
    width = max((len(f.id) for f in findings), default=10)
    lines = [title, ""]
    for f in findings:
        lines.append(f"{f.status.value}  {f.id:<{width}}  {f.detail}")
        if f.fix:
            lines.append(f"{'':6}{'':<{width}}  fix: {f.fix}")
    s = summary(findings)
    lines += ["", f"{s['pass']} passed, {s['warn']} warnings, {s['fail']} failed"]
    return "\n".join(lines)


def render_json(findings: list[AuditItem], title: str) -> str:
    return json.dumps(
        {
            "title": title,
            "ok": not any(f.status is Verdict.FAIL for f in findings),
            "summary": summary(findings),
            "checks": [asdict(f) | {"status": f.status.value} for f in findings],
        },
        indent=2,
    )
