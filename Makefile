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

## bench: Mailqueue side by side with django-post_office, bare DRF and raw smtplib
## (3 rounds and a soak, 15-30 min; BENCH_QUICK=1 make bench: one short round). See bench/README.md.
PEERS_VENV := bench/.venv-peers
PEERS_STAMP := $(PEERS_VENV)/.installed

$(PEERS_STAMP): bench/peers/requirements.txt
	@test -x $(PEERS_VENV)/bin/python || $(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(PEERS_VENV)/bin/python -m pip install --quiet -r bench/peers/requirements.txt
	@touch $(PEERS_STAMP)

bench: $(STAMP) $(PEERS_STAMP)
	@scripts/ensure_services.sh postgres redis
	$(PY) -m bench.run $(BENCH_ARGS)
