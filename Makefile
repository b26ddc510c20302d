PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: up test check bench soak install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(TEST_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@ $(STAMP)

$(DEV_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test,dev]'
	touch $@ $(TEST_STAMP) $(STAMP)

install: $(STAMP)

up: $(STAMP)
	$(BIN)/switchboard up

# Two workers (TEST_WORKERS=0 runs in one process); a test file stays on one worker.
TEST_WORKERS ?= 2

test: $(TEST_STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

# Lint, types of the domain and events, and the layer rule (contracts in pyproject.toml).
check: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: $(TEST_STAMP)
	$(BIN)/python -m tests.benchmarks

# PostgreSQL away for SOAK_SECONDS (600) under load (SOAK_FAULT=stop|freeze): nothing lost or
# dead-lettered; prints one summary line (tests/faults/soak.py). The short versions run in `make test`.
soak: $(TEST_STAMP)
	$(BIN)/python -m tests.faults.soak

clean:
	rm -rf $(VENV) .switchboard
