# The two commands of the quickstart: `make dev` and `make test`. Both use one venv at .venv/.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.nova-installed

.PHONY: install dev test test-fast lint stack-up stack-down clean bench-tools

$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install -q --disable-pip-version-check -c requirements.lock -e '.[dev,cdc]'
	@touch $(STAMP)

install: $(STAMP)

## make dev: local stack + Dagster on http://127.0.0.1:3000 with the project loaded
dev: install
	$(BIN)/nova dev

## make test: lint, then the test suite against real local services it starts itself
test: install lint
	$(BIN)/python -m pytest

## make test-fast: the unit tests only (no service started), for the edit-test loop
test-fast: install
	$(BIN)/python -m pytest -m unit -q

lint: install
	$(BIN)/ruff check nova_assets nova_assets_tests bench
	$(BIN)/ruff format --check nova_assets nova_assets_tests bench
	$(BIN)/mypy

## make bench-tools: wrk, the HTTP load generator of `nova bench feed` (Debian; PyPI has none)
bench-tools:
	@command -v wrk >/dev/null || { apt-get install -y -q wrk || sudo apt-get install -y -q wrk; }

stack-up: install
	$(BIN)/nova stack up

stack-down: install
	$(BIN)/nova stack down

clean:
	-$(BIN)/nova stack down
	rm -rf $(VENV) .nova
