"""The A3C actor-learner loop. It talks to a parameter store only, and knows nothing of how it is run or where.

Each update (Mnih et al. 2016, Algorithm S3): pull the global weights into the local policy → roll out
``t_max`` steps in the worker's own envs → estimate Ψ (forward view) → backward locally → clip → push
the gradients, which the store applies with the shared optimizer (Hogwild, lock-free unless ``lock``)
→ count the steps in the store. The same loop runs in a local process, in the driver (the serial
backend) or in an actor on another machine. Along the way the worker beats (``store.beat``): at each
change of activity and every ``BEAT_INTERVAL`` seconds within one, so that the driver can tell a
worker that is slow from one that is stuck.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.type_aliases import Schedule
from stable_baselines3.common.vec_env import VecEnv

from pgplug.contracts.backend import BEAT_INTERVAL, Activity, Message, ParameterStore, WorkerFailed
from pgplug.contracts.estimator import Estimator
from pgplug.contracts.objective import Objective
from pgplug.contracts.rollout import Rollout, map_observation
from pgplug.errors import PgplugError, WorkerError, one_line
from pgplug.runtime.algorithm import loss_metrics
from pgplug.runtime.collector import RolloutCollector
from pgplug.runtime.gradient import compute_gradients
from pgplug.runtime.runners import runner_for

#: A picklable callable building a worker's vec env: ``factory(n_envs, seed) -> VecEnv``.
VecEnvFactory = Callable[[int, int], VecEnv]
#: The rollout fields a worker sends the driver for ``pgplug_after_rollout`` (recurrent states stay behind).
SENT_FIELDS = tuple(f.name for f in fields(Rollout) if f.name != "recurrent_states")


@dataclass
class WorkerSpec:
    """What every A3C worker runs (a :class:`~pgplug.contracts.backend.WorkerJob`); sent to workers with cloudpickle.

    :param send_rollouts: send a copy of each rollout with the report, for the driver's ``pgplug_after_rollout``
    :param callback_lag: workers pause while they are more than this many steps ahead of the driver's
        callbacks (None: never), so an evaluation at step S sees the weights of about step S
    :param threads: torch threads in each worker process (``A3C.worker_threads``)
    :param precision: the workers' forward passes' precision (``A3C.precision``)
    """

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
    fast_paths: bool = True
    precision: str = "fp32"
    send_rollouts: bool = False
    report_interval: float = 0.25  # seconds between reports
    callback_lag: int | None = None
    threads: int = 1

    def worker_seed(self, rank: int) -> int | None:
        """Distinct env seeds per worker: worker r's env i gets ``seed + r·n_envs + i``."""
        return None if self.seed is None else self.seed + rank * self.n_envs

    def enter_process(self, rank: int) -> None:
        """Prepare a fresh process (or actor) for worker ``rank``: its torch threads, its own random streams.

        Workers forked from one forkserver would otherwise all draw the same streams.
        """
        th.set_num_threads(self.threads)
        if self.seed is not None:
            th.manual_seed(self.seed + rank)
        else:
            th.seed()
            np.random.seed()

    def build(self, rank: int, store: ParameterStore, send: Callable[[Message], None]) -> Worker:
        return Worker(rank, self, store, send)


def error_message(rank: int, exc: BaseException) -> Message:
    """What a worker that stopped on ``exc`` sends the driver: its traceback, and a user-facing error (a diverged
    loss, a bad value) also as its one line. Call it in the ``except`` block (it reads the traceback there)."""
    user_error = one_line(exc) if isinstance(exc, PgplugError) else None
    return ("error", rank, {"traceback": traceback.format_exc(), "user_error": user_error})


def error_of(rank: int, payload: dict[str, Any]) -> Exception:
    """The driver's exception for a worker's :func:`error_message`: one line for a user-facing error, else the
    worker's traceback."""
    if payload["user_error"]:
        return WorkerError(f"A3C worker {rank}: {payload['user_error']}")
    return WorkerFailed(f"A3C worker {rank} raised an exception:\n{payload['traceback']}")


def rollout_copy(rollout: Rollout) -> dict[str, Any]:
    """The rollout's fields as numpy copies: what travels to the driver (a rollout views buffers that change)."""
    return {
        name: map_observation(value, lambda x: x.detach().cpu().numpy().copy())
        for name in SENT_FIELDS
        if (value := getattr(rollout, name)) is not None
    }


def rollout_of(copy: dict[str, Any]) -> Rollout:
    """The :class:`Rollout` a worker sent with :func:`rollout_copy`."""
    return Rollout(**{name: map_observation(value, th.from_numpy) for name, value in copy.items()})


