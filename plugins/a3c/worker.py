"""The A3C actor-learner loop, independent of how workers are started (processes, in-process, a cluster).

Each update (Mnih et al. 2016, Algorithm S3): copy the global weights into the local policy → roll
out ``t_max`` steps in the worker's own envs → estimate Ψ (forward view) → backward locally → clip
→ point the global parameters' gradients at the local ones → step the shared optimizer (Hogwild,
lock-free unless ``lock``) → count the steps in the shared counter.
"""

from __future__ import annotations

import copy
import multiprocessing
import os
import signal
import time
import traceback
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.type_aliases import Schedule
from stable_baselines3.common.vec_env import VecEnv

from pgplug.contracts.estimator import Estimator
from pgplug.contracts.objective import Objective
from pgplug.errors import PgplugError, one_line
from pgplug.runtime.algorithm import loss_metrics
from pgplug.runtime.collector import RolloutCollector
from pgplug.runtime.gradient import compute_gradients
from pgplug.runtime.runners import runner_for

#: A picklable callable building a worker's vec env: ``factory(n_envs, seed) -> VecEnv``.
VecEnvFactory = Callable[[int, int], VecEnv]
Message = tuple[str, int, Any]


@dataclass
class WorkerSpec:
    """Everything a worker needs besides the shared objects; sent to workers with cloudpickle."""

    env_factory: VecEnvFactory
    n_envs: int
    seed: int | None
    t_max: int
    total_timesteps: int
    estimator: Estimator
    objective: Objective
    gamma: float
    max_grad_norm: float | None
    lr_schedule: Schedule
    lock: bool
    shared_optimizer: bool = True
    fast_paths: bool = True
    report_interval: float = 0.25  # seconds between metric messages
    #: Workers pause while they are more than this many steps ahead of the main process's callbacks
    #: (None: never), so an evaluation at step S sees the weights of about step S.
    callback_lag: int | None = None

    def worker_seed(self, rank: int) -> int | None:
        """Distinct env seeds per worker: worker r's env i gets ``seed + r·n_envs + i``."""
        return None if self.seed is None else self.seed + rank * self.n_envs


@dataclass
class SharedState:
    """The objects all workers share: global step and update counters, a stop flag, an optional lock."""

    counter: Any  # multiprocessing Value('q'): env steps taken by all workers
    updates: Any  # multiprocessing Value('q'): gradient updates applied to the global policy
    stop: Any  # multiprocessing Event
    lock: Any  # multiprocessing Lock, used when WorkerSpec.lock
    callbacks_at: Any  # multiprocessing Value('q'): the step the main process's callbacks have reached

    @classmethod
    def create(cls, ctx: Any, start_steps: int = 0, start_updates: int = 0) -> SharedState:
        values = ctx.Value("q", start_steps), ctx.Value("q", start_updates)
        return cls(*values, ctx.Event(), ctx.Lock(), ctx.Value("q", start_steps))

    # Reads skip the values' locks: an aligned int64 read is atomic, and a worker killed while holding
    # a lock must not hang the readers (the main process then notices the dead worker and stops all).
    @property
    def steps(self) -> int:
        return self.counter.get_obj().value

    @property
    def n_updates(self) -> int:
        return self.updates.get_obj().value

    def publish_callbacks_at(self, steps: int) -> None:
        self.callbacks_at.get_obj().value = steps  # one writer (the main process): no lock needed

    def callbacks_behind(self) -> int:
        """How many steps the workers are ahead of the main process's callbacks."""
        return self.steps - self.callbacks_at.get_obj().value


