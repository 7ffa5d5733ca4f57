"""The installed version, read from the package metadata: pyproject.toml is the only
place it is written."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    VERSION = version("otpguard")
except PackageNotFoundError:  # pragma: no cover - running from a tree that is not installed
    VERSION = "0+unknown"
