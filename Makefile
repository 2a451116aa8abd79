# Two commands on a fresh machine with Python 3.12:  `make run`  and  `make test`.
# Both create .venv and install the project when needed:
#   make run   installs what the bot needs (.[postgres]): no torch, no dev tools;
#   make test  installs .[dev,postgres,local] as well (the tests need torch), as CI does.
# `make setup-local` adds the local fallback model's extra (torch, transformers) to the bot.

PYTHON ?= $(shell command -v python3.12 2>/dev/null || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# A stamp per pyproject.toml version: editing it reinstalls once, not at every command.
# The test install is a superset of the run install, so it leaves both stamps behind.
HASH := $(shell cksum < pyproject.toml | cut -d' ' -f1)
STAMP := $(VENV)/.installed-$(HASH)
DEV_STAMP := $(VENV)/.installed-$(HASH)-dev
RUN_EXTRAS := postgres
DEV_EXTRAS := dev,postgres,local

.PHONY: setup setup-dev setup-local run demo test lint format clean

setup: $(STAMP)

setup-dev: $(DEV_STAMP)

# $(call install,EXTRAS): the venv, then the project with EXTRAS; removes every stamp.
define install
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -c 'import sys; assert sys.version_info[:2] == (3, 12), "iBot needs Python 3.12"'
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[$(1)]"
	@rm -f $(VENV)/.installed-*
endef

$(STAMP): pyproject.toml
	$(call install,$(RUN_EXTRAS))
	@touch $@

$(DEV_STAMP): pyproject.toml
	$(call install,$(DEV_EXTRAS))
	@touch $(STAMP) $@

setup-local: setup  ## the local fallback model's extra (torch, transformers, accelerate)
	$(BIN)/python -m pip install --quiet -e ".[$(RUN_EXTRAS),local]"

run: setup  ## start the bot (or the offline demo when no Discord token is configured)
	$(BIN)/ibot run

demo: setup
	$(BIN)/ibot demo

test: setup-dev  ## lint + the whole test suite (slow tests included)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

lint: setup-dev
	$(BIN)/ruff check .

format: setup-dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
