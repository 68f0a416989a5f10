# Everything a fresh machine needs: `make run` serves, `make test` checks everything.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test lint format bench worker clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	POCKETRUN_EXAMPLES=$${POCKETRUN_EXAMPLES:-true} $(BIN)/pocketrun serve

worker: $(STAMP)
	$(BIN)/pocketrun worker

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

# The dashboard tests drive a real headless Chromium (Debian's package; no download).
$(CHROMIUM):
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium || ($(SUDO) apt-get update && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium)

test: lint $(CHROMIUM)
	$(BIN)/python -m pytest

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python -m bench.peers
	$(BIN)/python -m bench.http_inline
	$(BIN)/python -m bench.api
	$(BIN)/python -m bench.dashboard

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
