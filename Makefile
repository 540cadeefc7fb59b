# Touchpoint: `make up` runs the whole stack, `make test` runs every test.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

# Every install comes from uv.lock (`uv sync --locked`: a lock that no longer matches pyproject.toml is an
# error, not a silent re-resolve). uv itself comes from the package index, pinned, into a small tools venv,
# so a fresh clone still needs only Python 3.11+ and make. uv resolves from PyPI whatever pip is set to.
UV_VERSION ?= 0.13.9
TOOLS ?= .tools
UV := $(TOOLS)/bin/uv
UV_STAMP := $(TOOLS)/.uv-$(UV_VERSION)
export UV_PROJECT_ENVIRONMENT := $(abspath $(VENV))
# The interpreter is $(PYTHON), never one uv would download.
export UV_PYTHON_DOWNLOADS := never
SYNC := $(UV) sync --locked --python $(PYTHON)
# What running needs (make up, demo, migrate), and that plus the test and lint tools (the dev group).
RUN_STAMP := $(VENV)/.synced-run
DEV_STAMP := $(VENV)/.synced-dev

.DEFAULT_GOAL := help
.PHONY: help install install-run up demo migrate lint format test test-fast test-lowest screenshots bench fuzz faults restore-drill clean

help:
	@echo "make up           install what running needs, migrate and run the whole stack (SQLite + embedded nats-server); Ctrl-C stops it"
	@echo "make test         install with the test tools, lint and run every test"
	@echo "make install      the virtualenv .venv from uv.lock, test tools included (make up installs only what running needs)"
	@echo "make lint         ruff and mypy"
	@echo "make screenshots  the console's pictures in docs/screenshots/ (a test run never writes them)"
	@echo "make bench        run the benchmarks under bench/ and write bench/results/"
	@echo "make faults       the fault suite alone, with its figures (FAULT_TOUCHPOINTS=10000 per scenario)"
	@echo "make fuzz         Schemathesis against every API (three services, gateway): FUZZ_CASES=20000 each, SQLite and PostgreSQL"
	@echo "make restore-drill  a backup under traffic, PostgreSQL lost, restored, every record back (compose topology as processes, ~3 min)"
	@echo "make test-lowest  the unit tests on the lowest versions pyproject.toml allows (.venv-lowest; not in CI)"

$(UV_STAMP):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet 'uv==$(UV_VERSION)'
	touch $@

# --inexact: `make up` after `make test` keeps the test tools; the dev sync is exact and includes the runtime.
$(RUN_STAMP): pyproject.toml uv.lock $(UV_STAMP)
	$(SYNC) --no-dev --inexact
	touch $@

$(DEV_STAMP): pyproject.toml uv.lock $(UV_STAMP)
	$(SYNC)
	touch $@ $(RUN_STAMP)

install-run: $(RUN_STAMP)

# axe-core, which the browser tests inject into every console page (tests/browser/test_console_accessibility.py),
# exactly as tests/browser/package-lock.json pins it, into the git-ignored tests/browser/node_modules. Without npm
# the step says so and goes on: the accessibility test then skips, or fails under CI=true (.ci/run installs npm).
BROWSER_JS := tests/browser/node_modules/.installed
$(BROWSER_JS): tests/browser/package.json tests/browser/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		npm ci --prefix tests/browser --ignore-scripts --no-audit --no-fund --loglevel=error && touch $@; \
	else echo "npm is not installed: the console's accessibility test (axe-core) cannot run"; fi

install: $(DEV_STAMP) $(BROWSER_JS)

up: install-run
	$(PY) -m servicekit.devstack

demo: install-run
	$(PY) -m servicekit.devstack --demo

migrate: install-run
	$(PY) -m servicekit.devstack --migrate-only

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# pytest exits 5 when it collected no test: that is a failure here too. Two workers, each test file whole on
# one of them (its module-scoped stack is started once): the suite waits on processes, disks and sockets as
# much as it computes, and one at a time it took over 20 minutes on a 2-core machine. PYTEST_WORKERS=0: serial.
PYTEST_WORKERS ?= 2
test: lint
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest -x -q -m "not postgres" $(PYTEST_ARGS)

# The unit tests (not the stack, fuzz, browser or fault suites) on the lowest version of every direct
# dependency that pyproject.toml allows, in a venv of their own: the minimums stay honest. Not in CI; it
# resolves afresh (uv.lock is not read, and not written either).
LOWEST_VENV ?= .venv-lowest
LOWEST_MARKERS ?= not stack and not fuzz and not browser and not faults
test-lowest: $(UV_STAMP)
	$(UV) venv --quiet --allow-existing --python $(PYTHON) $(LOWEST_VENV)
	$(UV) pip compile --quiet --resolution lowest-direct --python $(LOWEST_VENV)/bin/python \
		--group pyproject.toml:dev pyproject.toml -o $(LOWEST_VENV)/requirements.txt
	$(UV) pip sync --quiet --python $(LOWEST_VENV)/bin/python $(LOWEST_VENV)/requirements.txt
	$(UV) pip install --quiet --python $(LOWEST_VENV)/bin/python --no-deps -e .
	$(LOWEST_VENV)/bin/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile -m "$(LOWEST_MARKERS)" $(PYTEST_ARGS)

# The fault suite alone, printing its figures, at twice the CI size (it also runs in `make test`).
FAULT_TOUCHPOINTS ?= 10000
faults: install
	FAULT_TOUCHPOINTS=$(FAULT_TOUCHPOINTS) $(PY) -m pytest -m faults -s $(PYTEST_ARGS)

# The nightly-style fuzz run: ten times the cases of CI, on both databases (CI fuzzes on SQLite only).
FUZZ_CASES ?= 20000
FUZZ_BACKENDS ?= sqlite,postgres
fuzz: install
	FUZZ_CASES=$(FUZZ_CASES) FUZZ_BACKENDS=$(FUZZ_BACKENDS) FUZZ_BRIEF=1 $(PY) -m pytest -m fuzz -s $(PYTEST_ARGS)

# The restore drill alone (docs/operations.md; it also runs in `make test`): needs PostgreSQL, PgBouncer and Caddy.
restore-drill: install
	CI=true $(PY) -m pytest -p no:cacheprovider tests/test_restore_drill.py $(PYTEST_ARGS)

# The console's pictures in docs/screenshots/ (committed; docs/console.md shows them): only this target writes them,
# a test run photographs into a temporary folder.
screenshots: install
	TOUCHPOINT_SCREENSHOTS=docs $(PY) -m pytest -m browser -p no:cacheprovider $(PYTEST_ARGS)

bench: install
	$(PY) -m bench.run

clean:
	rm -rf $(VENV) $(LOWEST_VENV) $(TOOLS) var .pytest_cache .mypy_cache .ruff_cache
