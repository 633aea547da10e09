# The two commands a newcomer needs: `make demo` runs the system, `make test` runs the tests.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SCOPE ?= mock
PYTEST_ARGS ?=

.PHONY: install test lint format preflight prometheus demo seed status clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $@

preflight: install
	@$(PY) -m shared.preflight

test: install preflight prometheus
	$(PY) -m pytest $(PYTEST_ARGS)

# The observability tests run a real Prometheus and promtool (Debian's `prometheus` package).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
prometheus:
	@command -v prometheus >/dev/null && command -v promtool >/dev/null || { \
	  echo "installing Debian's prometheus package for the observability tests"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends prometheus; }

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy shared

# Runs the system locally: seed the fast mock jobs in scope `mock`, two mock workers, a live status table (Ctrl-C).
demo: install preflight
	$(PY) -m scheduler_seed.demo --scope $(SCOPE)

# Post the first message of every job of deploy/jobs/$(SCOPE).toml (idempotent: one chain per job).
seed: install
	$(PY) -m scheduler_seed seed --scope $(SCOPE)

status: install
	$(PY) -m scheduler_seed status --scope $(SCOPE)

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
