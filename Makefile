# Mailqueue: `make run` starts everything locally, `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TEST_WORKERS ?= 2

.PHONY: run test lint format install migrate clean bench

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

## run: web + worker + scheduler against SQLite and a local Redis, delivering into the capture inbox
run: $(STAMP)
	@scripts/ensure_services.sh redis
	@DEBUG=$${DEBUG:-1} $(PY) scripts/run_local.py

## test: the whole suite against real PostgreSQL, Redis and an in-process SMTP server
test: $(STAMP)
	@scripts/ensure_services.sh postgres redis
	@scripts/ensure_browser.sh
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: $(STAMP)
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

migrate: $(STAMP)
	DEBUG=$${DEBUG:-1} $(PY) manage.py migrate

clean:
	rm -rf $(VENV) .run staticfiles db.sqlite3 db.sqlite3-*

## bench: delivery throughput of one worker process (prints numbers)
bench: $(STAMP)
	@scripts/ensure_services.sh postgres redis
	$(PY) bench/delivery_throughput.py $(BENCH_ARGS)
