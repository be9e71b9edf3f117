"""Envs that fail mid-training, for the tests that check nothing is lost (``--env failing_envs:RaisingCartPole-v0``).

Each is CartPole until its ``fail_after``-th step (counted per env instance), then it raises, or returns a NaN reward.
"""

from __future__ import annotations

import gymnasium as gym
from gymnasium.envs.classic_control.cartpole import CartPoleEnv


class RaisingCartPole(CartPoleEnv):
    def __init__(self, fail_after: int = 300, **kwargs) -> None:
        super().__init__(**kwargs)
        self.fail_after, self.steps = fail_after, 0

    def step(self, action):
        self.steps += 1
        if self.steps > self.fail_after:
            raise RuntimeError("the simulator crashed")
        return super().step(action)


class NanRewardCartPole(RaisingCartPole):
    def step(self, action):
        self.steps += 1
        observation, reward, terminated, truncated, info = CartPoleEnv.step(self, action)
        return observation, float("nan") if self.steps > self.fail_after else reward, terminated, truncated, info


for name, cls, fail_after in (
    ("RaisingCartPole-v0", RaisingCartPole, 300),
    ("NanRewardCartPole-v0", NanRewardCartPole, 300),
    ("RaisingAtOnceCartPole-v0", RaisingCartPole, 1),
):
    if name not in gym.registry:
        gym.register(name, entry_point=cls, max_episode_steps=500, kwargs={"fail_after": fail_after})
