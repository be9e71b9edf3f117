"""Batches of complete episodes from a policy held at fixed weights, for measurements that compare estimators.

REINFORCE collects the same way (each env contributes its first ``episodes_per_env`` episodes, the rest is masked
out, :func:`complete_episode_mask`); :class:`EpisodeSampler` does it without an algorithm, through SB3's own forward
(:class:`~pgplug.runtime.policy_runner.PolicyRunner`), so any ``ActorCriticPolicy`` can be sampled, and keeps each
batch (the collector reuses its buffers).

Time-limit truncations: a batch holds the raw rewards, and beside them ``truncation_bonus``, γ·V(terminal observation)
at each step an episode was cut by a time limit (0 elsewhere). :meth:`EpisodeBatch.rewards_for` gives an estimator
the rewards its training would give it: with the bonus for a critic estimator (as the collector adds it), without
for the others.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.vec_env import VecEnv

from pgplug.contracts.estimator import Estimator, episode_ends
from pgplug.contracts.rollout import Rollout, map_observation
from pgplug.errors import PgplugError
from pgplug.runtime.collector import RolloutCollector
from pgplug.runtime.policy_runner import PolicyRunner


def complete_episode_mask(
    episode_starts: th.Tensor, last_dones: th.Tensor, max_episodes: int | None = None
) -> th.Tensor:
    """True for the steps of each env's complete episodes, at most its first ``max_episodes`` of them.

    The rollout is assumed to begin with fresh episodes (REINFORCE resets the envs between batches).
    """
    dones = episode_ends(episode_starts, last_dones)
    episode_index = th.cumsum(dones, dim=0) - dones  # how many of the env's episodes ended before step t
    n_complete = dones.sum(dim=0)
    if max_episodes is not None:
        n_complete = n_complete.clamp(max=max_episodes)
    return episode_index < n_complete


@dataclass(frozen=True)
class EpisodeBatch:
    """One batch of complete episodes (``rollout.mask`` marks their steps), with raw rewards.

    :ivar truncation_bonus: ``[T, N]``, γ·V(terminal observation) where a time limit cut an episode, else 0
    """

    rollout: Rollout
    truncation_bonus: th.Tensor

    def rewards_for(self, estimator: Estimator) -> th.Tensor:
        """The rewards ``estimator`` gets in training: with the truncation bonus when it has a critic."""
        return self.rollout.rewards + self.truncation_bonus if estimator.needs_critic else self.rollout.rewards

    def estimate(self, estimator: Estimator, gamma: float) -> th.Tensor:
        """Ψ of ``estimator`` on this batch's steps, ``[T, N]``."""
        rollout = self.rollout
        return estimator(
            rewards=self.rewards_for(estimator),
            values=rollout.values,
            episode_starts=rollout.episode_starts,
            last_values=rollout.last_values,
            last_dones=rollout.last_dones,
            gamma=gamma,
            first_step_times=rollout.first_step_times,
        ).advantages

    @property
    def n_episodes(self) -> int:
        assert self.rollout.mask is not None
        dones = episode_ends(self.rollout.episode_starts, self.rollout.last_dones)
        return int(dones[self.rollout.mask].sum())

    @property
    def n_steps(self) -> int:
        assert self.rollout.mask is not None
        return int(self.rollout.mask.sum())


def _copied(value: Any) -> Any:
    if isinstance(value, th.Tensor):
        return value.clone()
    return map_observation(value, th.Tensor.clone) if isinstance(value, dict) else value


class EpisodeSampler:
    """Samples :class:`EpisodeBatch` es from ``policy`` on ``env``: every batch starts from fresh episodes.

    :param policy: a feed-forward SB3 ``ActorCriticPolicy``, held at its weights (nothing here changes them)
    :param env: the ``VecEnv``; each of its envs contributes ``episodes_per_env`` episodes per batch
    :param gamma: discount factor of the truncation bonus
    :param episodes_per_env: complete episodes each env contributes to a batch
    :param max_steps: at most this many steps per env per batch (an env not done by then gives what it completed)
    """

    def __init__(
        self, policy: ActorCriticPolicy, env: VecEnv, gamma: float, episodes_per_env: int = 1, max_steps: int = 10_000
    ) -> None:
        self.env, self.gamma = env, gamma
        self.episodes_per_env, self.max_steps = episodes_per_env, max_steps
        self.collector = RolloutCollector(PolicyRunner(policy), env, gamma, bootstrap_truncation=False)

    def batches(self, n: int) -> list[EpisodeBatch]:
        """``n`` batches, each with at least one complete episode."""
        batches: list[EpisodeBatch] = []
        attempts = 0
        while len(batches) < n:
            batch = self.batch()
            attempts += 1
            if batch.rollout.mask is not None and bool(batch.rollout.mask.any()):
                batches.append(batch)
            elif attempts > 10 * n:
                raise PgplugError(
                    f"no episode ended within {self.max_steps} steps per env in {attempts} batches: "
                    "raise max_steps, or measure an env whose episodes end"
                )
        return batches

    def batch(self) -> EpisodeBatch:
        """One batch; its mask may be empty when no env finished an episode within ``max_steps``."""
        collector, n_envs = self.collector, self.env.num_envs
        collector.last_obs = self.env.reset()
        collector.last_episode_starts = np.ones(n_envs, dtype=bool)
        ended = np.zeros(n_envs, dtype=np.int64)
        bonus: dict[tuple[int, int], float] = {}

        def every_env_done(_step: int, dones: np.ndarray) -> bool:
            ended[:] += dones
            return bool(np.all(ended >= self.episodes_per_env))

        def record_truncations(step: dict[str, Any]) -> bool:
            for i in np.flatnonzero(step["dones"]):
                info = step["infos"][i]
                if info.get("TimeLimit.truncated", False) and info.get("terminal_observation") is not None:
                    terminal = collector.policy.obs_to_tensor(info["terminal_observation"])[0]
                    bonus[step["n_steps"], int(i)] = self.gamma * float(collector.runner.values(terminal)[0, 0])
            return True

        rollout = collector.collect(None, on_step=record_truncations, until=every_env_done, max_steps=self.max_steps)
        assert rollout is not None  # record_truncations never stops it
        rollout = Rollout(**{f.name: _copied(getattr(rollout, f.name)) for f in fields(rollout)})
        rollout.mask = complete_episode_mask(rollout.episode_starts, rollout.last_dones, self.episodes_per_env)
        truncation_bonus = th.zeros_like(rollout.rewards)
        for (step, env_index), value in bonus.items():
            truncation_bonus[step, env_index] = value
        return EpisodeBatch(rollout, truncation_bonus)
