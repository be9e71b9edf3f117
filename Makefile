# The two set-up-and-run commands of the README. Both create .venv and install pgplug on first use.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
ARGS ?=

.PHONY: train test lint

# Main job: train A3C on CartPole-v1 (configs/a3c.yml), show progress and a final evaluation, save the model.
train: $(VENV)/.installed
	$(BIN)/pgplug train --algo a3c --env CartPole-v1 $(ARGS)

# The whole test suite (pytest exits 5 when it collects no test, which fails this target).
test: $(VENV)/.installed
	$(BIN)/python -m pytest $(ARGS)

lint: $(VENV)/.installed
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $@
