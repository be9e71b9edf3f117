"""A vec env whose envs step in groups, so that the policy acts for one group while another group's envs step."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import VecEnvStepReturn


@runtime_checkable
class GroupSteppedVecEnv(Protocol):
    """An SB3 ``VecEnv`` that also steps its envs group by group, asynchronously.

    ``send_group(g, actions)`` starts group ``g``'s envs stepping (elsewhere: threads, processes) and returns at
    once; ``recv_group(g)`` waits for them and returns their step, as ``step_wait`` returns all envs' (observations,
    rewards, dones and infos of the group's envs, in order). Groups are consecutive envs; each is sent, then received,
    once per step. Between a group's send and its recv the caller works, for instance computes the next actions of
    another group: :class:`pgplug.runtime.collector.RolloutCollector` does, for runners with speed paths.
    """

    #: The envs of each group, consecutive and together all envs: ``slice(first, stop)``.
    groups: tuple[slice, ...]

    def send_group(self, group: int, actions: np.ndarray) -> None: ...

    def recv_group(self, group: int) -> VecEnvStepReturn: ...
