"""Time-major rollouts and the lean loop that collects them from an SB3 ``VecEnv``.

One collector serves every algorithm (REINFORCE, A2C and each A3C worker). It does what SB3's
``OnPolicyAlgorithm.collect_rollouts`` does, with the same random draws, but writes straight into
preallocated tensors, skips torch.distributions' argument checks, and only visits the infos of the
envs whose episode ended.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.vec_env import VecEnv

Observation = th.Tensor | dict[str, th.Tensor]
StepHook = Callable[[dict[str, Any]], bool]


@contextmanager
def unchecked_distributions() -> Iterator[None]:
    """Turn off torch.distributions' argument validation (pure overhead on the policy's own outputs)."""
    previous = th.distributions.Distribution._validate_args
    th.distributions.Distribution.set_default_validate_args(False)
    try:
        yield
    finally:
        th.distributions.Distribution.set_default_validate_args(previous)


def obs_to_tensor(obs: np.ndarray | dict[str, np.ndarray], device: th.device) -> Observation:
    if isinstance(obs, dict):
        return {key: th.as_tensor(value, device=device) for key, value in obs.items()}
    return th.as_tensor(obs, device=device)


def _map(obs: Observation, fn: Callable[[th.Tensor], th.Tensor]) -> Observation:
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
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def n_steps(self) -> int:
        return self.rewards.shape[0]

    def flat(self, x: Observation) -> Observation:
        """``[T, N, ...]`` → ``[T·N, ...]``, keeping only masked steps when a mask is set."""

        def flatten(v: th.Tensor) -> th.Tensor:
            v = v.reshape(-1, *v.shape[2:])
            return v if self.mask is None else v[self.mask.reshape(-1)]

        return _map(x, flatten)


class RolloutCollector:
    """Steps ``env`` with ``policy`` and records time-major rollouts.

    Keeps the last observation and episode-start flags between rollouts, like SB3's
    ``_last_obs`` / ``_last_episode_starts``; algorithms read and set them through the attributes.
    """

    def __init__(
        self,
        policy: ActorCriticPolicy,
        env: VecEnv,
        gamma: float,
        bootstrap_truncation: bool = True,
    ) -> None:
        self.policy = policy
        self.env = env
        self.gamma = gamma
        self.bootstrap_truncation = bootstrap_truncation
        self.n_envs = env.num_envs
        self.device = policy.device
        self.last_obs: np.ndarray | dict[str, np.ndarray] | None = None
        self.last_episode_starts = np.ones(self.n_envs, dtype=bool)
        self._buffers: dict[str, Any] | None = None
        self._capacity = 0

    def _allocate(self, capacity: int, obs: Observation, actions: th.Tensor) -> None:
        n = self.n_envs

        def empty_like_step(x: th.Tensor) -> th.Tensor:
            return th.empty((capacity, *x.shape), dtype=x.dtype, device=self.device)

        old, old_capacity = self._buffers, self._capacity
        self._buffers = {
            "observations": _map(obs, empty_like_step),
            "actions": empty_like_step(actions),
            "rewards": th.empty((capacity, n), dtype=th.float32),
            "episode_starts": th.empty((capacity, n), dtype=th.float32),
            "values": th.empty((capacity, n), dtype=th.float32),
            "log_probs": th.empty((capacity, n), dtype=th.float32),
        }
        if old is not None and old_capacity:
            for key, value in old.items():
                if isinstance(value, dict):
                    for sub, tensor in value.items():
                        self._buffers[key][sub][:old_capacity] = tensor
                else:
                    self._buffers[key][:old_capacity] = value
        self._capacity = capacity

    def collect(
        self,
        n_steps: int | None,
        on_step: StepHook | None = None,
        until: Callable[[int, np.ndarray], bool] | None = None,
        max_steps: int = 100_000,
    ) -> Rollout | None:
        """Collect ``n_steps`` steps per env (or, with ``n_steps=None``, until ``until(t, dones)``).

        ``on_step`` runs after every env step with the step's locals and may return False to
        abort: then ``collect`` returns None, as SB3's ``collect_rollouts`` returns False.
        """
        assert self.last_obs is not None, "reset the env and set last_obs before collecting"
        policy, env, device = self.policy, self.env, self.device
        policy.set_training_mode(False)
        if policy.use_sde:
            policy.reset_noise(self.n_envs)
        limit = n_steps if n_steps is not None else max_steps
        box = isinstance(policy.action_space, spaces.Box)
        step = 0
        dones = np.zeros(self.n_envs, dtype=bool)
        with unchecked_distributions():
            while step < limit:
                with th.no_grad():
                    obs_tensor = obs_to_tensor(self.last_obs, device)
                    actions, values, log_probs = policy(obs_tensor)
                if step >= self._capacity:
                    self._allocate(max(n_steps or 0, 2 * self._capacity, 64), obs_tensor, actions)
                buffers = self._buffers
                assert buffers is not None
                actions_np = actions.cpu().numpy()
                env_actions = actions_np
                if box:
                    if policy.squash_output:
                        env_actions = policy.unscale_action(env_actions)
                    else:
                        env_actions = np.clip(actions_np, policy.action_space.low, policy.action_space.high)
                new_obs, rewards, dones, infos = env.step(env_actions)
                if on_step is not None and not on_step(
                    {
                        "new_obs": new_obs,
                        "rewards": rewards,
                        "dones": dones,
                        "infos": infos,
                        "actions": actions_np,
                        "clipped_actions": env_actions,
                        "values": values,
                        "log_probs": log_probs,
                        "n_steps": step,
                    }
                ):
                    return None
                ended = np.flatnonzero(dones)
                if self.bootstrap_truncation and ended.size:
                    rewards = self._bootstrap_truncated(rewards, ended, infos)
                if isinstance(obs_tensor, dict):
                    for key, value in obs_tensor.items():
                        buffers["observations"][key][step] = value
                else:
                    buffers["observations"][step] = obs_tensor
                buffers["actions"][step] = actions
                buffers["rewards"][step] = th.as_tensor(rewards, dtype=th.float32)
                buffers["episode_starts"][step] = th.as_tensor(self.last_episode_starts, dtype=th.float32)
                buffers["values"][step] = values.flatten()
                buffers["log_probs"][step] = log_probs
                self.last_obs = new_obs
                self.last_episode_starts = dones
                step += 1
                if n_steps is None and until is not None and until(step, dones):
                    break
            with th.no_grad():
                last_values = policy.predict_values(obs_to_tensor(self.last_obs, device)).flatten()
        buffers = self._buffers
        assert buffers is not None
        return Rollout(
            observations=_map(buffers["observations"], lambda v: v[:step]),
            actions=buffers["actions"][:step],
            rewards=buffers["rewards"][:step],
            episode_starts=buffers["episode_starts"][:step],
            values=buffers["values"][:step],
            log_probs=buffers["log_probs"][:step],
            last_values=last_values.to(th.float32),
            last_dones=th.as_tensor(dones, dtype=th.float32),
        )

    def _bootstrap_truncated(self, rewards: np.ndarray, ended: np.ndarray, infos: list[dict]) -> np.ndarray:
        """Add γ·V(terminal observation) to the reward of episodes cut by a time limit (SB3 #633)."""
        truncated = [
            i
            for i in ended
            if infos[i].get("terminal_observation") is not None and infos[i].get("TimeLimit.truncated", False)
        ]
        if not truncated:
            return rewards
        with th.no_grad():
            for i in truncated:
                terminal_obs = self.policy.obs_to_tensor(infos[i]["terminal_observation"])[0]
                rewards[i] += self.gamma * self.policy.predict_values(terminal_obs)[0]  # type: ignore[arg-type]
        return rewards
