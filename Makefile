# The two set-up-and-run commands of the README. Both create .venv and install pgplug on first use.
VENV ?= .venv
PYTHON ?= python3
BIN := $(abspath $(VENV))/bin
ARGS ?=

.PHONY: train test lint lint-imports

# Main job: train A3C on CartPole-v1 (configs/a3c.yml), show progress and a final evaluation, save the model.
train: $(VENV)/.installed
	$(BIN)/pgplug train --algo a3c --env CartPole-v1 $(ARGS)

# The whole test suite: lint, the import-layer contracts, then pytest (which exits 5 when it collects no
# test, failing this target).
test: lint lint-imports
	$(BIN)/python -m pytest $(ARGS)

lint: $(VENV)/.installed
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

# import-linter reads the installed package: in the source tree the built-in plugins live in plugins/, and
# only an install makes them the subpackage pgplug.plugins, so the contracts are checked on a scratch copy.
lint-imports: $(VENV)/.installed
	rm -rf build  # also setuptools' own build/lib, which would ship deleted modules
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation --target build/importlint . 2>/dev/null
	cd build && PYTHONPATH=importlint $(BIN)/lint-imports --no-cache ../pyproject.toml

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $@
