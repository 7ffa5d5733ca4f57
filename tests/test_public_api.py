"""The package's public API: what __all__ promises exists, sorted."""

from __future__ import annotations

import otpguard


def test_all_is_sorted_and_importable() -> None:
    assert otpguard.__all__ == sorted(otpguard.__all__)
    for name in otpguard.__all__:
        assert getattr(otpguard, name) is not None, name


def test_errors_share_one_root() -> None:
    for name in otpguard.__all__:
        obj = getattr(otpguard, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, otpguard.OtpguardError), name
