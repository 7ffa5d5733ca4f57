#!/usr/bin/env bash
# The whole test suite, from a fresh clone: make a venv, install otpguard with its
# dev extras, then lint (ruff), type-check (mypy --strict on src/) and run pytest with
# branch coverage (the servers and CLIs the tests start as subprocesses included:
# [tool.coverage.run] in pyproject.toml).
# The install runs only when the venv is new or pyproject.toml changed since the last
# one (.venv/.installed records it); `rm .venv/.installed` forces it.
# Backends that are not running (Redis, PostgreSQL) and a missing Chromium are
# skipped with a reason; CI sets REQUIRE_TEST_BACKENDS=1 to forbid that.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
if [ ! -f .venv/.installed ] || [ pyproject.toml -nt .venv/.installed ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip >/dev/null
    .venv/bin/python -m pip install --quiet -e '.[dev]'
    touch .venv/.installed
fi
echo "== ruff"
.venv/bin/ruff check src tests bench examples
.venv/bin/ruff format --check src tests bench examples
echo "== mypy (strict, src/)"
.venv/bin/mypy
echo "== pytest (with branch coverage)"
exec .venv/bin/python -m pytest --cov --cov-report=term "$@"
