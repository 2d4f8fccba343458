# The README's two commands: `make quickstart` (install what the main job needs, run it) and `make test` (install what
# the tests add, run them). CI runs `make install` (everything) then `make test`.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
# the embedded Argilla's queue: all that the quickstart needs from Debian
MAIN_APT := redis-server
# the tests' browser (Argilla's UI) and PostgreSQL (Argilla's database in the PostgreSQL tests)
TEST_APT := chromium postgresql
HAVE_MAIN := command -v redis-server >/dev/null
HAVE_TEST := command -v chromium >/dev/null && ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1
# $(call apt_install,CHECK,PACKAGES): apt-get install PACKAGES unless CHECK succeeds (or there is no apt-get)
apt_install = @if command -v apt-get >/dev/null && ! ($(1)); then $(SUDO) apt-get update -qq && \
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(2); fi

.PHONY: install system-deps main-deps test-deps python-deps dev-deps quickstart test lint

system-deps:
	$(call apt_install,$(HAVE_MAIN) && $(HAVE_TEST),$(MAIN_APT) $(TEST_APT))

main-deps:
	$(call apt_install,$(HAVE_MAIN),$(MAIN_APT))

test-deps:
	$(call apt_install,$(HAVE_TEST),$(TEST_APT))

python-deps:
	# torch first, pinned: the CPU wheel (a range would pull the newest CUDA build and GBs of dependencies)
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e .

# the tests' own packages (pyproject.toml's `dev` extra: pytest, ruff, playwright), where they are missing
dev-deps:
	@$(PYTHON) -c "import importlib.metadata as m, pytest, pytest_timeout, playwright; m.version('alignment-workbench')" 2>/dev/null || \
	  $(PIP) install -q torch==2.13.0 -e ".[dev]"

install: system-deps python-deps dev-deps

quickstart: main-deps python-deps
	workbench pipeline --config recipes/quickstart.yaml

test: main-deps test-deps dev-deps
	$(PYTHON) -m pytest -q

lint:
	ruff check . && ruff format --check .
