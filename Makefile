# Every target creates the virtual environment itself (uv, pinned by uv.lock).
SHELL := /bin/bash
UV_VERSION := 0.13.8
UV := $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
VENV := .venv
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home

.PHONY: demo test lint format bench venv tools clean

.tools/bin/uv:
	python3 -m venv .tools
	.tools/bin/pip install --quiet uv==$(UV_VERSION)

venv: $(UV) tools
	$(UV) sync --frozen --quiet --compile-bytecode

# The CDN feed's tests encrypt with the real `openssl enc` CLI: install it when a machine lacks it.
tools:
	@command -v openssl >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq openssl; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq openssl; fi; }

demo: venv  ## sandbox suppliers + storefront + Dagster UI (http://127.0.0.1:3000)
	$(VENV)/bin/python -m sandbox.demo

test: venv  ## the whole suite, then the 5-minute soak of the live stack (bench/soak.py)
	$(VENV)/bin/python -m pytest
	$(VENV)/bin/python -m bench soak

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: venv
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: venv
	$(VENV)/bin/python -m bench

clean:
	rm -rf .dagster_home warehouse sandbox_data .pytest_cache
