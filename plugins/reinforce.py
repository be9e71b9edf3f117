"""REINFORCE (Williams 1992): Monte-Carlo policy gradient on complete episodes.

Each update uses only fresh episodes: every one of the ``n_envs`` envs contributes its first
``ceil(n_episodes / n_envs)`` episodes of the batch, and the batch ends when each env has finished
its share. Steps an env takes after its share, and episodes still running when the batch ends, are
masked out (they would be off-policy by the next update); the envs then restart from fresh episodes.

Why a fixed share per env rather than "the first ``n_episodes`` to end, from any env": that rule
keeps a fast env's extra short episodes and drops the slow envs' long ones still running, so the
batch over-represents short episodes and the gradient is biased. With a fixed share, each env's
episodes are independent draws from the current policy whatever their length.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.type_aliases import GymEnv, Schedule

from pgplug.contracts.estimator import Estimator
from pgplug.contracts.objective import Objective
from pgplug.contracts.rollout import Rollout
from pgplug.plugin.hookspecs import hookimpl
from pgplug.plugins.search_spaces import REINFORCE_SPACE
from pgplug.runtime.episodes import complete_episode_mask
from pgplug.runtime.on_policy import OnPolicyLearner
from pgplug.validation import check_positive_int, optional


class REINFORCE(OnPolicyLearner):
    """REINFORCE: Monte-Carlo policy gradient on complete episodes, no replay.

    :param policy: the policy model (``MlpPolicy``, ``CnnPolicy``, ``MultiInputPolicy`` or a class)
    :param env: the environment (a gymnasium id, an env or an SB3 ``VecEnv``)
    :param learning_rate: learning rate (Adam, the policy's default optimizer), or a schedule
    :param n_episodes: complete episodes per update, at least (default: one per env); each env
        contributes ``ceil(n_episodes / n_envs)`` of them
    :param max_batch_steps: at most this many steps per env per update, however long episodes are
        (an env that has not finished its share by then contributes only its complete episodes)
    :param gamma: discount factor
    :param ent_coef: entropy coefficient
    :param vf_coef: value-loss coefficient (with a critic estimator such as ``baseline``)
    :param max_grad_norm: gradient-norm clipping threshold (None: no clipping, as in the original)
    :param normalize_advantage: standardise Ψ in each update (on by default: Monte-Carlo returns have
        an env-dependent scale, and centring them acts as a batch-mean baseline)
    :param estimator: ``reward_to_go`` (default), ``full_return``, ``baseline`` or any other
    :param estimator_kwargs: the estimator's arguments
    :param objective: the objective the update minimises (default ``policy_gradient``)
    :param objective_kwargs: the objective's arguments besides this algorithm's own settings
    :param fast_paths: pgplug's speed paths (True), SB3's own code (False), or ``PGPLUG_FAST_PATHS`` (None)
    :param allow_negative_ent_coef: accept a negative ``ent_coef`` (which punishes exploration; refused otherwise)
    :param precision: ``fp32``, or ``bf16`` for the policy's body under bfloat16 autocast (a speed path for CPUs
        with bf16 matrix units; see :class:`~pgplug.runtime.algorithm.PolicyGradientAlgorithm`)
    """

    name = "reinforce"
    setting_rules = {
        **OnPolicyLearner.setting_rules,
        "n_episodes": optional(check_positive_int),
        "max_batch_steps": check_positive_int,
    }
    default_estimator = "reward_to_go"
    accepts_episode_estimators = True
    search_space = REINFORCE_SPACE
    default_log_interval = 10

    def __init__(
        self,
        policy: str | type[ActorCriticPolicy],
        env: GymEnv | str | None,
        learning_rate: float | Schedule = 1e-3,
        n_episodes: int | None = None,
        max_batch_steps: int = 10_000,
        gamma: float = 0.99,
        ent_coef: float = 0.0,
        vf_coef: float = 0.5,
        max_grad_norm: float | None = None,
        normalize_advantage: bool = True,
        estimator: str | Estimator = "reward_to_go",
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
        checked = self.check_settings(locals())  # before anything is built
        super().__init__(
            policy,
            env,
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
            seed=seed,
            device=device,
        )
        self.n_episodes = checked["n_episodes"]
        self.max_batch_steps = checked["max_batch_steps"]
        if _init_setup_model:
            self._setup_model()

    @property
    def n_steps(self) -> int:
        """SB3's ``n_steps``: here the bound on steps per env per batch, ``max_batch_steps``."""
        return self.max_batch_steps

    def collect_rollout(self, callback: BaseCallback, n_steps: int) -> Rollout | None:
        assert self.env is not None
        if not np.all(self._last_episode_starts):
            # Episodes left running by the previous batch began under older weights: start afresh.
            self._last_obs = self.env.reset()  # type: ignore[assignment]
            self._last_episode_starts = np.ones(self.env.num_envs, dtype=bool)
        share = self.episodes_per_env
        ended = np.zeros(self.env.num_envs, dtype=np.int64)

        def every_env_done(_step: int, dones: np.ndarray) -> bool:
            ended[:] += dones
            return bool(np.all(ended >= share))

        rollout = self._collect(callback, None, until=every_env_done, max_steps=n_steps)
        if rollout is not None:
            rollout.mask = complete_episode_mask(rollout.episode_starts, rollout.last_dones, share)
        return rollout

    @property
    def episodes_per_env(self) -> int:
        """How many complete episodes each env contributes to a batch."""
        assert self.env is not None
        return -(-(self.n_episodes or self.env.num_envs) // self.env.num_envs)

    def update(self, rollout: Rollout) -> dict[str, float]:
        """The gradient step on the batch's complete episodes; a batch without any is skipped (and logged)."""
        assert rollout.mask is not None
        if not bool(rollout.mask.any()):
            self.logger.record("train/skipped_batches", 1)
            return {}
        return super().update(rollout)


@hookimpl
def pgplug_register_algorithms(register) -> None:
    register(REINFORCE)
