"""A3C: asynchronous advantage actor-critic (Mnih et al. 2016, https://arxiv.org/abs/1602.01783).

Parallel actor-learners, each with its own envs and a local copy of the policy, push gradients to a
parameter store that steps a shared optimizer on the global policy (Hogwild, lock-free by default).
Where the workers run and where the store lives is a registered backend's business (``process``:
local processes over shared memory; ``serial``: one worker in the driver). The driver is the SB3
face: it starts and watches the workers (a worker silent for ``worker_timeout`` ends the run, see
``liveness.py``), turns the global step counter into callback calls, logs
what the workers report, calls the plugins' lifecycle hooks for every worker update, and
saves/loads/predicts like any SB3 model.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3.common.callbacks import BaseCallback, CallbackList, ConvertCallback, ProgressBarCallback
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.type_aliases import MaybeCallback, Schedule
from stable_baselines3.common.utils import safe_mean
from stable_baselines3.common.vec_env import VecEnv

from pgplug.contracts.backend import GlobalModel, Message, ParameterStore, WorkerBackend
from pgplug.contracts.estimator import Estimator
from pgplug.contracts.objective import Objective
from pgplug.contracts.registries import call_hook, get_host
from pgplug.errors import PgplugError
from pgplug.plugins.a3c.liveness import WorkerWatch
from pgplug.plugins.a3c.worker import VecEnvFactory, WorkerSpec, rollout_of
from pgplug.plugins.search_spaces import A3C_SPACE
from pgplug.runtime.algorithm import CLASS_DEFAULT, PolicyGradientAlgorithm, constructor_parameters
from pgplug.runtime.envs import EnvSpec
from pgplug.runtime.threads import choose_num_threads
from pgplug.validation import (
    check_bool,
    check_n_workers,
    check_non_negative,
    check_positive_int,
    check_positive_number,
    optional,
    warn_more_workers_than_cores,
)

#: The metric a worker reports with each update: global updates between its weight pull and its gradient push.
POLICY_LAG = "a3c/policy_lag"


class CounterProgressBar(ProgressBarCallback):
    """SB3's progress bar, advanced by the shared step counter rather than by one vec-env step per call."""

    def _on_step(self) -> bool:
        self.pbar.update(self.num_timesteps - self.pbar.n)
        return True