class Worker:
    """One actor-learner: its own envs and local policy, updating the shared global policy."""

    def __init__(
        self,
        rank: int,
        spec: WorkerSpec,
        global_policy: ActorCriticPolicy,
        shared: SharedState,
        send: Callable[[Message], None],
    ) -> None:
        self.rank, self.spec, self.global_policy, self.shared, self.send = rank, spec, global_policy, shared, send
        self.env = spec.env_factory(spec.n_envs, spec.worker_seed(rank))
        self.local_policy = self._local_copy(global_policy)
        # One gradient per rollout, on the local weights that collected it: the rollout's graph may serve it.
        self.runner = runner_for(self.local_policy, fast=spec.fast_paths, keep_graph=True)
        self.global_runner = runner_for(global_policy, fast=spec.fast_paths)  # steps the shared optimizer
        self.collector = RolloutCollector(
            self.runner, self.env, spec.gamma, bootstrap_truncation=spec.estimator.needs_critic
        )
        self.collector.last_obs = self.env.reset()
        if spec.shared_optimizer:
            self.optimizer = global_policy.optimizer
        else:  # the paper's alternative: per-worker statistics over the shared parameters
            self.optimizer = global_policy.optimizer_class(
                global_policy.parameters(), lr=spec.lr_schedule(1.0), **global_policy.optimizer_kwargs
            )
        self._local_params = list(self.local_policy.parameters())
        # The optimizer's parameters (in param_groups order) paired with the local copies whose gradients they take.
        local_of = dict(zip(global_policy.parameters(), self._local_params, strict=True))
        self._grad_sources = [local_of[p] for group in self.optimizer.param_groups for p in group["params"]]
        # state_dict() tensors alias the parameters and buffers, which are only ever updated in place.
        self._sync_pairs = list(zip(global_policy.state_dict().values(), self.local_policy.state_dict().values()))
        self._episodes: list[dict[str, float]] = []
        self._metrics: list[dict[str, float]] = []
        self._steps_since_report = 0
        self._last_report = time.perf_counter()

    @staticmethod
    def _local_copy(global_policy: ActorCriticPolicy) -> ActorCriticPolicy:
        """A private copy of the global policy (deep-copied: exact for any policy class, no random draws),
        without the optimizer: the local copy only computes gradients, the shared optimizer steps."""
        memo = {id(global_policy.optimizer): None} if getattr(global_policy, "optimizer", None) is not None else {}
        return copy.deepcopy(global_policy, memo)

    def _sync(self) -> None:
        with th.no_grad():
            for global_tensor, local_tensor in self._sync_pairs:
                local_tensor.copy_(global_tensor)

    def _on_step(self, step: dict[str, Any]) -> bool:
        n = self.spec.n_envs
        with self.shared.counter.get_lock():
            self.shared.counter.value += n
        self._steps_since_report += n
        return not self.shared.stop.is_set()

    def _on_episodes_end(self, infos: list[dict[str, Any]], dones: np.ndarray) -> None:
        for info in infos:
            episode = info.get("episode")
            if episode is not None:
                self._episodes.append({"r": float(episode["r"]), "l": int(episode["l"]), "t": float(episode["t"])})

    def keep_going(self) -> bool:
        self._wait_for_callbacks()
        return not self.shared.stop.is_set() and self.shared.steps < self.spec.total_timesteps

    def _wait_for_callbacks(self) -> None:
        """Pause while the main process's callbacks are more than ``callback_lag`` steps behind.

        A slow callback (an evaluation, a checkpoint) then holds training back as it does in SB3,
        instead of running on weights far ahead of its step. A worker whose main process has died
        stops waiting (and then stops, as the stop flag can no longer be set).
        """
        lag, shared = self.spec.callback_lag, self.shared
        if lag is None or shared.callbacks_behind() <= lag:
            return
        parent = multiprocessing.parent_process()
        while shared.callbacks_behind() > lag and not shared.stop.is_set():
            if parent is not None and not parent.is_alive():
                shared.stop.set()
                return
            time.sleep(0.002)

    def run_update(self) -> bool:
        """One sync → rollout → gradient → shared step. False if stopped before the update was applied."""
        spec = self.spec
        synced_at = self.shared.n_updates
        self._sync()
        rollout = self.collector.collect(spec.t_max, on_step=self._on_step, on_episodes_end=self._on_episodes_end)
        if rollout is None:
            return False
        rollout.fill_estimate(spec.estimator, spec.gamma)
        terms = compute_gradients(self.runner, spec.objective, rollout, self._local_params, spec.max_grad_norm)
        optimizer = self.optimizer
        progress_remaining = 1.0 - self.shared.steps / spec.total_timesteps
        for group in optimizer.param_groups:
            group["lr"] = spec.lr_schedule(max(progress_remaining, 0.0))
        with self.shared.lock if spec.lock else nullcontext():
            self.global_runner.optimizer_step(optimizer, [param.grad for param in self._grad_sources])
        with self.shared.updates.get_lock():
            self.shared.updates.value += 1
            applied_at = self.shared.updates.value
        self._metrics.append(
            {
                **loss_metrics(terms, rollout),
                "policy_lag": float(applied_at - 1 - synced_at),
                "learning_rate": optimizer.param_groups[0]["lr"],
            }
        )
        self._maybe_report()
        return True

    def _maybe_report(self, force: bool = False) -> None:
        now = time.perf_counter()
        elapsed = now - self._last_report
        if not force and elapsed < self.spec.report_interval:
            return
        self.send(
            (
                "report",
                self.rank,
                {
                    "episodes": self._episodes,
                    "updates": self._metrics,
                    # A forced report after a short window would show a meaningless rate.
                    "steps_per_s": self._steps_since_report / elapsed if elapsed > 0.1 else None,
                },
            )
        )
        self._episodes, self._metrics, self._steps_since_report, self._last_report = [], [], 0, now

    def run(self) -> None:
        """Update until the shared counter reaches the budget or the stop flag is set."""
        while self.keep_going() and self.run_update():
            pass
        self._maybe_report(force=True)

    def close(self) -> None:
        self.env.close()


def worker_process_main(
    rank: int,
    spec_bytes: bytes,
    global_policy: ActorCriticPolicy,
    shared: SharedState,
    queue: Any,
    plugin_specs: list[str],
    environ: dict[str, str],
) -> None:
    """Entry point of a worker process: report any exception with its traceback, then exit non-zero.

    ``environ`` is the main process's environment at start: a worker forked from the forkserver
    would otherwise see the server's, as it was when the server started.
    """
    import cloudpickle

    os.environ.clear()
    os.environ.update(environ)
    th.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle: it stops us
    worker = None
    try:
        if plugin_specs:
            from pgplug.contracts.registries import get_host

            for plugin in plugin_specs:
                get_host().load_local(plugin)
        spec: WorkerSpec = cloudpickle.loads(spec_bytes)
        if spec.seed is not None:
            th.manual_seed(spec.seed + rank)
        else:  # forked from one forkserver, every worker would otherwise draw the same random streams
            th.seed()
            np.random.seed()
        worker = Worker(rank, spec, global_policy, shared, queue.put)
        worker.run()
    except BaseException as exc:
        # A user-facing error (e.g. a diverged loss) also travels as its one-line message.
        user_error = one_line(exc) if isinstance(exc, PgplugError) else None
        queue.put(("error", rank, {"traceback": traceback.format_exc(), "user_error": user_error}))
        raise SystemExit(1) from None
    finally:
        if worker is not None:
            worker.close()
