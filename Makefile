# Two entry points (README): `make demo` and `make test`. Both create .venv on first use,
# installing torch==2.13.0 first (a CPU wheel; a looser spec would pull a CUDA build).
# `make demo` installs what headgraph needs; `make test` adds the test extras.
VENV ?= .venv
PY := $(VENV)/bin/python
BASE := $(VENV)/.headgraph-installed
TESTING := $(VENV)/.headgraph-test-installed

.PHONY: demo test test-fast lint clean browser

$(BASE): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e .
	touch $(BASE)

$(TESTING): $(BASE)
	$(PY) -m pip install -q -e '.[test]'
	touch $(TESTING)

demo: $(BASE)
	$(VENV)/bin/headgraph demo --db headgraph.duckdb

lint: $(TESTING)
	$(VENV)/bin/ruff check headgraph tests benchmarks

# Debian's Chromium for tests/test_viewer.py (Playwright drives it; no browser download).
browser:
	command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)

test: $(TESTING) lint browser
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

# The quick lane: no PostgreSQL, Ray or browser (tests/conftest.py marks those `slow`).
test-fast: $(TESTING)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) headgraph.duckdb headgraph.duckdb.wal
