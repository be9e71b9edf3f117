"""Recurrent policies: sb3-contrib's ``RecurrentActorCriticPolicy`` (``MlpLstmPolicy``, ``CnnLstmPolicy``).

The collector carries the LSTM states from step to step and from rollout to rollout (sb3-contrib's
policy resets them where ``episode_starts`` is set), and records the states at the rollout's start,
so the training pass replays the rollout exactly as the actors saw it: truncated back-propagation
through time over each rollout. The math follows sb3-contrib's RecurrentPPO.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch as th
from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy
from sb3_contrib.common.recurrent.type_aliases import RNNStates

from pgplug.contracts.rollout import Observation
from pgplug.fast.torch_internals import unchecked_distributions
from pgplug.runtime.collector import RolloutCollector

LSTM_STATES = "lstm_states"


def is_recurrent(policy: Any) -> bool:
    return isinstance(policy, RecurrentActorCriticPolicy)


def collector_for(policy: Any, env: Any, gamma: float, **kwargs: Any) -> RolloutCollector:
    """The collector that fits ``policy``: the recurrent one for sb3-contrib's LSTM policies."""
    collector_class = RecurrentRolloutCollector if is_recurrent(policy) else RolloutCollector
    return collector_class(policy, env, gamma, **kwargs)


def zero_states(policy: RecurrentActorCriticPolicy, n_envs: int) -> RNNStates:
    """All-zero actor and critic LSTM states for ``n_envs`` envs."""
    layers, _, hidden = policy.lstm_hidden_state_shape
    shape = (layers, n_envs, hidden)

    def zeros() -> th.Tensor:
        return th.zeros(shape, device=policy.device)

    return RNNStates((zeros(), zeros()), (zeros(), zeros()))


def clone_states(states: RNNStates) -> RNNStates:
    """A copy outside inference mode (the training pass differentiates through what starts from it)."""
    return RNNStates(tuple(s.clone() for s in states.pi), tuple(s.clone() for s in states.vf))


class RecurrentRolloutCollector(RolloutCollector):
    """A :class:`RolloutCollector` for recurrent policies: the states live here between rollouts."""

    policy: RecurrentActorCriticPolicy

    def __init__(self, policy: RecurrentActorCriticPolicy, *args: Any, **kwargs: Any) -> None:
        super().__init__(policy, *args, **kwargs)
        self.lstm_states = zero_states(policy, self.n_envs)

    def _episode_starts(self, starts: np.ndarray) -> th.Tensor:
        return th.as_tensor(starts, dtype=th.float32, device=self.device)

    def act(self, obs: Observation) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        with th.inference_mode(), unchecked_distributions():
            actions, values, log_probs, states = self.policy.forward(
                obs, self.lstm_states, self._episode_starts(self.last_episode_starts)
            )
        self.lstm_states = states
        return actions, values, log_probs

    def values_at(self, obs: Observation, env_index: int | None = None) -> th.Tensor:
        """V(obs) with the critic's current states: after the rollout (all envs) or at a truncation."""
        h, c = self.lstm_states.vf
        if env_index is None:
            starts = self._episode_starts(self.last_episode_starts)
        else:  # the terminal observation continues the episode that just ended
            h, c = h[:, env_index : env_index + 1].contiguous(), c[:, env_index : env_index + 1].contiguous()
            starts = th.zeros(1, device=self.device)
        return self.policy.predict_values(obs, (h, c), starts)

    def collect(self, *args: Any, **kwargs: Any):
        initial = clone_states(self.lstm_states)
        rollout = super().collect(*args, **kwargs)
        if rollout is not None:
            rollout.extras[LSTM_STATES] = initial
        return rollout
