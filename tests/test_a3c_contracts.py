"""A3C on the contracts: lifecycle hooks in the driver for every worker update, backends registered by name, and a
worker loop that talks only to a parameter store, so that a store which is not shared memory fits."""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from typing import Any

import pytest
import torch as th
import torch.multiprocessing as mp
from a3c_helpers import deadline

from pgplug import A3C, hookimpl
from pgplug.contracts.backend import GlobalModel, ParameterStore, WorkerJob
from pgplug.contracts.registries import get_host, reset_host
from pgplug.contracts.rollout import Rollout
from pgplug.errors import PgplugError
from pgplug.plugins.a3c.serial_backend import SerialBackend
from pgplug.plugins.a3c.shared_memory import SharedMemoryStore

KWARGS: dict[str, Any] = {"n_envs_per_worker": 2, "t_max": 5, "seed": 0}


class Observer:
    """A plugin object that records the lifecycle hooks, and the process they ran in."""

    def __init__(self) -> None:
        self.rollouts: list[Rollout] = []
        self.updates: list[dict[str, float]] = []
        self.pids: set[int] = set()

    @hookimpl
    def pgplug_after_rollout(self, algorithm: Any, rollout: Rollout) -> None:
        self.rollouts.append(rollout)
        self.pids.add(os.getpid())

    @hookimpl
    def pgplug_after_update(self, algorithm: Any, metrics: dict[str, float]) -> None:
        self.updates.append(metrics)
        self.pids.add(os.getpid())


@pytest.fixture
def observer() -> Iterator[Observer]:
    reset_host()
    plugin = Observer()
    get_host().register(plugin, name="observer", source="test")
    yield plugin
    reset_host()


@pytest.mark.parametrize("backend", ["serial", "process"])
def test_a3c_calls_the_hooks_in_the_driver_for_every_worker_update(observer: Observer, backend: str) -> None:
    n_workers = 1 if backend == "serial" else 2
    model = A3C("MlpPolicy", "CartPole-v1", backend=backend, n_workers=n_workers, **KWARGS)
    with deadline(120):
        model.learn(400)
    assert len(observer.updates) == len(observer.rollouts) == model._n_updates > 0
    assert observer.pids == {os.getpid()}
    assert {metrics["a3c/worker"] for metrics in observer.updates} == set(range(n_workers))
    assert all({"train/policy_loss", "train/value_loss", "a3c/policy_lag"} <= m.keys() for m in observer.updates)
    rollout = observer.rollouts[0]
    assert rollout.rewards.shape == (5, 2) and rollout.advantages is not None and rollout.returns is not None
    assert rollout.observations.shape == (5, 2, 4)


def test_without_a_rollout_observer_no_rollout_travels() -> None:
    model = A3C("MlpPolicy", "CartPole-v1", backend="serial", n_workers=1, **KWARGS)
    sent: list[Any] = []
    original = model._absorb

    def absorb(messages, *args: Any) -> None:
        sent.extend(payload["rollouts"] for kind, _, payload in messages if kind == "report")
        original(messages, *args)

    model._absorb = absorb  # type: ignore[method-assign]
    model.learn(100)
    assert sent and all(rollouts == [] for rollouts in sent)


# -- backends by name -------------------------------------------------------------------------------


class CopyingStore(SharedMemoryStore):
    """A store that is not the driver's memory: it keeps a copy of the global policy and its optimizer, as a
    parameter server on another machine would; the driver and the worker only pull and push."""

    def __init__(self, model: GlobalModel, ctx: Any) -> None:
        remote = copy.deepcopy(model.policy)  # the optimizer too: it is an attribute of the policy
        super().__init__(GlobalModel(remote, model.steps, model.updates, model.lock, True, model.fast_paths), ctx)


class CopyingBackend(SerialBackend):
    """The serial backend over a :class:`CopyingStore`."""

    name = "copying-serial"

    def start(self, job: WorkerJob, n_workers: int, model: GlobalModel) -> ParameterStore:
        self._store = CopyingStore(model, mp.get_context("spawn"))
        self._worker = job.build(0, self._store, self._messages.append)
        return self._store


class CopyingBackendPlugin:
    @hookimpl
    def pgplug_register_backends(self, register) -> None:
        register(CopyingBackend)


@pytest.fixture
def copying_backend() -> Iterator[None]:
    reset_host()
    get_host().register(CopyingBackendPlugin(), name="copying-backend", source="test")
    yield
    reset_host()


def test_the_built_in_backends_are_registered_through_the_hook() -> None:
    entries = {entry.name: entry for entry in get_host().backends}
    assert {"process", "serial"} <= entries.keys()
    assert entries["process"].source == entries["serial"].source == "built-in"


def test_a_plugin_backend_with_a_store_that_is_not_shared_memory_fits(copying_backend: None) -> None:
    """The worker loop and the driver talk to the store only: with a copying store, the same training, bitwise."""
    runs = {}
    for backend in ("serial", "copying-serial"):
        model = A3C("MlpPolicy", "CartPole-v1", backend=backend, n_workers=1, **KWARGS)
        runs[backend] = model.learn(300)
    assert runs["copying-serial"].num_timesteps == runs["serial"].num_timesteps == 300
    assert runs["copying-serial"]._n_updates == runs["serial"]._n_updates == 30
    for mine, theirs in zip(
        runs["copying-serial"].policy.parameters(), runs["serial"].policy.parameters(), strict=True
    ):
        assert th.equal(mine, theirs)  # the driver pulled the copy's weights


def test_an_unknown_backend_or_option_is_one_line() -> None:
    with pytest.raises(PgplugError, match=r"^unknown backend 'mpi'; valid backends: process, ray, serial$"):
        A3C("MlpPolicy", "CartPole-v1", backend="mpi")
    with pytest.raises(
        PgplugError, match=r"unknown backend_kwargs \['workers'\] for the process backend; valid keys: "
    ):
        A3C("MlpPolicy", "CartPole-v1", backend_kwargs={"workers": 2})
    with pytest.raises(PgplugError, match=r"^unknown start_method 'thread'; valid start methods: "):
        A3C("MlpPolicy", "CartPole-v1", backend_kwargs={"start_method": "thread"})


def test_the_driver_pulling_its_own_shared_policy_copies_nothing() -> None:
    model = A3C("MlpPolicy", "CartPole-v1", backend="serial", n_workers=1, **KWARGS)
    model.policy.set_training_mode(False)
    store = SharedMemoryStore(GlobalModel(model.policy, 0, 0, False, True, True), mp.get_context("spawn"))
    state = list(model.policy.state_dict().values())
    versions = [tensor._version for tensor in state]
    assert store.pull(state) == 0
    assert [tensor._version for tensor in state] == versions
    local = store.local_policy()
    assert store.pull(list(local.state_dict().values())) == 0
    for mine, theirs in zip(local.parameters(), model.policy.parameters(), strict=True):
        assert th.equal(mine, theirs) and mine.data_ptr() != theirs.data_ptr()
