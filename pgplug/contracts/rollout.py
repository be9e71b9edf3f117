"""The rollout: what an algorithm collects and hands, time-major, to the estimator, the objective and the hooks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch as th

Observation = th.Tensor | dict[str, th.Tensor]


def map_observation(obs: Any, fn: Callable[[Any], Any]) -> Any:
    """``fn`` applied to an observation, or to each entry of a dict observation."""
    return {key: fn(value) for key, value in obs.items()} if isinstance(obs, dict) else fn(obs)


@dataclass
class Rollout:
    """``T`` steps of ``N`` envs, time-major, plus what the estimator and the update need."""

    observations: Observation  # [T, N, *obs_shape]
    actions: th.Tensor  # [T, N, *action_shape]
    rewards: th.Tensor  # [T, N], γ·V(terminal obs) added at time-limit truncations
    episode_starts: th.Tensor  # [T, N]
    values: th.Tensor  # [T, N]
    log_probs: th.Tensor  # [T, N]
    last_values: th.Tensor  # [N]
    last_dones: th.Tensor  # [N]
    advantages: th.Tensor | None = None
    returns: th.Tensor | None = None
    mask: th.Tensor | None = None  # [T, N] bool: the steps the update uses (None = all)
    #: A recurrent policy's states when the rollout began (sb3-contrib's ``RNNStates``): the update replays
    #: each env's sequence from them. None for feed-forward policies.
    recurrent_states: Any = None
    #: ``[N]``: the steps each env's episode had run when the rollout began (for γ^t, ``Estimator.gamma_t``).
    first_step_times: th.Tensor | None = None

    @property
    def n_steps(self) -> int:
        return self.rewards.shape[0]

    def fill_estimate(self, estimator: Callable[..., Any], gamma: float) -> Rollout:
        """Set ``advantages`` and ``returns`` from ``estimator`` (a :class:`pgplug.contracts.estimator.Estimator`)."""
        estimate = estimator(
            rewards=self.rewards,
            values=self.values,
            episode_starts=self.episode_starts,
            last_values=self.last_values,
            last_dones=self.last_dones,
            gamma=gamma,
            first_step_times=self.first_step_times,
        )
        self.advantages, self.returns = estimate.advantages, estimate.returns
        return self

    def flat(self, x: Observation, env_major: bool = False, masked: bool = True) -> Observation:
        """``[T, N, ...]`` → ``[T·N, ...]``, keeping only masked steps when a mask is set (and ``masked``).

        ``env_major`` orders the steps env by env (``[N·T, ...]``): whole sequences, as recurrent
        policies evaluate them.
        """

        def flatten(v: th.Tensor) -> th.Tensor:
            if env_major:
                v = v.transpose(0, 1)
            v = v.reshape(-1, *v.shape[2:])
            if self.mask is None or not masked:
                return v
            mask = self.mask.transpose(0, 1) if env_major else self.mask
            return v[mask.reshape(-1)]

        return map_observation(x, flatten)
