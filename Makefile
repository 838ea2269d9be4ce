# The two commands of the README, and helpers. Everything installs into .venv.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test test-fast lint install clean

demo: install  ## run the whole pipeline locally and print a summary
	$(BIN)/parcours demo

test: install  ## lint, then every test (unit, integration, end to end)
	$(BIN)/ruff check streams tests
	$(BIN)/mypy
	$(BIN)/pytest -q --durations=15

test-fast: install  ## the unit and property tests only (no broker, no ClickHouse): seconds
	$(BIN)/pytest -q tests/unit

lint: install
	$(BIN)/ruff check streams tests
	$(BIN)/ruff format --check streams tests
	$(BIN)/mypy

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[embedded,rocksdb,dev]"
	touch $@

clean:
	rm -rf $(VENV) .parcours .pytest_cache .ruff_cache .mypy_cache .hypothesis
