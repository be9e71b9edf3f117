"""Synchronous learners: collect a rollout, estimate, update, repeat; SB3's ``OnPolicyAlgorithm``, with pgplug's parts.

:class:`OnPolicyLearner` is both pgplug's :class:`~pgplug.runtime.algorithm.PolicyGradientAlgorithm` and
SB3's ``OnPolicyAlgorithm``: ``learn`` is SB3's own loop, and ``collect_rollouts``, ``rollout_buffer``,
``train``, ``n_steps``, ``gae_lambda``, ``rollout_buffer_class`` and ``rollout_buffer_kwargs`` mean what
they mean in SB3. What differs is inside: the rollout is collected by pgplug's lean loop through the
algorithm's policy runner, Ψ and the critic's targets come from the estimator (the buffer's
``compute_returns_and_advantage``), and ``train`` takes the shared gradient step on the objective.

A subclass says how it collects (:meth:`OnPolicyLearner.collect_rollout`); A2C and REINFORCE are two.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, TypeVar

import torch as th
from stable_baselines3.common import buffers as sb3_buffers
from stable_baselines3.common.callbacks import BaseCallback, ConvertCallback
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.type_aliases import MaybeCallback
from stable_baselines3.common.vec_env import VecEnv

from pgplug.contracts.registries import call_hook
from pgplug.contracts.rollout import Rollout
from pgplug.errors import PgplugError
from pgplug.runtime.algorithm import CLASS_DEFAULT, PolicyGradientAlgorithm, loss_metrics
from pgplug.runtime.buffers import CollectedRollout, DictRolloutBuffer, RolloutBuffer, rollout_buffer_class
from pgplug.runtime.collector import RolloutCollector
from pgplug.runtime.gradient import gradient_step

SelfLearner = TypeVar("SelfLearner", bound="OnPolicyLearner")

#: SB3's stock buffer classes and pgplug's own: the same data, which pgplug's collector writes.
_BUFFER_CLASSES: dict[type, type] = {
    sb3_buffers.RolloutBuffer: RolloutBuffer,
    sb3_buffers.DictRolloutBuffer: DictRolloutBuffer,
    RolloutBuffer: RolloutBuffer,
    DictRolloutBuffer: DictRolloutBuffer,
}


def silent(callback: BaseCallback) -> bool:
    """True for the do-nothing callback ``learn()`` makes of ``callback=None``: no one could see its calls."""
    return type(callback) is ConvertCallback and callback.callback is None


class OnPolicyLearner(PolicyGradientAlgorithm, OnPolicyAlgorithm):
    """Base of pgplug's synchronous algorithms: SB3's ``OnPolicyAlgorithm`` with pgplug's rollout, estimator
    and update.

    :param rollout_buffer_class: as in SB3: None (pgplug's buffer), or SB3's ``RolloutBuffer`` /
        ``DictRolloutBuffer`` (the same data; pgplug's collector writes it). A buffer class of one's own,
        which in SB3 is the way to change how advantages are computed, is refused: write an estimator plugin
    :param rollout_buffer_kwargs: keyword arguments of the buffer class (as in SB3)
    :param kwargs: the arguments of :class:`~pgplug.runtime.algorithm.PolicyGradientAlgorithm`
    """

    rollout_buffer: CollectedRollout  # type: ignore[assignment]
    n_steps: int

    def __init__(
        self,
        *args: Any,
        rollout_buffer_class: type[sb3_buffers.RolloutBuffer] | None = None,
        rollout_buffer_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.rollout_buffer_class = rollout_buffer_class
        self.rollout_buffer_kwargs = rollout_buffer_kwargs or {}
        #: SB3's ``gae_lambda``: the λ for which the estimator is GAE(λ) (1 for the n-step forward view), else None.
        self.gae_lambda = self.estimator.equivalent_gae_lambda
        self._collector: RolloutCollector | None = None
        self._rollout: Rollout | None = None

    @property
    def last_rollout(self) -> Rollout | None:
        """The typed rollout of the last ``collect_rollouts`` (tensors viewing ``rollout_buffer``), Ψ filled in."""
        return self._rollout

    # -- model --------------------------------------------------------------------------------

    def _setup_model(self) -> None:
        super()._setup_model()
        self.gae_lambda = self.estimator.equivalent_gae_lambda
        self.rollout_buffer = self._make_rollout_buffer()
        self._collector = None

    def _make_rollout_buffer(self) -> CollectedRollout:
        """The buffer SB3 would build (same class rules and keyword arguments, so the same errors), as pgplug's."""
        requested = self.rollout_buffer_class or rollout_buffer_class(self.observation_space)
        cls = _BUFFER_CLASSES.get(requested) if isinstance(requested, type) else None
        if cls is None:
            label = getattr(requested, "__qualname__", repr(requested))
            raise PgplugError(
                f"rollout_buffer_class {label} is not supported: pgplug computes advantages with "
                "estimators, not in the rollout buffer (write an estimator plugin: docs/writing-plugins.md); "
                "valid: None, RolloutBuffer, DictRolloutBuffer"
            )
        buffer = cls(
            self.n_steps,
            self.observation_space,
            self.action_space,
            device=self.device,
            gamma=self.gamma,
            gae_lambda=self.gae_lambda,
            n_envs=self.n_envs,
            **self.rollout_buffer_kwargs,
        )
        buffer.estimator = self.estimator
        return buffer

    def _excluded_save_params(self) -> list[str]:
        # Without a GAE equivalent there is no gae_lambda to save: SB3, continuing the model, takes its default.
        no_lambda = ["gae_lambda"] if self.gae_lambda is None else []
        return [*super()._excluded_save_params(), "_collector", "_rollout", *no_lambda]

    # -- rollouts -----------------------------------------------------------------------------

    def learn(
        self: SelfLearner,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int | None = CLASS_DEFAULT,
        tb_log_name: str | None = None,
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfLearner:
        """SB3's ``OnPolicyAlgorithm.learn``: ``collect_rollouts`` then ``train``, until ``total_timesteps``.

        ``log_interval`` defaults to the class's ``default_log_interval`` (100 for A2C, as SB3's; None: no logs)
        and ``tb_log_name`` to its name in capitals.
        """
        return OnPolicyAlgorithm.learn(
            self,
            total_timesteps,
            callback=callback,
            log_interval=self.log_interval(log_interval),
            tb_log_name=tb_log_name or self.name.upper(),
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )

    def collect_rollouts(self, env: VecEnv, callback: BaseCallback, rollout_buffer: Any, n_rollout_steps: int) -> bool:
        """SB3's ``collect_rollouts``: fill ``rollout_buffer`` with fresh on-policy data, compute Ψ and the critic's
        targets, call the callbacks (and ``pgplug_after_rollout``). False when a callback stopped the rollout.

        pgplug collects into the model's own buffer from the model's own env, as ``learn`` passes them.
        """
        if env is not self.env or rollout_buffer is not self.rollout_buffer:
            raise PgplugError(
                "collect_rollouts collects from the model's own env into its own rollout_buffer: "
                "pass model.get_env() (or model.env) and model.rollout_buffer"
            )
        rollout = self.collect_rollout(callback, n_rollout_steps)
        if rollout is None:
            return False
        rollout_buffer.estimator, rollout_buffer.gamma = self.estimator, self.gamma
        rollout_buffer.compute_returns_and_advantage(last_values=rollout.last_values, dones=rollout.last_dones)
        self._rollout = rollout
        call_hook("pgplug_after_rollout", algorithm=self, rollout=rollout)
        if not silent(callback):
            callback.update_locals({"rollout": rollout, "rollout_buffer": rollout_buffer})
            callback.on_rollout_end()
        return True

    @abstractmethod
    def collect_rollout(self, callback: BaseCallback, n_steps: int) -> Rollout | None:
        """Collect fresh on-policy data (usually with :meth:`_collect`); None when a callback asked to stop.

        :param n_steps: SB3's ``n_rollout_steps``: steps per env (a bound, for collections that end otherwise)
        """

    def _step_hook(self, callback: BaseCallback):
        """The per-step work SB3 does in ``collect_rollouts`` before the episode stats: count, callbacks."""
        n_envs = self.n_envs

        def on_step(step_locals: dict[str, Any]) -> bool:
            self.num_timesteps += n_envs
            callback.update_locals(step_locals)
            return callback.on_step()

        return on_step

    def _collect(self, callback: BaseCallback, n_steps: int | None, **kwargs: Any) -> Rollout | None:
        """Collect a rollout into ``rollout_buffer`` with the shared lean loop, keeping SB3's ``_last_obs`` bookkeeping.

        :param n_steps: steps per env, or None to collect until ``kwargs["until"]`` says so
        """
        assert self.env is not None
        runner = self.runner
        collector = self._collector
        if collector is None or collector.env is not self.env or collector.runner is not runner:
            if self.rollout_buffer.n_envs != self.n_envs:  # set_env() with another number of envs
                self.rollout_buffer = self._make_rollout_buffer()
            collector = self._collector = RolloutCollector(
                runner,
                self.env,
                self.gamma,
                bootstrap_truncation=self.estimator.needs_critic,
                sde_sample_freq=self.sde_sample_freq,
                buffer=self.rollout_buffer,
            )
        collector.gamma, collector.bootstrap_truncation = self.gamma, self.estimator.needs_critic
        collector.last_obs = self._last_obs  # type: ignore[assignment]
        collector.last_episode_starts = self._last_episode_starts  # type: ignore[assignment]
        quiet = silent(callback)
        if not quiet:
            callback.on_rollout_start()
        try:
            return collector.collect(
                n_steps,
                on_step=None if quiet else self._step_hook(callback),
                on_episodes_end=self._update_info_buffer,
                **kwargs,
            )
        finally:  # also when interrupted: the steps taken are counted and the env's state is kept
            if quiet:  # (on_step counts them otherwise)
                self.num_timesteps += collector.env_steps_taken * self.n_envs
            self._last_obs = collector.last_obs  # type: ignore[assignment]
            self._last_episode_starts = collector.last_episode_starts

    # -- update -------------------------------------------------------------------------------

    def train(self) -> None:
        """SB3's ``train``: update on the rollout in ``rollout_buffer`` (one gradient step, see :meth:`update`)."""
        assert self._rollout is not None, "collect_rollouts() first"
        self.update(self._rollout)

    def update(self, rollout: Rollout) -> dict[str, float]:
        """One gradient step on the whole rollout (SB3's A2C step) through the shared gradient step; the metrics
        it logs, which ``pgplug_after_update`` also gets."""
        policy, optimizer = self.policy, self.policy.optimizer
        self._update_learning_rate(optimizer)
        terms = gradient_step(
            self.runner, self.objective_for_update(), rollout, optimizer, self._parameters(), self.max_grad_norm
        )
        self._n_updates += 1
        metrics = {f"train/{name}": value for name, value in loss_metrics(terms, rollout).items()}
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        for key, value in metrics.items():
            self.logger.record(key, value)
        if hasattr(policy, "log_std"):
            self.logger.record("train/std", th.exp(policy.log_std).mean().item())
        call_hook("pgplug_after_update", algorithm=self, metrics=metrics)
        return metrics
