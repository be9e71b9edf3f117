"""pytest plugin: Stable-Baselines3's own test suite, run with ``pgplug.A2C`` as ``stable_baselines3.A2C``.

``make test`` fetches SB3's tests for the pinned version (its source distribution on PyPI) and runs them with
``-p pgplug_as_sb3_a2c``: the tests import ``stable_baselines3.A2C`` and get pgplug's, and only the tests that
use A2C run (a test parametrised over algorithm classes runs for A2C only). Code written for SB3's A2C,
SB3's tests among it, should run unchanged against pgplug's.
"""

from __future__ import annotations

import inspect

import pytest
import stable_baselines3
import stable_baselines3.a2c
import torch
from stable_baselines3.common.base_class import BaseAlgorithm

import pgplug

torch.set_num_threads(1)  # as pgplug's own suite: the machines running it have few cores
stable_baselines3.A2C = stable_baselines3.a2c.A2C = pgplug.A2C


def uses_a2c(item: pytest.Item) -> bool:
    """A test over algorithm classes, for A2C only; any other test whose code mentions A2C."""
    callspec = getattr(item, "callspec", None)
    params = callspec.params.values() if callspec is not None else ()
    algorithms = [p for p in params if isinstance(p, type) and issubclass(p, BaseAlgorithm)]
    if algorithms:
        return any(p is pgplug.A2C for p in algorithms)
    function = getattr(item, "function", None)
    return function is not None and "A2C" in inspect.getsource(function)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    deselected = [item for item in items if not uses_a2c(item)]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if uses_a2c(item)]


def pytest_report_header() -> str:
    versions = f"pgplug {pgplug.__version__}, stable-baselines3 {stable_baselines3.__version__}"
    return f"stable_baselines3.A2C is pgplug.A2C ({versions})"
