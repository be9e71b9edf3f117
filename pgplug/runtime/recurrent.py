"""Recurrent policies: sb3-contrib's ``RecurrentActorCriticPolicy`` (``MlpLstmPolicy``, ``CnnLstmPolicy``).

The runner carries the LSTM states from step to step and from rollout to rollout (sb3-contrib's
policy resets them where ``episode_starts`` is set), and gives each rollout the states it began
with, so the update replays the rollout exactly as the actors saw it: truncated back-propagation
through time over each rollout. The math follows sb3-contrib's RecurrentPPO.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch as th
from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy
from sb3_contrib.common.recurrent.type_aliases import RNNStates

from pgplug.contracts.objective import PolicyEvaluation, UpdateBatch
from pgplug.contracts.rollout import Observation, Rollout
from pgplug.runtime.policy_runner import PolicyRunner, StepOutputs, outside_graph_unless, update_batch


def is_recurrent(policy: Any) -> bool:
    return isinstance(policy, RecurrentActorCriticPolicy)


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


class RecurrentRunner(PolicyRunner):
    """Runs a recurrent policy with sb3-contrib's own code; the LSTM states live here between steps and rollouts."""

    policy: RecurrentActorCriticPolicy
    acts_on_env_groups = False  # the LSTM states of all envs step together

    def __init__(self, policy: RecurrentActorCriticPolicy) -> None:
        super().__init__(policy)
        self.states: RNNStates | None = None
        self._initial_states: RNNStates | None = None

    def _episode_starts(self, starts: np.ndarray) -> th.Tensor:
        return th.as_tensor(starts, dtype=th.float32, device=self.policy.device)

    def reset(self) -> None:
        self.states = None

    def begin_rollout(self, n_envs: int) -> None:
        if self.states is None or self.states.pi[0].shape[1] != n_envs:
            self.states = zero_states(self.policy, n_envs)
        self._initial_states = clone_states(self.states)

    def act(self, obs: Observation, episode_starts: np.ndarray) -> StepOutputs:
        assert self.states is not None, "begin_rollout() first"
        with th.no_grad():
            actions, values, log_probs, self.states = self.policy.forward(
                obs, self.states, self._episode_starts(episode_starts)
            )
        return actions, values, log_probs

    def values(self, obs: Observation, episode_starts: np.ndarray | None = None, env_index: int | None = None):
        """V(obs) with the critic's current states: after the rollout (all envs) or at a truncation."""
        assert self.states is not None, "begin_rollout() first"
        h, c = self.states.vf
        if env_index is None:
            assert episode_starts is not None
            starts = self._episode_starts(episode_starts)
        else:  # the terminal observation continues the episode that just ended
            h, c = h[:, env_index : env_index + 1].contiguous(), c[:, env_index : env_index + 1].contiguous()
            starts = th.zeros(1, device=self.policy.device)
        with th.no_grad():
            return self.policy.predict_values(obs, (h, c), starts)

    def end_rollout(self, rollout: Rollout | None) -> None:
        if rollout is not None:
            rollout.recurrent_states = self._initial_states

    def evaluate_rollout(self, rollout: Rollout, differentiate_entropy: bool) -> UpdateBatch:
        """Each env's whole sequence replayed from the states the rollout began with (truncated BPTT), env by env;
        the mask, if any, applies to the outputs."""
        assert rollout.recurrent_states is not None, "a recurrent policy's rollout carries its initial states"
        flat = rollout.flat
        values, log_prob, entropy = self.policy.evaluate_actions(
            flat(rollout.observations, env_major=True, masked=False),
            flat(rollout.actions, env_major=True, masked=False),
            rollout.recurrent_states,
            flat(rollout.episode_starts, env_major=True, masked=False),
        )
        if rollout.mask is not None:
            keep = flat(rollout.mask, env_major=True, masked=False)
            values, log_prob = values[keep], log_prob[keep]
            entropy = None if entropy is None else entropy[keep]
        evaluation = PolicyEvaluation(values.flatten(), log_prob, outside_graph_unless(differentiate_entropy, entropy))
        return update_batch(rollout, evaluation, env_major=True)
