# make help lists the targets.
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python

.PHONY: help install run test check fmt dev bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(VPY):
	$(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip

install: $(VPY) ## install the service and its dev tools into .venv (exact versions from requirements.lock)
	$(VPY) -m pip install -q -c requirements.lock -e ".[dev,bench]"

run: install ## install, then serve on 127.0.0.1:8000 (embedded Valkey + SQLite)
	$(VENV)/bin/healthforms serve

dev: install ## like run, with auto-reload
	HEALTHFORMS_ENV=development $(VENV)/bin/uvicorn --factory healthforms.app:create_app --reload

test: install ## install, then run the whole suite on both legs (see scripts/test.sh)
	PYTHON=$(VPY) scripts/test.sh

check: install ## format check, lint, types
	$(VENV)/bin/ruff format --check healthforms tests bench
	$(VENV)/bin/ruff check healthforms tests bench
	$(VENV)/bin/mypy

fmt: install ## format the code
	$(VENV)/bin/ruff format healthforms tests bench
	$(VENV)/bin/ruff check --fix healthforms tests bench

bench: install ## run the benchmarks (prints tables, writes bench/results/*.json)
	$(VPY) -m bench

clean: ## remove the venv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
