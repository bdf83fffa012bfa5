# The two commands: `make run` (the product, left running) and `make test` (lint + every test suite).
# Everything local lives in .state/<stack>/; see deploy/local/stack.py for the details.

SHELL        := /bin/bash
.SHELLFLAGS  := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON      ?= python3
VENV        ?= .venv
PY          := $(VENV)/bin/python
STACK_TOOL  := deploy/local/stack.py
STACK       := $(PYTHON) $(STACK_TOOL)
STACK_NAME  ?= run

DEMO        ?= tests/e2e/demo.py
SEED_ARGS   ?= --cabinets 3 --slots 8
BENCH_ARGS  ?=
PYTEST_ARGS ?=
KEEP_STACK  ?= 0
SKIP_LINT   ?= 0
TEST_TIMEOUT ?= 1200

# Local packages: a directory with a pyproject.toml; their import name is the directory name with - -> _.
PKG_DIRS    := $(patsubst %/pyproject.toml,%,$(wildcard libs/*/pyproject.toml services/*-svc/pyproject.toml device-emulator/pyproject.toml console/pyproject.toml))
# mypy gets the package directories (not their per-service tests/, whose module names collide); the module
# names come from mypy_path in pyproject.toml. Override MYPY_TARGETS to widen it.
PKG_SRC     := $(foreach d,$(PKG_DIRS),$(wildcard $(d)/$(subst -,_,$(notdir $(d)))/__init__.py))
MYPY_TARGETS ?= $(patsubst %/__init__.py,%,$(PKG_SRC)) deploy/local $(wildcard tests)
TEST_PATHS  := $(wildcard libs services device-emulator console tests)

.PHONY: help install run stop status test test-up lint bench bench-campaigns bench-analytics-ingest chaos clean-state

help:
	@echo "make install      create .venv (python3.11 + uv) and install requirements.lock and the local packages"
	@echo "make run          bring up the local stack, migrate, start the six services and the console, seed, emulator, demo"
	@echo "make stop         stop the run stack (STACK_NAME=test for the test stack)"
	@echo "make status       what runs and whether it answers (STACK_NAME=run|test)"
	@echo "make test         lint, fresh test stack, migrations, pytest ($(TEST_PATHS))"
	@echo "make test-up      bring the test stack up and migrate it (then: $(STACK_TOOL) exec --stack test -- .venv/bin/pytest ...)"
	@echo "make lint         ruff check, ruff format --check, mypy"
	@echo "make bench-campaigns  campaign fan-out rate (recipients/s) on a scratch database of the test stack"
	@echo "make bench-analytics-ingest  analytics ingest through the test stack's broker (events/s, ms per batch); BENCH_ARGS=\"--rentals 20000\""
	@echo "make bench        swarm benchmark on the run stack (started if down); BENCH_ARGS=\"--devices 1000 ...\""
	@echo "                  PRESET=overload|rental|telemetry|city|sustained|storm|rest: a named run of issue 9"
	@echo "make chaos        fault injection on its own stack (kills, broker/Mosquitto/PostgreSQL restarts, device faults)"
	@echo "                  while users rent; invariants checked; reports/chaos/; CHAOS_ARGS=\"--duration-s 1800 --users 12\""
	@echo "make clean-state  stop every stack and delete .state/"

install:
	@$(STACK) install

run: install
	@$(STACK) up --stack run
	@$(STACK) migrate --stack run
	@$(STACK) start-services --stack run
	@$(STACK) seed --stack run -- $(SEED_ARGS)
	@$(STACK) emulator --stack run
	@$(STACK) exec --stack run -- $(PY) $(DEMO)
	@$(STACK) status --stack run
	@echo "Everything keeps running; stop it with: make stop"

stop:
	@$(STACK) stop --stack $(STACK_NAME)

status:
	@$(STACK) status --stack $(STACK_NAME)

lint: install
	@echo "ruff check"
	@$(VENV)/bin/ruff check .
	@echo "ruff format --check"
	@$(VENV)/bin/ruff format --check .
	@echo "mypy $(MYPY_TARGETS)"
	@$(VENV)/bin/mypy $(MYPY_TARGETS)

# Two phases, each on a freshly reset test stack (new databases, empty broker): first the unit and
# integration suites (they run services in-process), then the end-to-end suite (it starts the services as
# processes through $$PB_STACK_TOOL start-services --stack test). Separate processes keep the in-process
# apps of phase one from sharing consumer groups with the real services of phase two.
# Pytest exit 5 (nothing collected) counts as a failure. KEEP_STACK=1 leaves the test stack up afterwards;
# SKIP_LINT=1 skips lint while iterating (CI never sets it); TEST_TIMEOUT bounds a hung suite.
# tests/deploy (the deployment files, validated offline) runs with them; tests/e2e is phase two.
UNIT_PATHS  := $(filter-out tests,$(TEST_PATHS)) $(wildcard tests/deploy tests/architecture)
E2E_PATHS   := $(wildcard tests/e2e)
PYTEST      := timeout --foreground -k 30 $(TEST_TIMEOUT) $(PY) -m pytest

test: install $(if $(filter 1,$(SKIP_LINT)),,lint)
	@if [ -z "$(UNIT_PATHS)" ] || [ -z "$(E2E_PATHS)" ]; then echo "make test: test directories missing" >&2; exit 1; fi
	@set +e; \
	phase() { \
	  $(STACK) up --stack test && $(STACK) migrate --stack test && \
	  $(STACK) exec --stack test -- $(PYTEST) "$$@" $(PYTEST_ARGS); \
	  r=$$?; \
	  if [ $$r -eq 5 ]; then echo "make test: pytest collected no tests in $$*" >&2; r=1; fi; \
	  if [ $$r -eq 124 ]; then echo "make test: pytest hung, killed after $(TEST_TIMEOUT)s (TEST_TIMEOUT)" >&2; fi; \
	  return $$r; \
	}; \
	phase $(UNIT_PATHS); rc=$$?; \
	phase $(E2E_PATHS); rc2=$$?; \
	if [ $$rc -eq 0 ]; then rc=$$rc2; fi; \
	if [ "$(KEEP_STACK)" != 1 ]; then $(STACK) stop --stack test || rc=1; fi; \
	if [ $$rc -eq 0 ]; then echo "make test: all suites passed"; fi; \
	exit $$rc

test-up: install
	@$(STACK) up --stack test && $(STACK) migrate --stack test

bench: install
	@$(STACK) up --stack run && $(STACK) migrate --stack run && $(STACK) start-services --stack run --keep
	@$(STACK) exec --stack run -- $(PY) -m device_emulator.bench $(if $(PRESET),--preset $(PRESET)) $(BENCH_ARGS)

bench-campaigns: install
	@$(STACK) up --stack test && $(STACK) exec --stack test -- \
	  sh -c '$(PY) -m notify_svc.campaigns.bench --database-url "$$NOTIFY_DATABASE_URL" $(BENCH_ARGS)'

bench-analytics-ingest: install
	@$(STACK) up --stack test && $(STACK) exec --stack test -- \
	  sh -c '$(PY) services/analytics-svc/bench/ingest.py --url "$${ANALYTICS_DATABASE_URL}_ingest_bench" --bootstrap "$$KAFKA_BOOTSTRAP" $(BENCH_ARGS)'

# `make chaos`: a fresh stack of its own (`chaos`: its ports are PB_CHAOS_PORT_BASE, PB_CHAOS_MQTT_PORT,
# PB_CHAOS_KAFKA_PORT), the services (device-svc twice), a seeded fleet and the emulator; then tests/chaos/run.py
# (`--help`): users rent while faults are injected; exit 1 on any violation. The stack is stopped afterwards
# unless KEEP_STACK=1. The default run is 5 minutes; the long run: CHAOS_ARGS="--duration-s 1800 --users 12".
CHAOS_ARGS  ?=
CHAOS_SEED_ARGS ?= --cabinets 4 --slots 8

chaos: install
	@$(STACK) up --stack chaos && $(STACK) migrate --stack chaos && $(STACK) start-services --stack chaos --timeout 240
	@$(STACK) seed --stack chaos -- $(CHAOS_SEED_ARGS) && $(STACK) emulator --stack chaos
	@set +e; $(STACK) exec --stack chaos -- $(PY) tests/chaos/run.py $(CHAOS_ARGS); rc=$$?; \
	if [ "$(KEEP_STACK)" != 1 ]; then $(STACK) stop --stack chaos || rc=1; fi; exit $$rc

clean-state:
	@$(STACK) clean