class A3C(PolicyGradientAlgorithm):
    """Asynchronous advantage actor-critic: Hogwild workers, shared optimizer, n-step forward view.

    :param policy: the policy model (``MlpPolicy``, ``CnnPolicy``, ``MultiInputPolicy`` or a class)
    :param env: a gymnasium id or a picklable ``factory(n_envs, seed) -> VecEnv``; every worker builds
        its own envs with it (distinct seeds)
    :param learning_rate: learning rate, or a schedule of the remaining progress (1 → 0)
    :param n_workers: actor-learner processes
    :param n_envs_per_worker: envs stepped together by each worker (the paper used 1; more batches
        the network's forward pass, which is what makes A3C fast on few cores)
    :param t_max: steps per env per update (the paper's t_max; A2C's ``n_steps``)
    :param gamma: discount factor
    :param ent_coef: entropy coefficient (the paper: 0.01)
    :param vf_coef: value-loss coefficient
    :param max_grad_norm: gradient-norm clipping threshold, applied to each worker's gradient
    :param use_rms_prop: RMSprop with shared statistics (as in the paper) rather than Adam
    :param rms_prop_alpha: RMSprop decay (the paper: 0.99)
    :param rms_prop_eps: RMSprop epsilon (the paper: 0.1; SB3's A2C: 1e-5)
    :param shared_optimizer: share the optimizer's statistics across workers (else one set per worker)
    :param lock: serialise the optimizer steps with a lock (Hogwild is lock-free)
    :param backend: a registered worker backend (``pgplug list``): ``process`` (local worker processes over
        shared memory, the default) or ``serial`` (one worker in the driver, for debugging)
    :param backend_kwargs: the backend's options, e.g. ``{"start_method": "spawn"}`` for ``process`` (whose
        default, ``forkserver``, starts when the model is built, so workers start in a fraction of a second)
    :param callback_lag: workers pause while they are more than this many env steps ahead of the
        callbacks, which run in the main process (None: never pause). The gate is checked between
        updates, so an ``EvalCallback`` at step S sees the weights of at most S + ``callback_lag`` +
        one rollout per worker, and a slow callback holds training back as in SB3 rather than
        falling ever further behind the workers
    :param worker_timeout: seconds a worker may send nothing (no heartbeat, start-up included) before the run
        ends with a one-line :class:`~pgplug.errors.WorkerTimeoutError` naming it and what it was doing, and
        every worker is stopped; 20 × the slowest update seen so far if that is longer. None: wait forever.
        A backend whose worker runs in the driver (``serial``) has no silence to watch
    :param estimator: ``nstep`` (default, n=None: the forward view), ``td``, ``gae`` or any estimator
        that does not need complete episodes
    :param estimator_kwargs: the estimator's arguments
    :param objective: the objective the update minimises (default ``policy_gradient``)
    :param objective_kwargs: the objective's arguments besides this algorithm's own settings
    :param fast_paths: pgplug's speed paths (True), SB3's own code (False), or ``PGPLUG_FAST_PATHS`` (None)
    :param allow_negative_ent_coef: accept a negative ``ent_coef`` (which punishes exploration; refused otherwise)
    :param precision: ``fp32``, or ``bf16`` for the policy's body under bfloat16 autocast (a speed path for CPUs
        with bf16 matrix units; see :class:`~pgplug.runtime.algorithm.PolicyGradientAlgorithm`)
    """

    name = "a3c"
    search_space = A3C_SPACE
    setting_rules = {
        **PolicyGradientAlgorithm.setting_rules,
        "n_workers": check_n_workers,
        "n_envs_per_worker": check_positive_int,
        "t_max": check_positive_int,
        "use_rms_prop": check_bool,
        "rms_prop_alpha": check_non_negative,
        "rms_prop_eps": check_non_negative,
        "shared_optimizer": check_bool,
        "lock": check_bool,
        "callback_lag": optional(check_positive_int),
        "worker_timeout": optional(check_positive_number),
    }
    default_estimator = "nstep"
    accepts_episode_estimators = False
    default_log_interval = 100

    def __init__(
        self,
        policy: str | type[ActorCriticPolicy],
        env: str | VecEnvFactory | None,
        learning_rate: float | Schedule = 7e-4,
        n_workers: int = 2,
        n_envs_per_worker: int = 1,
        t_max: int = 5,
        gamma: float = 0.99,
        ent_coef: float = 0.01,
        vf_coef: float = 0.5,
        max_grad_norm: float | None = 0.5,
        use_rms_prop: bool = True,
        rms_prop_alpha: float = 0.99,
        rms_prop_eps: float = 1e-5,
        shared_optimizer: bool = True,
        lock: bool = False,
        backend: str = "process",
        backend_kwargs: dict[str, Any] | None = None,
        callback_lag: int | None = 1_000,
        worker_timeout: float | None = 60.0,
        normalize_advantage: bool = False,
        estimator: str | Estimator = "nstep",
        estimator_kwargs: dict[str, Any] | None = None,
        objective: str | Objective | None = None,
        objective_kwargs: dict[str, Any] | None = None,
        fast_paths: bool | None = None,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        allow_negative_ent_coef: bool = False,
        precision: str = "fp32",
        _init_setup_model: bool = True,
    ) -> None:
        checked = self.check_settings(locals())  # before anything starts (the forkserver, the main process's env)
        self.env_factory = self._as_factory(env)
        self.n_workers = checked["n_workers"]
        self.n_envs_per_worker = checked["n_envs_per_worker"]
        self.t_max = checked["t_max"]
        self.backend, self.backend_kwargs = backend, dict(backend_kwargs or {})
        backend_class = self._backend_class()
        if backend_class.max_workers is not None and self.n_workers > backend_class.max_workers:
            raise PgplugError(
                f"the {backend} backend runs at most {backend_class.max_workers} worker(s); got n_workers={n_workers}"
            )
        self.callback_lag = checked["callback_lag"]
        self.worker_timeout = checked["worker_timeout"]
        if _init_setup_model:  # building to train (load() passes False): e.g. the forkserver imports meanwhile
            backend_class.prepare(**self.backend_kwargs)
            if backend_class.runs_workers_here(**self.backend_kwargs):
                warn_more_workers_than_cores("n_workers", self.n_workers)
        self.shared_optimizer, self.lock = checked["shared_optimizer"], checked["lock"]
        # The main process keeps one env of the kind the workers build: for spaces, evaluation and callbacks.
        main_env = self.env_factory(1, checked["seed"]) if self.env_factory is not None else None
        super().__init__(
            policy,
            main_env,
            learning_rate,
            gamma=gamma,
            ent_coef=ent_coef,
            vf_coef=vf_coef,
            max_grad_norm=max_grad_norm,
            normalize_advantage=normalize_advantage,
            estimator=estimator,
            estimator_kwargs=estimator_kwargs,
            objective=objective,
            objective_kwargs=objective_kwargs,
            fast_paths=fast_paths,
            allow_negative_ent_coef=allow_negative_ent_coef,
            precision=precision,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            seed=checked["seed"],
            device=device,
        )
        if checked["use_rms_prop"]:
            self.prefer_rms_prop(alpha=checked["rms_prop_alpha"], eps=checked["rms_prop_eps"])
        self._live: dict[str, Any] = {}
        self._activity_seconds: dict[str, float] = {}
        if _init_setup_model:
            self._setup_model()

    def _json_attributes(self) -> dict[str, Any]:
        attributes = super()._json_attributes()
        if isinstance(self.env_factory, EnvSpec):
            attributes["env_factory"] = self.env_factory.to_json()
        return attributes

    def _setup_model(self) -> None:
        if isinstance(self.env_factory, dict):  # an EnvSpec written as JSON by save()
            self.env_factory = EnvSpec.from_json(self.env_factory)
        super()._setup_model()

    @staticmethod
    def _as_factory(env: Any) -> VecEnvFactory | None:
        if env is None:
            return None
        if isinstance(env, str):
            return EnvSpec.for_env_id(env)
        if callable(env) and not isinstance(env, (gym.Env, VecEnv)):
            if getattr(env, "normalize", None):
                raise PgplugError(
                    "A3C does not support normalize (VecNormalize): each worker would keep statistics of its own"
                )
            return env
        raise PgplugError(
            f"A3C needs an env id or a picklable factory(n_envs, seed) -> VecEnv (each worker builds its own envs), "
            f"got {type(env).__name__}"
        )

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "_live"]

    @classmethod
    def load(cls, path: Any, env: Any = None, device: th.device | str = "auto", **kwargs: Any) -> A3C:  # type: ignore[override]
        """SB3's ``load``; ``env`` may also be an env id or a worker env factory, which then replaces the saved one."""
        factory = None if env is None or isinstance(env, (gym.Env, VecEnv)) else cls._as_factory(env)
        # Never hand SB3's load an env: it would pass it to __init__, which takes only ids and factories.
        model = super().load(path, env=None, device=device, **kwargs)
        if factory is not None:
            model.env_factory = factory
            model.set_env(factory(1, model.seed))
        elif env is not None:  # an env instance serves predict/evaluation; workers keep the saved factory
            vec_env = cls._wrap_env(env, model.verbose)
            model.n_envs = vec_env.num_envs  # as SB3's load does, so set_env accepts any number of envs
            model.set_env(vec_env)
        return model

    def _init_callback(self, callback: MaybeCallback, progress_bar: bool = False) -> BaseCallback:
        if isinstance(callback, list):
            callback = CallbackList(callback)
        if not isinstance(callback, BaseCallback):
            callback = ConvertCallback(callback)
        if progress_bar:
            callback = CallbackList([callback, CounterProgressBar()])
        callback.init_callback(self)
        return callback

    def worker_threads(self) -> int:
        """Torch threads in each worker: one for an MLP policy; a CNN policy's workers share this machine's idle
        cores (workers × threads fits them), and a worker elsewhere (a Ray cluster) has its one reserved CPU."""
        if not self._backend_class().runs_workers_here(**self.backend_kwargs):
            return 1
        return choose_num_threads(0, self.policy, learners=self.n_workers)[0]

    def _backend_class(self) -> type[WorkerBackend]:
        """The registered backend class, its options checked: one line naming what is valid."""
        backend_class = get_host().backends.get(self.backend)
        valid = constructor_parameters(backend_class)
        unknown = sorted(self.backend_kwargs.keys() - valid)
        if unknown:
            raise PgplugError(
                f"unknown backend_kwargs {unknown} for the {self.backend} backend; valid keys: "
                f"{', '.join(sorted(valid)) or '(none)'}"
            )
        return backend_class

    def live_metrics(self) -> dict[str, Any]:
        """Per-worker steps/s and policy lag, for the CLI's live display."""
        return dict(self._live)

    def worker_time_shares(self) -> dict[str, float]:
        """The workers' time since the last ``learn()`` began, by activity (``stepping``, ``computing``,
        ``pushing``, ``pulling``, ``waiting``, ...), as shares that sum to 1: where A3C's time goes, e.g. how much
        of it workers spend waiting for the driver's callbacks or on the shared optimizer."""
        return time_shares(self._activity_seconds)

    def learn(
        self,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int | None = CLASS_DEFAULT,
        tb_log_name: str | None = None,
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> A3C:
        """Run the workers until the shared counter reaches ``total_timesteps`` or a callback returns False."""
        if self.env_factory is None:
            raise PgplugError("this A3C model has no env factory: pass env= to A3C.load() or construct it with one")
        if self.env is None:
            self.set_env(self.env_factory(1, self.seed))
        log_interval = self.log_interval(log_interval)
        total_timesteps, callback = self._setup_learn(
            total_timesteps, callback, reset_num_timesteps, tb_log_name or "A3C", progress_bar
        )
        self.policy.set_training_mode(False)
        backend = self._backend_class()(**self.backend_kwargs)
        spec = WorkerSpec(
            env_factory=self.env_factory,
            n_envs=self.n_envs_per_worker,
            seed=self.seed,
            t_max=self.t_max,
            total_timesteps=total_timesteps,
            estimator=self.estimator,
            objective=self.objective_for_update(),
            gamma=self.gamma,
            max_grad_norm=self.max_grad_norm,
            lr_schedule=self.lr_schedule,
            fast_paths=self.runner.fast,
            precision=self.precision,
            # Copies of the workers' rollouts travel to the driver only when a plugin observes them.
            send_rollouts=get_host().implements("pgplug_after_rollout"),
            # Workers that run between the callbacks wait for nothing.
            callback_lag=None if backend.runs_in_driver else self.callback_lag,
            threads=self.worker_threads(),
        )
        model = GlobalModel(
            policy=self.policy,
            steps=self.num_timesteps,
            updates=self._n_updates,
            lock=self.lock,
            shared_optimizer=self.shared_optimizer,
            fast_paths=self.runner.fast,
        )
        callback.on_training_start(locals(), globals())
        self._live = {}
        stats = _UpdateStats()
        self._activity_seconds = stats.activity_totals
        # Workers in the driver cannot be silent while it looks: nothing to watch.
        watch = WorkerWatch(None if backend.runs_in_driver else self.worker_timeout)
        keep_calling = True  # False once a callback asked to stop: it is not called again
        store: ParameterStore | None = None
        final_steps = self.num_timesteps
        try:
            store = backend.start(spec, self.n_workers, model)
            callback.update_locals({"store": store})  # the global counters, for callbacks that want them
            driver_state = list(self.policy.state_dict().values())
            callback.on_rollout_start()
            while keep_calling and not backend.finished():
                messages = backend.poll(timeout=0.01)
                watch.saw_reports(messages)
                self._absorb(messages, stats, callback)
                self._live.update(backend.telemetry())
                store.pull(driver_state)  # the global weights, for the callbacks (the very tensors in shared memory)
                keep_calling = self._advance_callbacks(store.steps, callback)
                store.publish_progress(self.num_timesteps)
                backend.check()  # a dead worker is named as dead, before the watch would call it silent
                watch.check(store.heartbeats())
                if log_interval and stats.updates_since_dump >= log_interval:
                    self._dump(stats, store.n_updates)
        except BaseException:
            keep_calling = False
            raise
        finally:  # the workers' last reports still count; callbacks that asked to stop are not called again
            try:
                self._absorb(backend.stop(), stats, callback if keep_calling else None)
            finally:  # also when a second Ctrl-C, held back while the workers were stopped, is raised
                if store is not None:
                    store.pull(list(self.policy.state_dict().values()))
                    final_steps, self._n_updates = int(store.steps), int(store.n_updates)
                if not keep_calling:  # stopped early: what the workers did still counts (and is saved)
                    self.num_timesteps = final_steps
        if keep_calling:  # the on_step calls for the steps the workers took after the last poll
            self._advance_callbacks(final_steps, callback)
        self.num_timesteps = final_steps
        if log_interval and stats.updates_since_dump:
            self._dump(stats, self._n_updates)
        callback.on_training_end()
        return self

    def _advance_callbacks(self, counter: int, callback: BaseCallback) -> bool:
        """Call ``on_step`` once per vec-env step of a worker (``n_envs_per_worker`` steps), as SB3 does."""
        step = self.n_envs_per_worker
        while self.num_timesteps + step <= counter:
            self.num_timesteps += step
            callback.update_locals({"num_timesteps": self.num_timesteps})
            if not callback.on_step():
                return False
        return True

    def _absorb(self, messages: list[Message], stats: _UpdateStats, callback: BaseCallback | None) -> None:
        """Take in the workers' reports: episode statistics, update metrics, the plugins' hooks, the callbacks'
        rollout events.

        ``pgplug_after_rollout`` (with the rollout a worker sent) and ``pgplug_after_update`` run here, in the
        driver, once per worker update, in the order the reports arrive.
        """
        for kind, rank, payload in messages:
            if kind != "report":
                continue
            self.ep_info_buffer.extend(payload["episodes"])  # type: ignore[union-attr]
            stats.add(rank, payload)
            rollouts = payload["rollouts"] or [None] * len(payload["updates"])
            for update, rollout in zip(payload["updates"], rollouts, strict=True):
                if rollout is not None:
                    call_hook("pgplug_after_rollout", algorithm=self, rollout=rollout_of(rollout))
                call_hook("pgplug_after_update", algorithm=self, metrics={**update, "a3c/worker": rank})
            if payload["updates"] and callback is not None:
                callback.update_locals({"worker": rank, "report": payload})
                callback.on_rollout_end()
                callback.on_rollout_start()
        self._live = stats.live()

    def _dump(self, stats: _UpdateStats, n_updates: int) -> None:
        for key, value in stats.means().items():
            self.logger.record(key, value)
        for key, value in self._live.items():
            if isinstance(value, (int, float)):
                self.logger.record(f"a3c/{key.replace(' ', '_')}", value)
        self.logger.record("train/n_updates", n_updates, exclude="tensorboard")
        self.dump_logs()
        stats.reset_window()


class _UpdateStats:
    """Aggregates worker reports between two log dumps, and keeps the latest per-worker rates."""

    def __init__(self) -> None:
        self.window: dict[str, list[float]] = defaultdict(list)
        self.updates_since_dump = 0
        self.worker_rates: dict[int, float] = {}
        self.last_lag = 0.0
        self.activity_window: dict[str, float] = defaultdict(float)  # workers' seconds per activity, this window
        self.activity_totals: dict[str, float] = defaultdict(float)  # and since learn() began

    def add(self, rank: int, payload: dict[str, Any]) -> None:
        if payload["steps_per_s"] is not None:
            self.worker_rates[rank] = payload["steps_per_s"]
        for activity, seconds in payload.get("activity_seconds", {}).items():
            self.activity_window[activity] += seconds
            self.activity_totals[activity] += seconds
        for update in payload["updates"]:
            self.updates_since_dump += 1
            for key, value in update.items():
                self.window[key].append(value)
            self.last_lag = update[POLICY_LAG]

    def means(self) -> dict[str, float]:
        """The window's mean of each metric, under its logged name (the lag's mean as ``a3c/policy_lag_mean``)."""
        names = {POLICY_LAG: "a3c/policy_lag_mean"}
        means = {names.get(key, key): float(safe_mean(np.array(v))) for key, v in self.window.items() if v}
        means.update({f"a3c/time_{name}": share for name, share in time_shares(self.activity_window).items()})
        return means

    def live(self) -> dict[str, Any]:
        live: dict[str, Any] = {f"worker {r} steps/s": round(v) for r, v in sorted(self.worker_rates.items())}
        lags = self.window.get(POLICY_LAG)
        live["policy lag"] = round(float(np.mean(lags[-50:])), 2) if lags else self.last_lag
        return live

    def reset_window(self) -> None:
        self.window.clear()
        self.activity_window.clear()
        self.updates_since_dump = 0


def time_shares(seconds: dict[str, float]) -> dict[str, float]:
    """Each activity's share of the workers' time (the values sum to 1), from seconds per activity."""
    total = sum(seconds.values())
    return {name: value / total for name, value in sorted(seconds.items())} if total > 0 else {}


__all__ = ["A3C", "CounterProgressBar"]
