"""Shared fixtures for pgplug's tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from pgplug.contracts.registries import Host as PluginHost
from pgplug.contracts.registries import get_host, reset_host

# The suite runs on 2 shared cores: one torch thread per process avoids oversubscription (and A3C
# workers set the same for themselves).
torch.set_num_threads(1)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests marked ``both_paths`` run twice: with pgplug's speed paths, and with SB3's own code only."""
    if metafunc.definition.get_closest_marker("both_paths") is not None:
        if "fast_paths" not in metafunc.fixturenames:
            metafunc.fixturenames.append("fast_paths")
        metafunc.parametrize("fast_paths", [True, False], ids=["fast", "reference"], indirect=True)


@pytest.fixture
def fast_paths(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """The speed-path setting of a ``both_paths`` test, set as ``PGPLUG_FAST_PATHS`` (A3C workers inherit it)."""
    value = getattr(request, "param", True)
    monkeypatch.setenv("PGPLUG_FAST_PATHS", "1" if value else "0")
    return value


@pytest.fixture
def plugin_host() -> Iterator[PluginHost]:
    """A freshly built process-wide plugin host, forgotten again after the test (so nothing leaks)."""
    reset_host()
    yield get_host()
    reset_host()


@pytest.fixture(autouse=True)
def no_leftover_processes() -> Iterator[None]:
    """No test leaves a child process running (A3C workers, also those forked by the forkserver; subprocess CLIs)."""
    from a3c_helpers import assert_no_leftover_processes, worker_pids

    before = worker_pids()
    yield
    assert_no_leftover_processes(before)
