# Two commands do everything on a fresh machine: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: run test bench chaos manage messages lint format venv clean

$(VENV)/.installed: requirements.txt requirements-dev.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "agentops: Python >= 3.11 is required (python3 is " + sys.version.split()[0] + ")")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "agentops: installing Python packages into $(VENV) ..."
	@$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt -r requirements-dev.txt
	@touch $@

venv: $(VENV)/.installed

run: venv ## the whole system with demo data and demo traffic on http://127.0.0.1:8000/
	@$(PY) -m agentops.devtools.launch run

test: venv ## ruff, then the whole pytest suite against real PostgreSQL, Redis, Celery and Chromium
	@$(PY) -m agentops.devtools.launch test $(PYTEST_ARGS)

chaos: venv ## the chaos tests at full scale (1000 runs, 12 worker kills, repeated Redis and PostgreSQL restarts)
	@CHAOS_SCALE=long $(PY) -m agentops.devtools.launch test tests/chaos $(PYTEST_ARGS)

bench: venv ## every benchmark in one table, written to .run/bench/results.json
	@$(PY) -m agentops.devtools.launch bench $(BENCH_ARGS)

manage: venv ## a manage.py command against make run's database, e.g. make manage ARGS="create_api_key my-agent"
	@$(PY) -m agentops.devtools.launch manage $(ARGS)

messages: venv ## extract translatable strings into locale/zh_Hans (needs GNU gettext), compile, count what is untranslated
	@$(PY) -m agentops.devtools.messages make

lint: venv
	@$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: venv
	@$(VENV)/bin/ruff check --fix . && $(VENV)/bin/ruff format .

clean: ## stop project-local services and remove .run (demo data included)
	-@$(PY) -m agentops.devtools.services down dev
	-@$(PY) -m agentops.devtools.services down test
	rm -rf .run
