# Mailqueue: `make run` starts everything locally, `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TEST_WORKERS ?= 2

.PHONY: run test lint format install migrate clean bench chaos fuzz

# The service, then the Python client and its Django backend (clients/python/, tested in tests/clients/).
$(STAMP): pyproject.toml clients/python/pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m pip install --quiet -e clients/python
	@touch $(STAMP)

install: $(STAMP)

## run: web + worker + scheduler against SQLite and a local Redis, delivering into the capture inbox
run: $(STAMP)
	@scripts/ensure_services.sh redis
	@DEBUG=$${DEBUG:-1} $(PY) scripts/run_local.py

## test: the whole suite against real PostgreSQL, Redis and an in-process SMTP server
test: $(STAMP)
	@scripts/ensure_services.sh postgres redis swaks
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

## fuzz: schemathesis against every API operation (a key with every scope, no key, bad keys)
## and the property tests (addresses and headers, the template sandbox, the JSON parser) with
## FUZZ_EXAMPLES examples per operation and per property, a new FUZZ_SEED each run unless given
## (about 30 min on 2 cores; FUZZ_EXAMPLES=60 takes 4 min; FUZZ_OPERATIONS='^POST '
## for some operations only). `make test` runs the same tests with 15 examples per operation,
## 40 per property and fixed seeds.
FUZZ_EXAMPLES ?= 500
ifndef FUZZ_SEED
FUZZ_SEED := $(shell date +%s)
endif
FUZZ_TESTS := tests/mailqueue/test_api_schema.py tests/mailqueue/test_properties_addresses.py \
	tests/mailqueue/test_properties_json.py tests/templates_app/test_properties_sandbox.py
fuzz: $(STAMP)
	@scripts/ensure_services.sh postgres redis
	@echo "fuzz: $(FUZZ_EXAMPLES) examples per operation and property, schemathesis seed $(FUZZ_SEED)"
	@echo "fuzz: $(FUZZ_TESTS)"
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) FUZZ_SEED=$(FUZZ_SEED) HYPOTHESIS_PROFILE=fuzz \
		$(PY) -m pytest -n $(TEST_WORKERS) -v --hypothesis-show-statistics $(FUZZ_TESTS) $(PYTEST_ARGS)

## chaos: 10,000 emails through the API while workers, a scheduler, Redis and PostgreSQL are
## killed, flushed and restarted, on private servers; checks every email ends sent exactly once
## (a few minutes; CHAOS_ARGS="--emails 1000" for a shorter run). See chaos/chaos_run.py.
chaos: $(STAMP)
	@scripts/ensure_services.sh postgres redis
	$(PY) -m chaos.chaos_run $(CHAOS_ARGS)

## chaos-breaker: the primary provider (a local fake of Postmark's API) answers 503 for 60 s
## under a steady load with 4 workers; the SMTP secondary carries the mail, nothing is lost or
## doubled, and mail returns to the primary after it recovers (~2 min; BREAKER_ARGS="--outage 10
## --cooldown 2" for a shorter run). See chaos/breaker_failover.py.
.PHONY: chaos-breaker
chaos-breaker: $(STAMP)
	@scripts/ensure_services.sh postgres redis
	$(PY) -m chaos.breaker_failover $(BREAKER_ARGS)

## bench-rate-limits: 8 worker processes under one shared limit (smtp=10/s:10), 1000 emails, 3 runs:
## per-second histogram, most in any 1-s window, utilisation, and high's wait behind a low flood
.PHONY: bench-rate-limits
bench-rate-limits: $(STAMP)
	@scripts/ensure_services.sh postgres redis
	$(PY) -m bench.rate_limits --runs 3 $(BENCH_ARGS)

## bench-scale: emails/s with 1, 2 and 4 worker processes and the CPU of each component, on a
## private PostgreSQL and Redis (3 rounds of 3,000 emails, ~5 min; BENCH_ARGS="--rounds 1").
.PHONY: bench-scale
bench-scale: $(STAMP)
	@scripts/ensure_services.sh postgres redis
	$(PY) -m bench.scale_workers $(BENCH_ARGS)
