"""The parameter store of one machine: the global policy and its optimizer state in shared memory (Hogwild).

Every worker process maps the same tensors: a push steps the shared optimizer on the global
parameters in place, lock-free unless ``lock``; the counters, flags and heartbeats are multiprocessing
values. The store travels to worker processes as an argument of theirs (torch shares the tensors, not copies).
"""

from __future__ import annotations

import copy
import multiprocessing
import time
from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

import torch as th
from stable_baselines3.common.policies import ActorCriticPolicy

from pgplug.contracts.backend import Activity, GlobalModel, Heartbeat, ParameterStore
from pgplug.plugins.a3c.shared_optimizers import share_optimizer_state
from pgplug.runtime.policy_runner import PolicyRunner
from pgplug.runtime.runners import runner_for

#: A heartbeat's activity travels as its index in this tuple.
ACTIVITIES = tuple(Activity)


class SharedMemoryStore(ParameterStore):
    """A :class:`~pgplug.contracts.backend.ParameterStore` over shared memory, for workers on one machine.

    :param model: the global policy (moved to shared memory, optimizer state too) and the store's settings
    :param ctx: the multiprocessing context whose values and locks the workers will share
    :param n_workers: the workers that will beat (ranks 0 to ``n_workers - 1``)
    """

    def __init__(self, model: GlobalModel, ctx: Any, n_workers: int = 1) -> None:
        policy = model.policy
        policy.share_memory()
        if model.shared_optimizer:  # otherwise each worker keeps statistics of its own
            share_optimizer_state(policy.optimizer)
        self.policy: ActorCriticPolicy = policy
        self.lock, self.shared_optimizer, self.fast_paths = model.lock, model.shared_optimizer, model.fast_paths
        self._steps, self._updates = ctx.Value("q", model.steps), ctx.Value("q", model.updates)
        self._progress = ctx.Value("q", model.steps)  # the env steps the driver's callbacks have seen
        # A plain shared byte, not an Event: Event.is_set() takes a lock, which a worker stopped (SIGSTOP) inside
        # it would hold forever, and the driver's request_stop() would wait for it.
        self._stop, self._lock = ctx.RawValue("b", 0), ctx.Lock()
        # Each worker's latest beat: when (the machine's monotonic clock), what it was doing, after how many updates.
        self._beat_times = ctx.RawArray("d", [time.monotonic()] * n_workers)
        self._beat_activities = ctx.RawArray("b", n_workers)  # 0: starting
        self._beat_updates = ctx.RawArray("q", n_workers)
        self._process: dict[str, Any] = {}  # this process's own objects (runner, optimizers), never pickled

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_process": {}}

    def _cached(self, key: str, make: Any) -> Any:
        if key not in self._process:
            self._process[key] = make()
        return self._process[key]

    # -- weights -------------------------------------------------------------------------------

    def local_policy(self) -> ActorCriticPolicy:
        """A deep copy (exact for any policy class, no random draws), without the optimizer: the workers' local
        copies only compute gradients, the store steps the shared optimizer."""
        optimizer = getattr(self.policy, "optimizer", None)
        return copy.deepcopy(self.policy, {id(optimizer): None} if optimizer is not None else {})

    def _state(self) -> list[th.Tensor]:
        # state_dict() tensors alias the parameters and buffers, which are only ever updated in place.
        return self._cached("state", lambda: list(self.policy.state_dict().values()))

    def pull(self, into: Sequence[th.Tensor]) -> int:
        synced_at = self.n_updates
        state = self._state()
        if into and into[0].data_ptr() == state[0].data_ptr():  # the driver's own policy is the global one
            return synced_at
        with th.no_grad():
            for global_tensor, local_tensor in zip(state, into, strict=True):
                local_tensor.copy_(global_tensor)
        return synced_at

    def push(self, grads: Sequence[th.Tensor | None], learning_rate: float, rank: int) -> int:
        optimizer = self._optimizer(rank)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate
        order = self._cached(f"order-{id(optimizer)}", lambda: self._gradient_order(optimizer))
        with self._lock if self.lock else nullcontext():
            self._runner().optimizer_step(optimizer, [grads[i] for i in order])
        with self._updates.get_lock():
            self._updates.value += 1
            return self._updates.value

    def _optimizer(self, rank: int) -> th.optim.Optimizer:
        if self.shared_optimizer:
            return self.policy.optimizer
        # The paper's alternative: each worker's own statistics over the shared parameters.
        policy = self.policy
        return self._cached(
            f"optimizer-{rank}",
            lambda: policy.optimizer_class(
                policy.parameters(), lr=policy.optimizer.param_groups[0]["lr"], **policy.optimizer_kwargs
            ),
        )

    def _gradient_order(self, optimizer: th.optim.Optimizer) -> list[int]:
        """For each parameter of the optimizer (``param_groups`` order), its index in ``policy.parameters()``."""
        index = {id(param): i for i, param in enumerate(self.policy.parameters())}
        return [index[id(param)] for group in optimizer.param_groups for param in group["params"]]

    def _runner(self) -> PolicyRunner:
        return self._cached("runner", lambda: runner_for(self.policy, fast=self.fast_paths))

    # -- counters, flags and heartbeats -----------------------------------------------------------
    # Reads skip the values' locks: an aligned int64 read is atomic, and a worker killed or stopped while holding a
    # lock must not hang the readers (the driver then notices the dead or silent worker and stops all). The driver
    # takes no lock of the store at all.

    def add_steps(self, n: int) -> int:
        with self._steps.get_lock():
            self._steps.value += n
            return self._steps.value

    @property
    def steps(self) -> int:
        return self._steps.get_obj().value

    @property
    def n_updates(self) -> int:
        return self._updates.get_obj().value

    def request_stop(self) -> None:
        self._stop.value = 1

    def stop_requested(self) -> bool:
        return bool(self._stop.value)

    def beat(self, rank: int, activity: Activity, updates: int) -> None:
        # One writer per slot (the worker); a reader may pair one beat's time with the next one's activity.
        self._beat_activities[rank] = ACTIVITIES.index(activity)
        self._beat_updates[rank] = updates
        self._beat_times[rank] = time.monotonic()

    def heartbeats(self) -> dict[int, Heartbeat]:
        now = time.monotonic()
        return {
            rank: Heartbeat(ACTIVITIES[self._beat_activities[rank]], self._beat_updates[rank], max(now - at, 0.0))
            for rank, at in enumerate(self._beat_times)
        }

    def publish_progress(self, steps: int) -> None:
        self._progress.get_obj().value = steps  # one writer (the driver): no lock needed

    @property
    def progress(self) -> int:
        return self._progress.get_obj().value

    def wait_for_driver(self, max_ahead: int, timeout: float) -> bool:
        """A slow callback (an evaluation, a checkpoint) then holds training back as it does in SB3, instead of
        running on weights far ahead of its step. A worker whose driver process has died stops waiting, and
        stops: the stop flag could no longer be set."""
        if self.steps - self.progress <= max_ahead:
            return True
        parent = multiprocessing.parent_process()
        deadline = time.monotonic() + timeout
        while self.steps - self.progress > max_ahead and not self.stop_requested():
            if parent is not None and not parent.is_alive():
                self.request_stop()
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.002)
        return True
