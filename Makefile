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

.PHONY: install install-bench browser faketime rabbitmq-management test lint format preflight prometheus demo seed status \
	chaos chaos-ha test-broker-controls bench bench-compare up down logs ps compose-seed ctl rehearse clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $@

preflight: install
	@$(PY) -m shared.preflight

# Test files run on PYTEST_WORKERS processes (most integration tests wait on servers, not on the CPU); each test has
# its own scope and private servers take free ports, so files do not disturb each other. PYTEST_WORKERS=0: one process.
# Two: three were faster on a slow two-core machine (13:52 against 16:45) but loaded it enough to change what the HA
# soak meets (see the README's Performance notes); PYTEST_WORKERS=3 is there for a faster run.
PYTEST_WORKERS ?= 2
test: install-bench preflight prometheus browser faketime rabbitmq-management
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=25 -m "not broker_control" $(PYTEST_ARGS)

# The controls of the HA freeze tests: the broker behaviour each guard is for, with the guard off (private
# cluster, about 90 s; not in `make test`, whose tests show the guards acting).
test-broker-controls: install-bench
	$(PY) -m pytest -m broker_control tests/integration/test_ha_freeze.py

# `doctor` reads feature flags, policies and queue totals from RabbitMQ's management HTTP API (port 15672); its tests
# need the plugin on the local broker.
rabbitmq-management:
	@curl -fsS -o /dev/null -u guest:guest http://127.0.0.1:15672/api/overview 2>/dev/null || { \
	  echo "enabling the rabbitmq_management plugin for the doctor tests"; \
	  $(SUDO) rabbitmq-plugins enable rabbitmq_management >/dev/null; }

# The observability tests run a real Prometheus, promtool and Alertmanager (Debian's `prometheus` and
# `prometheus-alertmanager` packages).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
prometheus:
	@command -v prometheus >/dev/null && command -v promtool >/dev/null && command -v prometheus-alertmanager >/dev/null \
	  && command -v amtool >/dev/null || { \
	  echo "installing Debian's prometheus and prometheus-alertmanager packages for the observability tests"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends \
	    prometheus prometheus-alertmanager; }

# The Admin UI test drives a real browser: Debian's chromium through Playwright (browsers cannot be downloaded here,
# so Playwright's own browser download is never used).
browser:
	@command -v chromium >/dev/null || { \
	  echo "installing Debian's chromium for the Admin UI test"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends chromium; }

# The HA soak runs two workers with skewed clocks through libfaketime (Debian's `faketime` package).
faketime:
	@command -v faketime >/dev/null || { \
	  echo "installing Debian's faketime for the HA soak"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends \
	    faketime; }

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

# The same soak on a private three-node RabbitMQ cluster (quorum queues) and a PostgreSQL primary with a synchronous
# standby: node kill -9 (also the delay queues' leader), stop_app/start_app, a rolling restart, a node SIGSTOPped
# for 20 s, a PostgreSQL switchover, two workers with clocks 2 s ahead and 2 s behind, plus worker kills and control
# storms. `make chaos-ha DURATION=300`; report under /tmp/chaos-<time>/ (recovery time per fault in report.txt).
chaos-ha: install faketime
	$(PY) -m tests.chaos --ha --duration $(DURATION) --jobs $(JOBS) $(CHAOS_ARGS)

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

# The same sections for an older tree (BEFORE, a git revision, on a database of its own) and this one, alternating,
# REPEAT times each: compare.md (median and range per scenario, before -> after) and knee.png (lateness against jobs).
# `make bench-compare BEFORE=6867670 REPEAT=3 BENCH_ARGS="--only lateness --jobs 100,500,1000 --workers 1 --duration 30"`
BEFORE ?= HEAD~1
REPEAT ?= 3
bench-compare: install-bench preflight
	$(PY) -m tests.bench.compare --before $(BEFORE) --repeat $(REPEAT) $(BENCH_ARGS)

# Docker Compose (needs a Docker engine): infrastructure + the PROFILE's seeder and workers.
# A wrong PROFILE, a missing env file or no Docker engine stop make before anything runs, with one line and
# exit code 2 (make's `$(error)`), instead of compose starting a half-configured stack.
PROFILES := mock real
ENV_FILE ?= deploy/.env
ifneq ($(filter up ctl logs ps compose-seed,$(MAKECMDGOALS)),)
  ifeq ($(filter $(PROFILE),$(PROFILES)),)
    $(error unknown PROFILE '$(PROFILE)': use one of: $(PROFILES))
  endif
endif
ifneq ($(filter up ctl compose-seed,$(MAKECMDGOALS)),)
  ifeq ($(wildcard $(ENV_FILE)),)
    $(error $(ENV_FILE) is missing: cp deploy/.env.example $(ENV_FILE) and change every password (the same ones in deploy/rabbitmq/definitions.json))
  endif
  ifeq ($(shell docker compose version >/dev/null 2>&1 && echo yes),)
    $(error no 'docker compose' here: the stack needs a Docker engine (without one: make demo, or make rehearse))
  endif
endif

up:
	$(COMPOSE) --env-file $(ENV_FILE) up -d --build

# Any CLI verb against the running stack, as the profile's own RabbitMQ user and in its scope, from a one-off
# container of the profile's seeder service (its environment, its network; nothing else is started):
#   make ctl PROFILE=real ARGS="status"
#   make ctl PROFILE=mock ARGS="pause buy-scanner --note 'market closed'"
# The audit names you: SCHEDULER_ACTOR=cli:<your user>@compose.
ARGS ?= status
ctl:
	@$(COMPOSE) --env-file $(ENV_FILE) run --rm --no-deps -T -e SCHEDULER_ACTOR=cli:$${USER:-$$(id -un)}@compose \
	  seeder-$(PROFILE) python -m scheduler_seed $(ARGS)

# The compose rehearsal without an engine (also part of `make test`): every service of both profiles as local
# processes from the installed image, private RabbitMQ and PostgreSQL stand-ins; see README "Deploy with Docker Compose".
rehearse: install-bench preflight prometheus
	$(PY) -m pytest tests/integration/test_compose_rehearsal.py tests/integration/test_packaging.py $(PYTEST_ARGS)

# Stops every profile's containers; `make down V=1` also deletes the volumes.
down:
	docker compose -f $(COMPOSE_FILE) --profile mock --profile real down $(if $(V),--volumes)

# `make logs PROFILE=real SERVICE=trading-real`
logs:
	$(COMPOSE) logs -f --tail=200 $(SERVICE)

ps:
	$(COMPOSE) ps

# Reseed inside the running stack: `make compose-seed PROFILE=mock`.
compose-seed:
	$(COMPOSE) --env-file $(ENV_FILE) run --rm seeder-$(PROFILE)

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
