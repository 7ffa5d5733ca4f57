"""The package's public API: what __all__ promises exists, sorted."""

from __future__ import annotations

import pathlib
import re
from importlib.metadata import version

import otpguard
from otpguard.client import USER_AGENT


def test_all_is_sorted_and_importable() -> None:
    assert otpguard.__all__ == sorted(otpguard.__all__)
    for name in otpguard.__all__:
        assert getattr(otpguard, name) is not None, name


def test_errors_share_one_root() -> None:
    for name in otpguard.__all__:
        obj = getattr(otpguard, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, otpguard.OtpguardError), name


def test_the_version_is_written_once() -> None:
    """pyproject.toml holds the version; the package, the client and the API read it."""
    assert otpguard.__version__ == version("otpguard")
    assert USER_AGENT.endswith("/" + otpguard.__version__)
    literal = re.compile(re.escape(otpguard.__version__).join([r"['\"/]", r"['\"]"]))
    src = pathlib.Path(otpguard.__file__).parent
    written = [p.name for p in src.rglob("*.py") if literal.search(p.read_text())]
    assert written == []
