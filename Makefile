# The two commands of the README: `make run` and `make test`. Everything they
# need is installed here, into .venv, from setup.cfg.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint typecheck bench chaos clean browser

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.run-installed: $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.dev-installed: $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.run-installed

## run: set up and start the whole stack (embedded Redis unless REDIS_URL is set)
run: $(VENV)/.run-installed
	@PATH="$(CURDIR)/$(BIN):$$PATH" bash deploy/run-local.sh

## test: set up and run every test (lint and type check included)
test: $(VENV)/.dev-installed browser
	$(BIN)/ruff check .
	$(BIN)/mypy shared api workers
	$(BIN)/python -m pytest

## bench: benchmarks that print figures (not part of make test); BENCH_QUICK=1 for a
## one-to-two-minute check that they run; figures land in var/bench/*.json
bench: $(VENV)/.dev-installed
	@command -v wrk >/dev/null || { command -v apt-get >/dev/null && \
		(apt-get update -qq && apt-get install -y -qq wrk >/dev/null) || \
		echo "wrk not installed: the status bench skips its throughput part"; }
	@for b in tests/bench/bench_*.py; do \
		m=$$(echo $$b | sed 's#/#.#g; s#\.py$$##'); echo "== $$m"; $(BIN)/python -m $$m || exit 1; \
	done

## chaos: the chaos suite for DURATION seconds of random faults (make test runs a short profile)
DURATION ?= 600
chaos: $(VENV)/.dev-installed
	CHAOS_DURATION=$(DURATION) $(BIN)/python -m pytest tests/chaos -q -s -p no:cacheprovider \
		--timeout=$$(( $(DURATION) + 300 ))

# The pairing page's browser test drives Debian's chromium (never a downloaded
# browser). As root with apt reachable (CI) it is installed when missing;
# otherwise that one test skips and says why.
browser:
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Debian's chromium for the browser test"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
			>/dev/null) || echo "chromium could not be installed: the browser test will skip"; \
	fi

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check .

typecheck: $(VENV)/.dev-installed
	$(BIN)/mypy shared api workers

clean:
	rm -rf $(VENV) var
