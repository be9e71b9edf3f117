"""Shared fixtures for pgplug's tests."""

from __future__ import annotations

import os
import secrets
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from pgplug.contracts.registries import Host as PluginHost
from pgplug.contracts.registries import get_host, reset_host

# The suite runs on 2 shared cores: one torch thread per process avoids oversubscription (and A3C
# workers set the same for themselves).
torch.set_num_threads(1)

# The scripts behind docs/results.md (benchmarks/results_*.py) are tested on fabricated run folders; they import
# each other as top-level modules, as they do when run as scripts.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

# Ray reads its settings when it is first imported (see set_local_defaults in plugins/a3c/ray_cluster.py), and no
# test module has imported it yet: no usage statistics; token authentication with a token of this test session's
# (Ray would otherwise write one into ~/.ray), which every Ray the tests start, and every command line they run,
# uses; and a folder of this session's under which each of those Rays keeps its session folder, so that the
# leftover checks know them. A cluster the environment names (RAY_ADDRESS) is never joined.
RAY_ROOT = tempfile.mkdtemp(prefix="pgplug-ray-")  # short: Ray's socket paths in it must stay under 108 bytes
os.environ.update(
    RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(16), RAY_TMPDIR=RAY_ROOT
)
for _name in ("RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS"):
    os.environ.pop(_name, None)


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(RAY_ROOT, ignore_errors=True)


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


@pytest.fixture(autouse=True)
def ray_contained(request: pytest.FixtureRequest, no_leftover_processes: None) -> Iterator[None]:
    """Tests marked ``ray`` run only in a loopback-only network namespace (they fail in one line elsewhere), and
    leave no process of theirs behind: none that carries their owner label (Ray's workers, also once reparented to
    init), none whose command line names a Ray session they started, no Ray worker, and no descendant of this
    process (the children are ``no_leftover_processes``' to check, after this)."""
    from a3c_helpers import (
        OWNER_VARIABLE,
        descendant_pids,
        helper_pids,
        loopback_only_failure,
        ray_processes_left,
        ray_sessions,
    )

    if request.node.get_closest_marker("ray") is None:
        yield
        return
    failure = loopback_only_failure()
    if failure is not None:
        pytest.fail(failure, pytrace=False)
    owner = f"test-{uuid.uuid4().hex}"
    sessions, descendants = ray_sessions(), descendant_pids()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(OWNER_VARIABLE, owner)
        yield
    left = ray_processes_left(owner, ray_sessions() - sessions)
    assert not left, f"Ray processes left running: {left}"
    escaped = descendant_pids() - descendants - helper_pids()
    assert not escaped, f"descendant processes left running: {sorted(escaped)}"


@pytest.fixture
def results_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The results scripts' folders (benchmarks/results_common.py) under tmp_path: a test writes nothing into docs/."""
    import results_common

    monkeypatch.setattr(results_common, "REPO", tmp_path)
    for name, folder in (("RESULTS", "docs/results"), ("IMAGES", "docs/images/results"), ("RUNS", "runs")):
        monkeypatch.setattr(results_common, name, tmp_path / folder)
    return tmp_path
