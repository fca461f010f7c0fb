# Every target creates the virtual environment itself (uv, pinned by uv.lock).
SHELL := /bin/bash
UV_VERSION := 0.13.8
UV := $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
VENV := .venv
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
# Per-output batched materialization writes on a PostgreSQL instance (DAGSTER_INSTANCE=deploy/postgres),
# as deploy/k8s/manifests/supplier-pricing-env.yaml sets it; SQLite writes each event either way.
export DAGSTER_EVENT_BATCH_SIZE ?= 100

.PHONY: demo test lint format bench venv tools clean

.tools/bin/uv:
	python3 -m venv .tools
	.tools/bin/pip install --quiet uv==$(UV_VERSION)

venv: $(UV) tools
	$(UV) sync --frozen --quiet --compile-bytecode

# Debian packages the tests need, installed when a machine lacks them: the CDN feed's tests encrypt
# with the real `openssl enc` CLI; the demo's browser test drives Debian's chromium (never a browser
# download at test time).
APT_GET := $(if $(filter 0,$(shell id -u)),apt-get,sudo apt-get)
tools:
	@missing=""; \
	command -v openssl >/dev/null || missing="$$missing openssl"; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	[ -x /usr/bin/chromedriver ] || missing="$$missing chromium-driver"; \
	if [ -n "$$missing" ]; then \
	  $(APT_GET) update -qq && DEBIAN_FRONTEND=noninteractive $(APT_GET) install -y -qq $$missing; fi

demo: venv  ## sandbox suppliers + storefront + Dagster UI (http://127.0.0.1:3000)
	$(VENV)/bin/python -m sandbox.demo

# Test processes (pytest-xdist): the live-stack tests run one at a time on one of them, the rest
# beside them (tests/conftest.py, LIVE_STACK_MARKS). `PYTEST_WORKERS=0 make test` runs in one process.
PYTEST_WORKERS ?= auto

test: venv  ## the whole suite, then the 5-minute soak of the live stack (bench/soak.py)
	@# pytest's exit code 5 means it collected no tests: a failure, said in words (make reports any
	@# failing line as its own exit code 2). The 20 slowest tests are listed: CI's budget is 20 minutes.
	@$(VENV)/bin/python -m pytest -n $(PYTEST_WORKERS) --dist loadgroup --durations=20; status=$$?; \
	  if [ $$status -eq 5 ]; then echo "make test: pytest collected no tests (exit 5)" >&2; fi; \
	  exit $$status
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
