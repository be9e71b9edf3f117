# The two set-up-and-run commands of the README. Both create .venv and install pgplug on first use.
VENV ?= .venv
PYTHON ?= python3
BIN := $(abspath $(VENV))/bin
ARGS ?=
# Stable-Baselines3's own tests, for the pinned version (its source distribution on PyPI holds them).
SB3_VERSION := $(shell sed -n 's/^stable_baselines3==//p' constraints.txt)
SB3_SUITE := $(abspath $(VENV))/sb3-suite
SB3_TESTS := $(SB3_SUITE)/stable_baselines3-$(SB3_VERSION)/tests

.PHONY: train test lint lint-imports sb3-suite docs docs-serve results

# docs/results.md, section by section (benchmarks/results_<name>.py; each under an hour on 2 cores): raw numbers
# into docs/results/, pictures into docs/images/results/. `make results` runs them all, `make results-bc` one.
RESULTS_SECTIONS := variance reinforce actor_critic a3c bc memory pong

# Main job: train A3C on CartPole-v1 (configs/a3c.yml), show progress and a final evaluation, save the model.
train: $(VENV)/.installed
	$(BIN)/pgplug train --algo a3c --env CartPole-v1 $(ARGS)

# The whole test suite: lint, the import-layer contracts, pgplug's tests (pytest exits 5 when it collects no
# test, failing this target), then SB3's own tests of A2C run against pgplug.A2C. pytest runs in a network
# namespace whose only interface is loopback (tests/loopback.sh): the Ray tests' traffic stays on this machine.
test: lint lint-imports docs $(VENV)/.installed-extras
	tests/loopback.sh $(BIN)/python -m pytest $(ARGS)
	$(MAKE) sb3-suite

lint: $(VENV)/.installed
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

# import-linter reads the installed package: in the source tree the built-in plugins live in plugins/, and
# only an install makes them the subpackage pgplug.plugins, so the contracts are checked on a scratch copy.
lint-imports: $(VENV)/.installed
	rm -rf build  # also setuptools' own build/lib, which would ship deleted modules
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation --target build/importlint . 2>/dev/null
	cd build && PYTHONPATH=importlint $(BIN)/lint-imports --no-cache ../pyproject.toml

# The docs site (mkdocs.yml): built with --strict, so a broken link or anchor, a page left out of the nav or a
# docstring griffe cannot read fails; into a scratch folder, never the source tree. docs-serve: live preview.
docs: $(VENV)/.installed-extras
	site=$$(mktemp -d) && trap 'rm -rf "$$site"' EXIT && NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict -d "$$site"

docs-serve: $(VENV)/.installed-extras
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve

results: $(addprefix results-,$(RESULTS_SECTIONS))

results-%: $(VENV)/.installed-extras
	$(BIN)/python benchmarks/results_$*.py $(ARGS)

# SB3's tests that use A2C, with stable_baselines3.A2C replaced by pgplug.A2C (tests/sb3_suite/).
sb3-suite: $(SB3_TESTS)
	cd $(SB3_TESTS) && PYTHONPATH=$(CURDIR)/tests/sb3_suite $(BIN)/python -m pytest -q -p pgplug_as_sb3_a2c \
		-p no:cacheprovider -c /dev/null --rootdir=. -W "ignore::DeprecationWarning"

$(SB3_TESTS): constraints.txt | $(VENV)/.installed
	rm -rf $(SB3_SUITE) && mkdir -p $(SB3_SUITE)
	$(BIN)/python -m pip download -q --no-deps --no-binary :all: -d $(SB3_SUITE) stable_baselines3==$(SB3_VERSION)
	tar -xzf $(SB3_SUITE)/stable_baselines3-$(SB3_VERSION).tar.gz -C $(SB3_SUITE)
	touch $@

# The optional extras the tests exercise (A3C's ray backend, rl-baselines3-zoo's tools on pgplug's run folders,
# train --optimize) and the docs site's tools.
$(VENV)/.installed-extras: $(VENV)/.installed
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev,sb3-tests,ray,zoo,optimize,docs]'
	touch $@

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev,sb3-tests]'
	touch $@
