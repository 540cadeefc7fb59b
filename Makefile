# Touchpoint: `make up` runs the whole stack, `make test` runs every test.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.DEFAULT_GOAL := help
.PHONY: help install up demo migrate lint format test test-fast bench fuzz faults clean

help:
	@echo "make up      install, migrate and run the whole stack (SQLite + embedded nats-server); Ctrl-C stops it"
	@echo "make test    install, lint and run every test"
	@echo "make lint    ruff and mypy"
	@echo "make bench   run the benchmarks under bench/ and write bench/results/"
	@echo "make faults  the fault suite alone, with its figures (FAULT_TOUCHPOINTS=10000 per scenario)"
	@echo "make fuzz    Schemathesis against every API (three services, gateway): FUZZ_CASES=20000 each, SQLite and PostgreSQL"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

up: install
	$(PY) -m servicekit.devstack

demo: install
	$(PY) -m servicekit.devstack --demo

migrate: install
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

# The fault suite alone, printing its figures, at twice the CI size (it also runs in `make test`).
FAULT_TOUCHPOINTS ?= 10000
faults: install
	FAULT_TOUCHPOINTS=$(FAULT_TOUCHPOINTS) $(PY) -m pytest -m faults -s $(PYTEST_ARGS)

# The nightly-style fuzz run: ten times the cases of CI, on both databases (CI fuzzes on SQLite only).
FUZZ_CASES ?= 20000
FUZZ_BACKENDS ?= sqlite,postgres
fuzz: install
	FUZZ_CASES=$(FUZZ_CASES) FUZZ_BACKENDS=$(FUZZ_BACKENDS) FUZZ_BRIEF=1 $(PY) -m pytest -m fuzz -s $(PYTEST_ARGS)

bench: install
	$(PY) -m bench.run

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