class Worker:
    """One actor-learner: its own envs and local policy, updating the global policy through ``store``."""

    def __init__(self, rank: int, spec: WorkerSpec, store: ParameterStore, send: Callable[[Message], None]) -> None:
        self.rank, self.spec, self.store, self.send = rank, spec, store, send
        self.n_updates = 0  # updates this worker has pushed
        self._activity: Activity | None = None
        self._beaten_at = 0.0
        #: Seconds spent in each activity since the last report (what the driver's time shares are made of).
        self._activity_seconds: dict[str, float] = {}
        self._activity_since = time.monotonic()
        self._beat(Activity.BUILDING_ENVS)
        self.env = spec.env_factory(spec.n_envs, spec.worker_seed(rank))
        self.local_policy = store.local_policy()
        # One gradient per rollout, on the local weights that collected it: the rollout's graph may serve it.
        self.runner = runner_for(self.local_policy, fast=spec.fast_paths, keep_graph=True, precision=spec.precision)
        self.collector = RolloutCollector(
            self.runner, self.env, spec.gamma, bootstrap_truncation=spec.estimator.needs_critic
        )
        self.collector.last_obs = self.env.reset()
        self._params = list(self.local_policy.parameters())
        # state_dict() tensors alias the parameters and buffers, which are only ever updated in place.
        self._state = list(self.local_policy.state_dict().values())
        self._episodes: list[dict[str, float]] = []
        self._updates: list[dict[str, float]] = []
        self._rollouts: list[dict[str, Any]] = []
        self._steps_since_report = 0
        self._slowest_update: float | None = None  # seconds, pull to push, since the last report
        self._last_report = time.perf_counter()

    def _beat(self, activity: Activity) -> None:
        """Tell the store this worker is alive: at each change of activity, else every ``BEAT_INTERVAL`` seconds."""
        now = time.monotonic()
        if activity is not self._activity:
            self._account(now)
        elif now - self._beaten_at < BEAT_INTERVAL:
            return
        self._activity, self._beaten_at = activity, now
        self.store.beat(self.rank, activity, self.n_updates)

    def _account(self, now: float) -> None:
        """Add the time since the last change of activity to the current activity's seconds."""
        if self._activity is not None:
            name = self._activity.name.lower()
            self._activity_seconds[name] = self._activity_seconds.get(name, 0.0) + now - self._activity_since
        self._activity_since = now

    def _on_step(self, step: dict[str, Any]) -> bool:
        self._beat(Activity.STEPPING)
        self.store.add_steps(self.spec.n_envs)
        self._steps_since_report += self.spec.n_envs
        return not self.store.stop_requested()

    def _on_episodes_end(self, infos: list[dict[str, Any]], dones: np.ndarray) -> None:
        for info in infos:
            episode = info.get("episode")
            if episode is not None:
                self._episodes.append({"r": float(episode["r"]), "l": int(episode["l"]), "t": float(episode["t"])})

    def step(self) -> bool:
        """One update, unless the budget is spent or a stop was asked (then False)."""
        spec, store = self.spec, self.store
        if spec.callback_lag is not None:
            while not store.wait_for_driver(spec.callback_lag, timeout=BEAT_INTERVAL):
                self._beat(Activity.WAITING)
        if store.stop_requested() or store.steps >= spec.total_timesteps:
            return False
        return self._update()

    def _update(self) -> bool:
        """Pull → rollout → gradient → push. False if stopped before the update was applied."""
        spec, store = self.spec, self.store
        started = time.perf_counter()
        self._beat(Activity.PULLING)
        synced_at = store.pull(self._state)
        self._beat(Activity.STEPPING)
        rollout = self.collector.collect(spec.t_max, on_step=self._on_step, on_episodes_end=self._on_episodes_end)
        if rollout is None:
            return False
        self._beat(Activity.COMPUTING)
        rollout.fill_estimate(spec.estimator, spec.gamma)
        terms = compute_gradients(self.runner, spec.objective, rollout, self._params, spec.max_grad_norm)
        learning_rate = spec.lr_schedule(max(1.0 - store.steps / spec.total_timesteps, 0.0))
        self._beat(Activity.PUSHING)
        applied_at = store.push([param.grad for param in self._params], learning_rate, self.rank)
        self.n_updates += 1
        seconds = time.perf_counter() - started
        self._slowest_update = max(seconds, self._slowest_update or 0.0)
        update = {f"train/{name}": value for name, value in loss_metrics(terms, rollout).items()}
        update.update({"train/learning_rate": learning_rate, "a3c/policy_lag": float(applied_at - 1 - synced_at)})
        self._updates.append(update)
        if spec.send_rollouts:
            self._rollouts.append(rollout_copy(rollout))
        self._maybe_report()
        return True

    def _maybe_report(self, force: bool = False) -> None:
        now = time.perf_counter()
        elapsed = now - self._last_report
        if not force and elapsed < self.spec.report_interval:
            return
        self._account(time.monotonic())
        report = {
            "episodes": self._episodes,
            "updates": self._updates,
            "rollouts": self._rollouts,
            # A forced report after a short window would show a meaningless rate.
            "steps_per_s": self._steps_since_report / elapsed if elapsed > 0.1 else None,
            "slowest_update": self._slowest_update,  # seconds from pull to push; the driver's limits scale with it
            "activity_seconds": self._activity_seconds,
        }
        self.send(("report", self.rank, report))
        self._episodes, self._updates, self._rollouts, self._steps_since_report, self._last_report = [], [], [], 0, now
        self._slowest_update, self._activity_seconds = None, {}

    def finish(self) -> None:
        self._beat(Activity.FINISHING)
        self._maybe_report(force=True)

    def close(self) -> None:
        self.env.close()
