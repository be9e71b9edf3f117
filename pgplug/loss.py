"""The one policy-gradient loss every algorithm minimises.

loss = −mean(log π(a|s) Ψ) − ent_coef·H(π) + vf_coef·MSE(V(s), returns)

Written op for op as SB3's A2C computes it, so pgplug's A2C matches SB3's update for update.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch as th
import torch.nn.functional as F
from stable_baselines3.common.policies import ActorCriticPolicy

from pgplug.rollout import Rollout


@dataclass
class LossTerms:
    loss: th.Tensor
    policy_loss: th.Tensor
    value_loss: th.Tensor | None
    entropy_loss: th.Tensor


def policy_gradient_loss(
    policy: ActorCriticPolicy,
    rollout: Rollout,
    ent_coef: float,
    vf_coef: float,
    normalize_advantage: bool = False,
) -> LossTerms:
    """The loss of one update over the whole (masked) rollout, with Ψ = ``rollout.advantages``."""
    assert rollout.advantages is not None, "run the estimator before computing the loss"
    observations = rollout.flat(rollout.observations)
    actions = rollout.flat(rollout.actions)
    values, log_prob, entropy = policy.evaluate_actions(observations, actions)
    values = values.flatten()
    advantages = rollout.flat(rollout.advantages)
    if normalize_advantage:
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    policy_loss = -(advantages * log_prob).mean()
    entropy_loss = -th.mean(-log_prob) if entropy is None else -th.mean(entropy)
    loss = policy_loss + ent_coef * entropy_loss
    value_loss = None
    if rollout.returns is not None:
        value_loss = F.mse_loss(rollout.flat(rollout.returns), values)
        loss = loss + vf_coef * value_loss
    return LossTerms(loss, policy_loss, value_loss, entropy_loss)
