"""SB3's ``DummyVecEnv`` without its two deep copies per step: the same envs, steps, resets and arrays.

``DummyVecEnv.step_wait`` returns ``deepcopy(self.buf_infos)`` and ``deepcopy(self.buf_obs)`` at every step. For a
small env such as CartPole the info copies alone cost about a tenth of an A2C step (a recursive ``deepcopy`` of
every info dict, ~28 calls per step of 8 envs). The observations need only an array copy, and the infos only a
fresh dict each (and the terminal observation a copy): every env returns a new info dict from ``step()``, which is
kept until the next step replaces it.

The one difference: a value *inside* an info dict (a list, a nested dict) is passed on as the env gave it rather
than as a deep copy, so an env that later mutates an object it put in an info dict shows the change. No env of
gymnasium, ale-py or SB3's wrappers does; ``PGPLUG_FAST_PATHS=0`` builds SB3's own ``DummyVecEnv``.
"""

from __future__ import annotations

from copy import deepcopy

from stable_baselines3.common.vec_env import DummyVecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvObs, VecEnvStepReturn
from stable_baselines3.common.vec_env.util import dict_to_obs


class LeanDummyVecEnv(DummyVecEnv):
    """``DummyVecEnv`` stepping the envs as it does, returning fresh arrays and dicts without ``deepcopy``."""

    def step_wait(self) -> VecEnvStepReturn:
        """``DummyVecEnv.step_wait``, step for step: SB3's done and truncation flags, terminal observation, reset."""
        for env_idx, env in enumerate(self.envs):
            obs, self.buf_rews[env_idx], terminated, truncated, info = env.step(self.actions[env_idx])
            self.buf_dones[env_idx] = done = terminated or truncated
            info["TimeLimit.truncated"] = truncated and not terminated
            if done:
                info["terminal_observation"] = deepcopy(obs)  # an env may reuse its array in reset()
                obs, self.reset_infos[env_idx] = env.reset()
            self.buf_infos[env_idx] = info
            self._save_obs(env_idx, obs)
        infos = [dict(info) for info in self.buf_infos]
        return self._obs_from_buf(), self.buf_rews.copy(), self.buf_dones.copy(), infos

    def _obs_from_buf(self) -> VecEnvObs:
        return dict_to_obs(self.observation_space, {key: array.copy() for key, array in self.buf_obs.items()})
