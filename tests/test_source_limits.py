"""The limits issue 17 set for src/otpguard, kept by a walk of the source with ``ast``.

Every module fits in a head (at most 400 lines), every function on a screen (at most
60), an import inside a function says on its line why it is not at the top, and a
lint or type ignore names its code and gives its reason.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import otpguard

PACKAGE = Path(otpguard.__file__).parent
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60

# A noqa names its codes, then " - " and why; a type ignore its [codes], then "  # why".
_NOQA = re.compile(r"#\s*noqa\b(?P<rest>.*)")
_NOQA_EXPLAINED = re.compile(r":\s*[A-Z]+[0-9]+(,\s*[A-Z]+[0-9]+)*\s+[-—]\s*\S")
_TYPE_IGNORE = re.compile(r"#\s*type:\s*ignore(?P<rest>.*)")
_TYPE_IGNORE_EXPLAINED = re.compile(r"\[[a-z-]+(,\s*[a-z-]+)*\]\s+#\s*\S")


def _modules() -> list[Path]:
    paths = sorted(PACKAGE.rglob("*.py"))
    assert len(paths) > 50, paths  # the walk found the package, not an empty folder
    return paths


Function = ast.FunctionDef | ast.AsyncFunctionDef


def _functions(paths: list[Path]) -> Iterator[tuple[str, list[str], Function]]:
    """Each function (methods and nested ones too) with its module's name and lines."""
    for path in paths:
        text = path.read_text(encoding="utf-8")
        for node in ast.walk(ast.parse(text, filename=str(path))):
            if isinstance(node, Function):
                yield _name(path), text.splitlines(), node


def _name(path: Path) -> str:
    return path.as_posix().split("/src/")[-1] if "/src/" in path.as_posix() else path.name


def long_modules(paths: list[Path]) -> list[str]:
    found = []
    for path in paths:
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_MODULE_LINES:
            found.append(f"{_name(path)}: {lines} lines")
    return found


def long_functions(paths: list[Path]) -> list[str]:
    found = []
    for name, _, fn in _functions(paths):
        assert fn.end_lineno is not None
        lines = fn.end_lineno - fn.lineno + 1
        if lines > MAX_FUNCTION_LINES:
            found.append(f"{name}:{fn.lineno} {fn.name}(): {lines} lines")
    return found


def unexplained_local_imports(paths: list[Path]) -> list[str]:
    """Imports inside a function with no comment on their line (a nested function's
    are seen from both functions: hence the set)."""
    found = set()
    for name, lines, fn in _functions(paths):
        for node in ast.walk(fn):
            if isinstance(node, ast.Import | ast.ImportFrom) and "#" not in lines[node.lineno - 1]:
                found.add(f"{name}:{node.lineno} {lines[node.lineno - 1].strip()}")
    return sorted(found)


def unexplained_ignores(paths: list[Path]) -> list[str]:
    found = []
    for path in paths:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            noqa, ignore = _NOQA.search(line), _TYPE_IGNORE.search(line)
            if noqa and not _NOQA_EXPLAINED.match(noqa["rest"]):
                found.append(f"{_name(path)}:{number} {line.strip()}")
            if ignore and not _TYPE_IGNORE_EXPLAINED.match(ignore["rest"]):
                found.append(f"{_name(path)}:{number} {line.strip()}")
    return found


def test_no_module_over_400_lines() -> None:
    assert long_modules(_modules()) == []


def test_no_function_over_60_lines() -> None:
    assert long_functions(_modules()) == []


def test_every_import_inside_a_function_says_why() -> None:
    assert unexplained_local_imports(_modules()) == []


def test_every_lint_and_type_ignore_names_its_code_and_reason() -> None:
    assert unexplained_ignores(_modules()) == []


def test_the_walks_find_what_breaks_the_limits(tmp_path: Path) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(61))
    long = tmp_path / "long.py"
    long.write_text(
        f"def f() -> None:\n{body}\n" + "\n" * 340 + "def g() -> None:\n    import os\n"
    )
    ignores = tmp_path / "ignores.py"
    ignores.write_text(
        "a = 1  # noqa\nb = 1  # noqa: E501\nc = 1  # noqa: E501 - a long URL\n"
        "d = 1  # type: ignore\ne = 1  # type: ignore[misc]\n"
        "f = 1  # type: ignore[misc]  # an untyped base\n"
    )
    probes = [long, ignores]
    assert long_modules(probes) == ["long.py: 404 lines"]
    assert long_functions(probes) == ["long.py:1 f(): 62 lines"]
    assert unexplained_local_imports(probes) == ["long.py:404 import os"]
    assert [line.split()[0] for line in unexplained_ignores(probes)] == [
        "ignores.py:1",
        "ignores.py:2",
        "ignores.py:4",
        "ignores.py:5",
    ]
