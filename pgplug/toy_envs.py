"""Small gymnasium tasks that need memory, for recurrent policies' tests, benchmarks and demos.

Importing this module registers them: ``pgplug/CueMemory-v0`` and ``pgplug/CartPoleNoVel-v1``
(on the command line: ``--env pgplug.toy_envs:pgplug/CueMemory-v0``).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class CueMemoryEnv(gym.Env):
    """Remember a cue across a delay: a feed-forward policy can do no better than chance.

    Step 0 shows a cue (−1 or +1), then ``delay`` blank steps follow, then a final step asks for
    the answer. Only the last action is rewarded: +1 if it names the cue (action 1 for +1, 0 for
    −1), −1 otherwise. An episode lasts ``delay + 2`` steps; the best return is 1, chance is 0.
    Observation: ``[cue, is_cue_step, is_answer_step]``.
    """

    metadata: dict[str, Any] = {"render_modes": ["rgb_array"]}

    def __init__(self, delay: int = 4, render_mode: str | None = None) -> None:
        if delay < 0:
            raise ValueError(f"delay must be >= 0, got {delay}")
        self.delay = delay
        self.render_mode = render_mode
        self.observation_space = spaces.Box(-1.0, 1.0, shape=(3,), dtype=np.float32)
        self.action_space = spaces.Discrete(2)
        self._cue = 1.0
        self._t = 0

    @property
    def episode_length(self) -> int:
        return self.delay + 2

    def _obs(self) -> np.ndarray:
        if self._t == 0:
            return np.array([self._cue, 1.0, 0.0], dtype=np.float32)
        answer = 1.0 if self._t == self.episode_length - 1 else 0.0
        return np.array([0.0, 0.0, answer], dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._cue = float(self.np_random.choice([-1.0, 1.0]))
        self._t = 0
        return self._obs(), {}

    def render(self) -> np.ndarray:
        """The observation as a 1×3 RGB strip (grey levels), enough for video recorders."""
        return np.repeat(((self._obs() + 1.0) * 127.5).astype(np.uint8)[None, :, None], 3, axis=2)

    def step(self, action):
        last = self._t == self.episode_length - 1
        reward = 0.0
        if last:
            reward = 1.0 if (int(action) == 1) == (self._cue > 0) else -1.0
        self._t += 1
        return (self._obs() if not last else np.zeros(3, dtype=np.float32)), reward, last, False, {}


class NoVelocityObservation(gym.ObservationWrapper):
    """CartPole with the velocities hidden: position and angle only (the classic POMDP variant)."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        low, high = env.observation_space.low[[0, 2]], env.observation_space.high[[0, 2]]
        self.observation_space = spaces.Box(low, high, dtype=np.float32)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return observation[[0, 2]].astype(np.float32)


def make_cartpole_no_velocity(**kwargs: Any) -> gym.Env:
    return NoVelocityObservation(gym.make("CartPole-v1", **kwargs).unwrapped)


def register() -> None:
    if "pgplug/CueMemory-v0" not in gym.registry:
        gym.register("pgplug/CueMemory-v0", entry_point=CueMemoryEnv)
    if "pgplug/CartPoleNoVel-v1" not in gym.registry:
        gym.register("pgplug/CartPoleNoVel-v1", entry_point=make_cartpole_no_velocity, max_episode_steps=500)


register()
