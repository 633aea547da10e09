# The two commands a newcomer needs: `make demo` runs the system, `make test` runs the tests.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SCOPE ?= mock
PROFILE ?= mock
COMPOSE_FILE := deploy/docker-compose.yml
COMPOSE := docker compose -f $(COMPOSE_FILE) --profile $(PROFILE)
PYTEST_ARGS ?=

.PHONY: install install-bench browser test lint format preflight prometheus demo seed status chaos bench up down logs ps compose-seed clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $@

preflight: install
	@$(PY) -m shared.preflight

test: install-bench preflight prometheus browser
	$(PY) -m pytest $(PYTEST_ARGS)

# The observability tests run a real Prometheus and promtool (Debian's `prometheus` package).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
prometheus:
	@command -v prometheus >/dev/null && command -v promtool >/dev/null || { \
	  echo "installing Debian's prometheus package for the observability tests"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends prometheus; }

# The Admin UI test drives a real browser: Debian's chromium through Playwright (browsers cannot be downloaded here,
# so Playwright's own browser download is never used).
browser:
	@command -v chromium >/dev/null || { \
	  echo "installing Debian's chromium for the Admin UI test"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends chromium; }

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy shared

# Runs the system locally: seed the fast mock jobs in scope `mock`, two mock workers, the control plane (API and Admin
# UI, its URL printed), a live status table (Ctrl-C).
demo: install preflight
	$(PY) -m scheduler_seed.demo --scope $(SCOPE)

# Post the first message of every job of deploy/jobs/$(SCOPE).toml (idempotent: one chain per job).
# No Docker needed: uses AMQP_URL / DATABASE_URL. SEED_ARGS=--prune pauses jobs no longer in the file.
seed: install
	$(PY) -m scheduler_seed seed --scope $(SCOPE) --file deploy/jobs/$(SCOPE).toml $(SEED_ARGS)

status: install
	$(PY) -m scheduler_seed status --scope $(SCOPE)

# Fault-injection soak on private RabbitMQ and PostgreSQL instances (the machine's servers are not touched):
# `make chaos DURATION=300 JOBS=30`. Writes a JSON report and a table under /tmp/chaos-<time>/; exits non-zero
# on any violation. Needs root (it starts PostgreSQL as the postgres user).
DURATION ?= 300
JOBS ?= 30
CHAOS_ARGS ?=
chaos: install
	$(PY) -m tests.chaos --duration $(DURATION) --jobs $(JOBS) $(CHAOS_ARGS)

# Benchmark (tests/bench, the `bench` extra: APScheduler, Celery, matplotlib, psutil, py-spy) against the local
# RabbitMQ and PostgreSQL; writes bench-results/<UTC time>/results.{json,md}, samples.json and lateness.png.
# About 30 minutes in full; `make bench BENCH_ARGS=--quick` is a half-minute smoke run whose numbers mean nothing
# (`make test` runs it too, in tests/bench/test_bench_smoke.py).
# `BENCH_ARGS="--only lateness --jobs 500 --workers 1 --profile"` runs one scenario under py-spy.
BENCH_ARGS ?=
install-bench: $(VENV)/.installed-bench

$(VENV)/.installed-bench: $(VENV)/.installed
	$(VENV)/bin/pip install --quiet -e '.[dev,bench]'
	touch $@

bench: install-bench preflight
	$(PY) -m tests.bench $(BENCH_ARGS)

# Docker Compose (needs a Docker engine): infrastructure + the PROFILE's seeder and workers.
up:
	$(COMPOSE) up -d --build

# Stops every profile's containers; `make down V=1` also deletes the volumes.
down:
	docker compose -f $(COMPOSE_FILE) --profile mock --profile real down $(if $(V),--volumes)

# `make logs PROFILE=real SERVICE=trading-real`
logs:
	$(COMPOSE) logs -f --tail=200 $(SERVICE)

ps:
	$(COMPOSE) ps

# Reseed inside the running stack.
compose-seed:
	docker compose -f $(COMPOSE_FILE) --profile $(SCOPE) run --rm seeder-$(SCOPE)

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
