"""A CartPole-v1 expert trained once per test session: SB3 PPO, fixed seed, rl-zoo-like settings.

Shared by the behavioural-cloning and warm-start tests (imported as a plain module: the tests
folder is on ``sys.path`` in pytest's "prepend" import mode), and cached so it trains once.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import torch as th
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env

EXPERT_TIMESTEPS = 20_000


@functools.cache
def cartpole_expert_path() -> Path:
    """Train the expert (about 20k steps, a few seconds on one thread) and return its saved zip."""
    folder = Path(tempfile.mkdtemp(prefix="pgplug-expert-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    threads = th.get_num_threads()
    th.set_num_threads(1)
    try:
        expert = PPO(
            "MlpPolicy",
            make_vec_env("CartPole-v1", n_envs=8, seed=0),
            n_steps=32,
            batch_size=256,
            gae_lambda=0.8,
            gamma=0.98,
            n_epochs=20,
            learning_rate=1e-3,
            seed=0,
            device="cpu",
        )
        expert.learn(EXPERT_TIMESTEPS)
    finally:
        th.set_num_threads(threads)
    expert.save(folder / "ppo_cartpole")
    return folder / "ppo_cartpole.zip"
