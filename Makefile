# Two promises: `make run` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
GEOIP_TEST_DB := tests/data/GeoIP2-City-Test.mmdb

.PHONY: run test lint typecheck pytest bench bench-ingest bench-query bench-sessions bench-load bench-ui bench-auth clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

run: $(VENV)/.installed
	$(BIN)/m1lite serve

# MaxMind's published GeoIP2-City test database ships inside the geoip2 sdist on PyPI.
$(GEOIP_TEST_DB): | $(BIN)/python
	$(BIN)/python tests/data/fetch_geoip_test_db.py $@

lint: $(VENV)/.installed
	$(BIN)/ruff check m1lite tests bench
	$(BIN)/ruff format --check m1lite tests bench

typecheck: $(VENV)/.installed
	$(BIN)/mypy m1lite

pytest: $(VENV)/.installed $(GEOIP_TEST_DB)
	$(BIN)/pytest

test: lint typecheck pytest

$(VENV)/.bench-installed: pyproject.toml | $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $@

bench: bench-ingest bench-query

bench-ingest: $(VENV)/.installed
	$(BIN)/python bench/bench_ingest.py

# 1M events by default; `make bench-query QUERY_ARGS="--events 10000000"` for the full run.
bench-query: $(VENV)/.bench-installed
	$(BIN)/python bench/bench_query.py $(QUERY_ARGS)

bench-sessions: $(VENV)/.installed
	$(BIN)/python bench/bench_sessions.py

bench-load: $(VENV)/.installed
	$(BIN)/python bench/bench_load.py

bench-ui: $(VENV)/.installed
	$(BIN)/python bench/bench_ui.py

bench-auth: $(VENV)/.installed
	$(BIN)/python bench/bench_auth.py

clean:
	rm -rf $(VENV) build *.egg-info
