"""Behavioural cloning: the policy gradient with Ψ_t = 1 on an expert's states and actions.

The policy gradient is ∇ mean(log π(a_t|s_t) · Ψ_t). With the expert's actions and Ψ_t = 1 it is
∇ mean log π(a_expert|s), the gradient of the expert data's log-likelihood: behavioural cloning is
the registered ``behavioural_cloning`` objective (the policy-gradient term with Ψ = 1, no entropy or
critic term), stepped by the same :func:`pgplug.runtime.gradient.gradient_step` as every algorithm.
Warm-starting an A2C/A3C run this way and then fine-tuning with rewards is the classic "pretrain by
imitation, improve by RL" recipe.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.vec_env import VecEnv

from pgplug.contracts.registries import make_objective
from pgplug.contracts.rollout import Rollout
from pgplug.errors import PgplugError
from pgplug.runtime.collector import obs_to_tensor
from pgplug.runtime.gradient import gradient_step
from pgplug.runtime.runners import resolve_fast_paths, runner_for
from pgplug.validation import check_constant_learning_rate, check_max_grad_norm, check_positive_int, check_seed

Observations = np.ndarray | dict[str, np.ndarray]


@dataclass
class ExpertDataset:
    """Expert (state, action) pairs, flat: ``observations[i]`` was answered with ``actions[i]``.

    :param observations: ``[n, *obs_shape]`` (a dict of such arrays for dict observations), as the
        env (including any ``VecNormalize``) returned them
    :param actions: ``[n, *action_shape]``, as the expert's ``predict`` returned them
    :param episode_returns: returns of the expert's episodes that ended during collection
    """

    observations: Observations
    actions: np.ndarray
    episode_returns: list[float] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.actions)

    def save(self, path: str | Path) -> None:
        """Write an ``.npz`` file (observation keys prefixed ``obs/`` for dict observations)."""
        obs = self.observations
        arrays = {f"obs/{k}": v for k, v in obs.items()} if isinstance(obs, dict) else {"obs": obs}
        np.savez_compressed(path, actions=self.actions, episode_returns=np.asarray(self.episode_returns), **arrays)

    @classmethod
    def load(cls, path: str | Path) -> ExpertDataset:
        try:
            with np.load(path) as data:
                keys = list(data.keys())
                obs: Observations = (
                    data["obs"] if "obs" in keys else {k[4:]: data[k] for k in keys if k.startswith("obs/")}
                )
                return cls(obs, data["actions"], [float(r) for r in data["episode_returns"]])
        except (OSError, KeyError, ValueError) as exc:
            raise PgplugError(f"{path} is not an expert dataset saved by ExpertDataset.save ({exc})") from exc


def _as_vec_env(env: str | gym.Env | VecEnv, seed: int | None) -> VecEnv:
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv

    if isinstance(env, str):
        return make_vec_env(env, n_envs=1, seed=seed)
    if isinstance(env, VecEnv):
        return env
    return DummyVecEnv([lambda: env])


def collect_expert_data(
    expert: BaseAlgorithm | str | Path,
    env: str | gym.Env | VecEnv,
    n_steps: int,
    deterministic: bool = True,
    seed: int | None = None,
) -> ExpertDataset:
    """Run ``expert`` for ``n_steps`` transitions (over all envs) and record what it saw and did.

    :param expert: any model with SB3's ``predict`` (recurrent ones too), or a path :func:`pgplug.load` opens
    :param env: the env to play (an id, an env or a ``VecEnv``); it must present observations as the
        expert was trained on them (same wrappers, frozen ``VecNormalize`` statistics)
    :param n_steps: number of (state, action) pairs to record
    :param deterministic: record the expert's most likely actions
    :param seed: seed of the env when it is built from an id
    """
    n_steps = check_positive_int("n_steps", n_steps)
    if not isinstance(expert, BaseAlgorithm):
        from pgplug.interop.compat import load

        expert = load(expert, device="cpu")
    venv = _as_vec_env(env, seed)
    n_envs = venv.num_envs
    obs = venv.reset()
    state = None
    episode_start = np.ones(n_envs, dtype=bool)
    observations: list[Observations] = []
    actions: list[np.ndarray] = []
    returns: list[float] = []
    for _ in range(-(-int(n_steps) // n_envs)):
        action, state = expert.predict(obs, state=state, episode_start=episode_start, deterministic=deterministic)
        observations.append({k: np.copy(v) for k, v in obs.items()} if isinstance(obs, dict) else np.copy(obs))
        actions.append(np.asarray(action))
        obs, _, dones, infos = venv.step(action)
        episode_start = dones
        returns.extend(float(info["episode"]["r"]) for info in infos if "episode" in info)
    if isinstance(observations[0], dict):
        stacked: Observations = {k: np.concatenate([o[k] for o in observations])[:n_steps] for k in observations[0]}
    else:
        stacked = np.concatenate(observations)[:n_steps]
    return ExpertDataset(stacked, np.concatenate(actions)[:n_steps], returns)


@dataclass(frozen=True)
class CloningResult:
    """How behavioural cloning went.

    :param losses: mean −log π(a_expert|s) of each epoch's minibatches
    :param n_updates: gradient steps taken
    :param accuracy: for discrete actions, the fraction of dataset states where the policy's most
        likely action is the expert's (after training), else None
    """

    losses: list[float]
    n_updates: int
    accuracy: float | None


def cloning_rollout(observations: Any, actions: th.Tensor) -> Rollout:
    """A one-env, time-major rollout of ``B`` expert steps: no rewards, estimates or critic targets (Ψ = 1 is the
    objective's)."""
    steps = actions.shape[0]
    observations = (
        {k: v.unsqueeze(1) for k, v in observations.items()}
        if isinstance(observations, dict)
        else observations[:, None]
    )
    zeros = th.zeros(steps, 1)
    return Rollout(
        observations=observations,
        actions=actions.unsqueeze(1),
        rewards=zeros,
        episode_starts=zeros,
        values=zeros,
        log_probs=zeros,
        last_values=th.zeros(1),
        last_dones=th.zeros(1),
    )


def behavioural_cloning(
    model: BaseAlgorithm,
    dataset: ExpertDataset,
    n_epochs: int = 10,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    max_grad_norm: float | None = None,
    seed: int | None = None,
) -> CloningResult:
    """Train ``model``'s policy to imitate ``dataset``: maximise mean log π(a_expert|s), in place.

    Each minibatch is a :class:`~pgplug.contracts.rollout.Rollout` of expert steps, minimised under the
    ``behavioural_cloning`` objective (Ψ = 1) by the shared gradient step. A fresh Adam optimizer is
    used, so the model's own optimizer state is untouched for the RL phase that follows. The value head
    is not trained. The model's ``fast_paths`` setting (or ``PGPLUG_FAST_PATHS``) and its ``precision`` apply.

    :param model: a pgplug (or SB3) model with a non-recurrent ``ActorCriticPolicy``
    :param dataset: from :func:`collect_expert_data` (or :meth:`ExpertDataset.load`)
    :param n_epochs: passes over the dataset
    :param batch_size: expert steps per gradient step
    :param learning_rate: Adam's learning rate
    :param max_grad_norm: gradient-norm clipping (None: none)
    :param seed: seed of the minibatch shuffling
    """
    policy = model.policy
    if not isinstance(policy, ActorCriticPolicy) or hasattr(policy, "lstm_actor"):
        raise PgplugError(f"behavioural cloning needs a non-recurrent ActorCriticPolicy, got {type(policy).__name__}")
    n_epochs, batch_size = check_positive_int("n_epochs", n_epochs), check_positive_int("batch_size", batch_size)
    learning_rate = check_constant_learning_rate("learning_rate", learning_rate)
    max_grad_norm, seed = check_max_grad_norm("max_grad_norm", max_grad_norm), check_seed("seed", seed)
    if len(dataset) == 0:
        raise PgplugError("the expert dataset is empty")
    observations = obs_to_tensor(dataset.observations, policy.device)
    actions = _policy_actions(policy, dataset.actions)
    params = list(policy.parameters())
    optimizer = th.optim.Adam(params, lr=learning_rate)
    fast = resolve_fast_paths(getattr(model, "fast_paths", None))
    runner = runner_for(policy, fast=fast, precision=getattr(model, "precision", "fp32"))
    objective = make_objective("behavioural_cloning")
    generator = np.random.default_rng(seed)
    losses: list[float] = []
    n_updates = 0
    for _ in range(n_epochs):
        order = th.as_tensor(generator.permutation(len(dataset)), device=policy.device)
        epoch_losses = []
        for start in range(0, len(dataset), batch_size):
            index = order[start : start + batch_size]
            batch_obs = (
                {k: v[index] for k, v in observations.items()}
                if isinstance(observations, dict)
                else observations[index]
            )
            rollout = cloning_rollout(batch_obs, actions[index])
            terms = gradient_step(runner, objective, rollout, optimizer, params, max_grad_norm)
            n_updates += 1
            epoch_losses.append(terms.policy_loss.item())
        losses.append(float(np.mean(epoch_losses)))
    runner.set_training_mode(False)
    return CloningResult(losses, n_updates, _accuracy(policy, observations, actions))


def _policy_actions(policy: ActorCriticPolicy, actions: np.ndarray) -> th.Tensor:
    """Expert actions as the policy's distribution scores them (scaled to [-1, 1] for squashed policies)."""
    space = policy.action_space
    if isinstance(space, gym.spaces.Box):
        values = policy.scale_action(actions) if policy.squash_output else actions
        return th.as_tensor(np.asarray(values, dtype=np.float32), device=policy.device).reshape(-1, *space.shape)
    return th.as_tensor(np.asarray(actions), device=policy.device).long().reshape(-1, *space.shape)


def _accuracy(policy: ActorCriticPolicy, observations: Any, actions: th.Tensor) -> float | None:
    if not isinstance(policy.action_space, gym.spaces.Discrete):
        return None
    with th.no_grad():
        predicted = policy._predict(observations, deterministic=True)
    return float((predicted.reshape(-1) == actions.reshape(-1)).float().mean())


def clone_expert(
    model: BaseAlgorithm,
    expert: BaseAlgorithm | str | Path,
    n_steps: int = 10_000,
    n_epochs: int = 10,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    env: str | gym.Env | VecEnv | None = None,
    seed: int | None = None,
) -> CloningResult:
    """Warm-start ``model`` by cloning ``expert``: :func:`collect_expert_data` then :func:`behavioural_cloning`.

    The expert plays ``env``, by default the model's own env (the training pipeline, so the expert
    sees what the model will see); ``learn()`` resets it afterwards, as it does at every start.
    """
    if env is None:
        env = model.get_env()
        if env is None:
            raise PgplugError("the model has no env to collect expert data on: pass env=")
        model._last_obs = None  # type: ignore[assignment]
    dataset = collect_expert_data(expert, env, n_steps, deterministic=True, seed=seed)
    return behavioural_cloning(model, dataset, n_epochs, batch_size, learning_rate, seed=seed)


__all__ = [
    "CloningResult",
    "ExpertDataset",
    "behavioural_cloning",
    "clone_expert",
    "cloning_rollout",
    "collect_expert_data",
]
