# The README's two commands: `make quickstart` (install everything, run the main job) and `make test`.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
APT_PACKAGES := redis-server chromium postgresql

.PHONY: install system-deps quickstart test lint

system-deps:
	@if command -v apt-get >/dev/null && ! (command -v redis-server >/dev/null && command -v chromium >/dev/null && \
	  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1); then \
	  $(if $(filter 0,$(shell id -u)),,sudo) apt-get update -qq && \
	  $(if $(filter 0,$(shell id -u)),,sudo) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES); fi

install: system-deps
	# torch first, pinned: the CPU wheel (a range would pull the newest CUDA build and GBs of dependencies)
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[dev]"

quickstart: install
	workbench pipeline --config recipes/quickstart.yaml

test:
	$(PYTHON) -m pytest -q

lint:
	ruff check . && ruff format --check .
