#!/usr/bin/env bash
# The whole test suite, from a fresh clone: make a venv, install otpguard with its
# dev extras, then lint (ruff), type-check (mypy --strict on src/) and run pytest.
# Backends that are not running (Redis, PostgreSQL) and a missing Chromium are
# skipped with a reason; CI sets REQUIRE_TEST_BACKENDS=1 to forbid that.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip >/dev/null
.venv/bin/python -m pip install --quiet -e '.[dev]'
echo "== ruff"
.venv/bin/ruff check src tests bench examples
.venv/bin/ruff format --check src tests bench examples
echo "== mypy (strict, src/)"
.venv/bin/mypy
echo "== pytest"
exec .venv/bin/python -m pytest "$@"
