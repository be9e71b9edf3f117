"""REINFORCE (Williams 1992): Monte-Carlo policy gradient on complete episodes.

Each update uses only fresh episodes, collected from ``n_envs`` envs until ``n_episodes`` have
ended; steps of episodes still running at that point are discarded (they would be off-policy by
the next update), and the envs restart from fresh episodes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.type_aliases import GymEnv, Schedule

from pgplug.algorithm import PolicyGradientAlgorithm, check_positive_int
from pgplug.estimator import Estimator, episode_ends
from pgplug.hookspecs import hookimpl
from pgplug.rollout import Rollout


def complete_episode_mask(episode_starts: th.Tensor, last_dones: th.Tensor) -> th.Tensor:
    """True for the steps up to each env's last episode end: the steps of complete episodes."""
    dones = episode_ends(episode_starts, last_dones)
    return th.flip(th.cummax(th.flip(dones, [0]), dim=0).values, [0]) > 0


class REINFORCE(PolicyGradientAlgorithm):
    """REINFORCE: Monte-Carlo policy gradient on complete episodes, no replay.

    :param policy: the policy model (``MlpPolicy``, ``CnnPolicy``, ``MultiInputPolicy`` or a class)
    :param env: the environment (a gymnasium id, an env or an SB3 ``VecEnv``)
    :param learning_rate: learning rate (Adam, the policy's default optimizer), or a schedule
    :param n_episodes: complete episodes per update (default: one per env)
    :param max_batch_steps: at most this many steps per env per update, however long episodes are
    :param gamma: discount factor
    :param ent_coef: entropy coefficient
    :param vf_coef: value-loss coefficient (with a critic estimator such as ``baseline``)
    :param max_grad_norm: gradient-norm clipping threshold (None: no clipping, as in the original)
    :param normalize_advantage: standardise Ψ in each update
    :param estimator: ``reward_to_go`` (default), ``full_return``, ``baseline`` or any other
    :param estimator_kwargs: the estimator's arguments
    """

    name = "reinforce"
    default_estimator = "reward_to_go"
    accepts_episode_estimators = True
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
        normalize_advantage: bool = False,
        estimator: str | Estimator = "reward_to_go",
        estimator_kwargs: dict[str, Any] | None = None,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ) -> None:
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
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            seed=seed,
            device=device,
        )
        self.n_episodes = None if n_episodes is None else check_positive_int("n_episodes", n_episodes)
        self.max_batch_steps = check_positive_int("max_batch_steps", max_batch_steps)
        if _init_setup_model:
            self._setup_model()

    def collect_rollout(self, callback: BaseCallback) -> Rollout | None:
        assert self.env is not None
        if not np.all(self._last_episode_starts):
            # Episodes left running by the previous batch began under older weights: start afresh.
            self._last_obs = self.env.reset()  # type: ignore[assignment]
            self._last_episode_starts = np.ones(self.env.num_envs, dtype=bool)
        wanted = self.n_episodes or self.env.num_envs
        ended = 0

        def enough_episodes(_step: int, dones: np.ndarray) -> bool:
            nonlocal ended
            ended += int(dones.sum())
            return ended >= wanted

        rollout = self._collect(callback, None, until=enough_episodes, max_steps=self.max_batch_steps)
        if rollout is not None:
            rollout.mask = complete_episode_mask(rollout.episode_starts, rollout.last_dones)
        return rollout

    def train(self, rollout: Rollout) -> dict[str, float]:
        assert rollout.mask is not None
        if not bool(rollout.mask.any()):
            self.logger.record("train/skipped_batches", 1)
            return {}
        return super().train(rollout)


@hookimpl
def pgplug_register_algorithms(register) -> None:
    register(REINFORCE)
