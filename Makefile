# The two commands a user needs are `make run` and `make test`; everything else is a step of theirs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck unit bench setup system-deps test-system-deps clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

setup: $(STAMP) system-deps

system-deps:
	@bash scripts/system-deps.sh run

test-system-deps:
	@bash scripts/system-deps.sh test

run: setup
	$(PY) -m api serve --announce --self-signed-tls

lint: $(STAMP)
	$(VENV)/bin/ruff check relay api tests
	$(VENV)/bin/mypy

test: $(STAMP) system-deps test-system-deps lint
	$(VENV)/bin/pytest -q -p no:cacheprovider tests

bench: setup test-system-deps
	@bash scripts/system-deps.sh bench
	$(PY) -m tests.bench.relay_bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
