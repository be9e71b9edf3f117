"""``LeanDummyVecEnv``: SB3's ``DummyVecEnv`` without the deep copies, step for step the same, behind the switch.

The envs are stepped side by side with SB3's ``DummyVecEnv`` on the same seeds and actions, through terminations,
truncations (CartPole's 500-step limit cut short to 20) and dict observations; what it returns is fresh (callers may
change it) and a terminal observation survives an env that reuses its array in ``reset()``.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

from pgplug.errors import PgplugError
from pgplug.runtime.envs import EnvSpec
from pgplug.runtime.fast_runners import LeanDummyVecEnv
from pgplug.runtime.runners import FAST_PATHS_ENV_VAR, vec_env_class


class DictCartPole(gym.ObservationWrapper):
    """CartPole with a dict observation (SB3's MultiInput case) and an info entry of its own."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.observation_space = gym.spaces.Dict({"state": env.observation_space, "t": gym.spaces.Box(0, 1e6, (1,))})
        self.t = 0

    def observation(self, observation: np.ndarray) -> dict[str, np.ndarray]:
        self.t += 1
        return {"state": observation, "t": np.array([self.t], dtype=np.float32)}


class ReusedArray(gym.Wrapper):
    """Returns one array object for every observation, overwritten in place (as some envs do)."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.buffer = np.zeros(env.observation_space.shape, dtype=env.observation_space.dtype)

    def reset(self, **kwargs: Any) -> tuple[np.ndarray, dict]:
        obs, info = self.env.reset(**kwargs)
        self.buffer[:] = obs
        return self.buffer, info

    def step(self, action: Any) -> tuple:
        obs, *rest = self.env.step(action)
        self.buffer[:] = obs
        return self.buffer, *rest


def side_by_side(wrapper: Any, sb3_wrapper: Any, steps: int = 120) -> None:
    kwargs = {"n_envs": 3, "seed": 5, "env_kwargs": {"max_episode_steps": 20}}
    sb3 = make_vec_env("CartPole-v1", vec_env_cls=DummyVecEnv, wrapper_class=sb3_wrapper, **kwargs)
    lean = make_vec_env("CartPole-v1", vec_env_cls=LeanDummyVecEnv, wrapper_class=wrapper, **kwargs)
    assert_equal(sb3.reset(), lean.reset())
    rng = np.random.default_rng(0)
    ended = 0
    for _ in range(steps):
        actions = rng.integers(0, 2, size=3)
        expected, got = sb3.step(actions), lean.step(actions)
        for a, b in zip(expected[:3], got[:3], strict=True):
            assert_equal(a, b)
        assert [sorted(info) for info in expected[3]] == [sorted(info) for info in got[3]]
        for a, b in zip(expected[3], got[3], strict=True):
            for key in a:
                assert_equal(*(without_wall_clock(info[key]) if key == "episode" else info[key] for info in (a, b)))
        ended += int(got[2].sum())
    assert ended >= 6  # terminations and 20-step truncations both happened
    sb3.close()
    lean.close()


def without_wall_clock(episode: dict[str, Any]) -> dict[str, Any]:
    """Monitor's episode record but its ``t``, the wall-clock time, which differs between two envs."""
    return {key: value for key, value in episode.items() if key != "t"}


def assert_equal(a: Any, b: Any) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_equal(a[key], b[key])
    else:
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("wrapper", [None, DictCartPole], ids=["box", "dict"])
def test_it_steps_as_sb3s_dummy_vec_env(wrapper: Any) -> None:
    side_by_side(wrapper, wrapper)


def test_an_env_reusing_its_array_keeps_its_terminal_observations() -> None:
    """The same as SB3 stepping the plain env; SB3's ``DummyVecEnv`` itself would report the reset observation."""
    side_by_side(ReusedArray, None)


def test_what_it_returns_is_fresh() -> None:
    env = make_vec_env("CartPole-v1", n_envs=2, seed=0, vec_env_cls=LeanDummyVecEnv)
    first = env.reset()
    obs, rewards, _, infos = env.step(np.array([0, 1]))
    first[:] = 7.0
    obs_copy, rewards_copy = obs.copy(), rewards.copy()
    infos[0]["mine"] = 1
    obs2, rewards2, _, infos2 = env.step(np.array([0, 1]))
    np.testing.assert_array_equal(obs, obs_copy)  # the next step did not write into the previous arrays
    np.testing.assert_array_equal(rewards, rewards_copy)
    assert obs2 is not obs and rewards2 is not rewards
    assert "mine" not in infos2[0] and "mine" not in env.buf_infos[0]
    env.close()


def test_the_switch_chooses_the_class(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(FAST_PATHS_ENV_VAR, raising=False)
    assert vec_env_class("dummy") is LeanDummyVecEnv
    assert vec_env_class("dummy", fast=False) is DummyVecEnv
    assert vec_env_class("subproc") is SubprocVecEnv
    monkeypatch.setenv(FAST_PATHS_ENV_VAR, "0")
    assert vec_env_class("dummy") is DummyVecEnv
    assert type(EnvSpec("CartPole-v1", n_envs=2).make_vec_env()) is DummyVecEnv
    monkeypatch.setenv(FAST_PATHS_ENV_VAR, "1")
    assert type(EnvSpec("CartPole-v1", n_envs=2).make_vec_env()) is LeanDummyVecEnv


def test_an_unknown_kind_is_one_line() -> None:
    with pytest.raises(PgplugError, match=r"unknown vec_env 'threads'; valid: dummy, subproc, ale"):
        vec_env_class("threads")
