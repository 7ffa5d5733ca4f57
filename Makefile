# The inner loop. Every target uses the project's own venv (.venv), which
# ./scripts/test.sh (the whole suite, as CI runs it) creates on a fresh clone.
PY := .venv/bin/python
PATHS := src tests bench examples

.PHONY: venv lint format types fast cov test ci

venv:  ## create .venv and install otpguard with its dev extras
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install --quiet -e '.[dev]'
	touch .venv/.installed

lint:  ## ruff: lint and format check
	.venv/bin/ruff check $(PATHS)
	.venv/bin/ruff format --check $(PATHS)

format:  ## ruff: fix what can be fixed, then format
	.venv/bin/ruff check --fix $(PATHS)
	.venv/bin/ruff format $(PATHS)

types:  ## mypy --strict on src/
	.venv/bin/mypy

fast:  ## the tests that need no server process, browser or minutes of load
	$(PY) -m pytest -q -x -m "not slow and not browser" $(ARGS)

cov:  ## the fast tests with branch coverage, and the lines each module misses
	$(PY) -m pytest -q -m "not slow and not browser" --cov --cov-report=term-missing $(ARGS)

test:  ## the whole suite, exactly as CI runs it (lint, types, every test)
	./scripts/test.sh $(ARGS)

ci:  ## what CI runs: start PostgreSQL and Redis if down, forbid skipped backends
	./.ci/run
