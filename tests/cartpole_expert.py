"""A CartPole-v1 expert defined analytically, saved as an SB3 PPO zip: the same behaviour on every CPU.

The expert pushes right exactly when ``w · obs > 0`` for the linear controller ``w`` below (cart position,
cart velocity, pole angle, pole angular velocity). It balances the pole for the full 500 steps, from
each of 200 seeded start states even with a tenth of its actions flipped at random
(:func:`controller_return`), so a rounding that flips an action now and then changes nothing.

It is an untrained SB3 ``PPO`` whose actor computes that rule: the first hidden unit is
``tanh(w · obs)``, the second layer's first unit passes its sign on, and the action logits are ``∓10 ×``
that unit; every other actor weight is zero (the critic is SB3's initialisation). A trained expert
would be a chaotic function of the CPU's floating-point rounding (20,000 PPO steps end elsewhere on
another CPU); this one is not: its argmax can flip only where ``w · obs`` is within rounding of 0.

Shared by the behavioural-cloning and warm-start tests (imported as a plain module: the tests folder
is on ``sys.path`` in pytest's "prepend" import mode), and cached so it is built once per session.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3 import PPO

#: The controller: push right when 0.1·x + 0.5·ẋ + 10·θ + 1.5·θ̇ > 0.
CONTROLLER = (0.1, 0.5, 10.0, 1.5)


def controller_action(obs: np.ndarray) -> np.ndarray:
    """The expert's action for each row of ``obs`` (``[n, 4]``), computed in float64 from the rule itself."""
    return (np.asarray(obs, dtype=np.float64) @ np.asarray(CONTROLLER) > 0).astype(np.int64)


def controller_return(seed: int, flip_probability: float = 0.0) -> float:
    """The return of one episode of the rule on CartPole-v1, each action flipped with ``flip_probability``."""
    env, rng = gym.make("CartPole-v1"), np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    total, done = 0.0, False
    while not done:
        action = int(controller_action(obs[None])[0]) ^ int(rng.random() < flip_probability)
        obs, reward, terminated, truncated, _ = env.step(action)
        total, done = total + float(reward), terminated or truncated
    return total


def cartpole_expert() -> PPO:
    """The expert as an SB3 PPO model whose deterministic action is :func:`controller_action`."""
    expert = PPO("MlpPolicy", "CartPole-v1", seed=0, device="cpu")
    actor = expert.policy.mlp_extractor.policy_net
    first, second, head = actor[0], actor[2], expert.policy.action_net
    with th.no_grad():
        for layer in (first, second, head):
            layer.weight.zero_()
            layer.bias.zero_()
        first.weight[0] = th.tensor(CONTROLLER)
        second.weight[0, 0] = 4.0
        head.weight[0, 0], head.weight[1, 0] = -10.0, 10.0
    return expert


@functools.cache
def cartpole_expert_path() -> Path:
    """The expert's saved zip (``(ppo)`` to pgplug: an SB3 PPO file)."""
    folder = Path(tempfile.mkdtemp(prefix="pgplug-expert-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    cartpole_expert().save(folder / "ppo_cartpole")
    return folder / "ppo_cartpole.zip"
