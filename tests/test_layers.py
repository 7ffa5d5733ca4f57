"""The shells go through the Verifier's public methods, never past it to the store.

Read from the source: no module under ``web/``, no alert module and no CLI module
reads a ``.store`` attribute or calls one of the Verifier's private methods.
"""

from __future__ import annotations

import ast
from pathlib import Path

import otpguard

PACKAGE = Path(otpguard.__file__).parent
SHELLS = sorted(
    [
        *PACKAGE.joinpath("web").rglob("*.py"),
        *PACKAGE.glob("cli*.py"),
        PACKAGE / "alerts.py",
        PACKAGE / "alert_rules.py",
    ]
)


def _private_members() -> set[str]:
    """The Verifier's private members, read from ``service/``: its classes' ``_``
    methods and the ``self._x`` attributes they set (``_emit`` and ``_check`` were
    private once and stay named here)."""
    names = {"_emit", "_check"}
    for path in PACKAGE.joinpath("service").glob("*.py"):
        for cls in ast.walk(ast.parse(path.read_text("utf-8"))):
            if not isinstance(cls, ast.ClassDef):
                continue
            for node in ast.walk(cls):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    names.add(node.name)
                elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                    names.add(node.attr)
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


PRIVATE = _private_members()


def _reaches(path: Path) -> list[str]:
    return _reaches_in(path.read_text("utf-8"), path.relative_to(PACKAGE).as_posix())


def _reaches_in(source: str, rel: str) -> list[str]:
    """``function: attribute`` for every ``.store`` read and private Verifier call
    (a class's own private methods, on ``self``, are its business)."""
    found: list[str] = []

    def visit(node: ast.AST, function: str) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            function = node.name
        own = isinstance(node, ast.Attribute) and ast.unparse(node.value) == "self"
        if isinstance(node, ast.Attribute) and (
            node.attr == "store" or (node.attr in PRIVATE and not own)
        ):
            found.append(f"{rel}:{node.lineno} {function}: .{node.attr}")
        for child in ast.iter_child_nodes(node):
            visit(child, function)

    visit(ast.parse(source), "<module>")
    return found


def test_the_scan_knows_the_verifiers_private_members() -> None:
    assert {"_admit", "_deliver", "_verdict", "_webhook_store", "_rate_horizon"} <= PRIVATE
    assert not any(name.startswith("__") for name in PRIVATE)


def test_the_scan_sees_the_shells() -> None:
    names = {p.relative_to(PACKAGE).as_posix() for p in SHELLS}
    assert {"web/api.py", "web/verify/services.py", "web/dashboard.py", "alerts.py"} <= names
    assert {"cli.py", "cli_numbers.py", "cli_webhooks.py", "cli_shared.py"} <= names


def test_the_scan_finds_a_store_read_and_a_private_call() -> None:
    source = (
        "async def ready(verifier):\n    await verifier.store.health()\n"
        "async def alert(v, e):\n    await v._emit(e)\n"
    )
    assert _reaches_in(source, "web/api.py") == [
        "web/api.py:2 ready: .store",
        "web/api.py:4 alert: ._emit",
    ]
    # No function is let through: the dashboard's sign-in is scanned like the rest.
    login = "async def login(v):\n    await v.store.get_flag('k', 0)\n"
    assert _reaches_in(login, "web/dashboard.py") == ["web/dashboard.py:2 login: .store"]


def test_no_shell_reaches_past_the_verifier() -> None:
    reaches = [r for path in SHELLS for r in _reaches(path)]
    assert reaches == [], "use (or add) a public Verifier method:\n" + "\n".join(reaches)
