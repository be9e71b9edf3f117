"""The policy runner: everything that evaluates or steps the policy, behind one seam.

Collection (an action per step, V(s) after the rollout and at time-limit truncations), the update
(log π(a|s), the entropy and V(s) over the rollout; training mode, gradient clipping, the optimizer
step) and ``predict`` all go through a runner. :class:`PolicyRunner` runs SB3's own code
(``policy.forward``, ``evaluate_actions``, ``predict_values``, ``Optimizer.step``): it is the
reference. The fast runners of :mod:`pgplug.runtime.fast_runners` are alternatives, proven equal to
it where they engage; :func:`pgplug.runtime.runners.runner_for` chooses, and ``PGPLUG_FAST_PATHS=0``
keeps the reference.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch as th
from stable_baselines3.common.policies import ActorCriticPolicy

from pgplug.contracts.objective import PolicyEvaluation, UpdateBatch
from pgplug.contracts.rollout import Observation, Rollout

#: What a policy's step forward returns: sampled actions, V(s) and log π(a|s).
StepOutputs = tuple[th.Tensor, th.Tensor, th.Tensor]


def update_batch(rollout: Rollout, evaluation: PolicyEvaluation, env_major: bool = False) -> UpdateBatch:
    """The :class:`UpdateBatch` of ``rollout`` with ``evaluation``, every field flattened in the same step order."""

    def flat(x: th.Tensor | None) -> th.Tensor | None:
        return None if x is None else rollout.flat(x, env_major=env_major)

    return UpdateBatch(
        evaluation=evaluation,
        advantages=flat(rollout.advantages),
        returns=flat(rollout.returns),
        old_log_prob=rollout.flat(rollout.log_probs, env_major=env_major),
        old_values=rollout.flat(rollout.values, env_major=env_major),
    )


def outside_graph_unless(keep: bool, entropy: th.Tensor | None) -> th.Tensor | None:
    """The entropy as it is when the loss differentiates it, else detached (only logged: no backward through it)."""
    return entropy if entropy is None or keep else entropy.detach()


class PolicyRunner:
    """Runs a feed-forward SB3 ``ActorCriticPolicy`` with SB3's own code: the reference.

    :param policy: the policy it runs
    """

    #: Whether this runner takes fast paths (the reference does not).
    fast: ClassVar[bool] = False
    #: Whether ``act`` may be called for a group of the envs at a time (it keeps no per-env state between steps).
    acts_on_env_groups: ClassVar[bool] = True

    def __init__(self, policy: ActorCriticPolicy) -> None:
        self.policy = policy

    # -- collection ----------------------------------------------------------------------------

    def reset(self) -> None:
        """The env changed: forget any state carried from step to step (a recurrent policy's)."""

    def begin_rollout(self, n_envs: int) -> None:
        """A rollout of ``n_envs`` envs begins."""

    def act(self, obs: Observation, episode_starts: np.ndarray) -> StepOutputs:
        """Sampled actions, V(s) and log π(a|s) at ``obs``, as ``OnPolicyAlgorithm.collect_rollouts`` gets them."""
        with th.no_grad():
            return self.policy(obs)

    def values(self, obs: Observation, episode_starts: np.ndarray | None = None, env_index: int | None = None):
        """V(obs): of the state after the rollout (all envs), or of env ``env_index``'s terminal observation."""
        with th.no_grad():
            return self.policy.predict_values(obs)

    def end_rollout(self, rollout: Rollout | None) -> None:
        """The rollout is collected (None: a callback stopped it)."""

    # -- update --------------------------------------------------------------------------------

    def evaluate_rollout(self, rollout: Rollout, differentiate_entropy: bool) -> UpdateBatch:
        """The policy's outputs on the rollout's steps under the current weights, with the rollout's own fields.

        :param differentiate_entropy: whether the loss differentiates the entropy (else it is detached)
        """
        flat = rollout.flat
        values, log_prob, entropy = self.policy.evaluate_actions(flat(rollout.observations), flat(rollout.actions))
        evaluation = PolicyEvaluation(values.flatten(), log_prob, outside_graph_unless(differentiate_entropy, entropy))
        return update_batch(rollout, evaluation)

    def set_training_mode(self, mode: bool) -> None:
        self.policy.set_training_mode(mode)

    def clip_grad_norm(self, params: list[th.nn.Parameter], max_norm: float) -> None:
        th.nn.utils.clip_grad_norm_(params, max_norm)

    def optimizer_step(self, optimizer: th.optim.Optimizer, grads: Sequence[th.Tensor | None] | None = None) -> None:
        """``optimizer.step()``; ``grads`` (one per parameter, in ``param_groups`` order) become the ``.grad``s first.

        Explicit gradients let an A3C worker step the shared parameters with its local gradients.
        """
        if grads is not None:
            params = [p for group in optimizer.param_groups for p in group["params"]]
            if len(grads) != len(params):
                raise ValueError(f"optimizer_step got {len(grads)} gradients for {len(params)} parameters")
            for param, grad in zip(params, grads):
                param.grad = grad
        optimizer.step()

    # -- predict -------------------------------------------------------------------------------

    def predict(
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[Any, tuple[np.ndarray, ...] | None]:
        return self.policy.predict(observation, state, episode_start, deterministic)
