"""The terms of the policy-gradient loss, as pure functions of flat ``[B]`` tensors.

Written op for op as SB3's A2C computes them, so the policy-gradient objective matches SB3's update
for update. Behavioural cloning is :func:`policy_gradient_term` with Ψ = 1.
"""

from __future__ import annotations

import torch as th
import torch.nn.functional as F


def policy_gradient_term(log_prob: th.Tensor, advantages: th.Tensor) -> th.Tensor:
    """−mean(Ψ_t · log π(a_t|s_t)): its gradient is the policy-gradient estimate −E[Σ_t ∇log π(a_t|s_t) Ψ_t]."""
    return -(advantages * log_prob).mean()


def entropy_term(entropy: th.Tensor | None, log_prob: th.Tensor) -> th.Tensor:
    """−mean H(π(·|s)); where the distribution has no closed-form entropy, −mean(−log π(a|s)) estimates it."""
    return -th.mean(-log_prob) if entropy is None else -th.mean(entropy)


def value_term(values: th.Tensor, returns: th.Tensor) -> th.Tensor:
    """mean (returns − V(s))²: the critic's regression on the estimator's targets."""
    return F.mse_loss(returns, values)


def standardized(advantages: th.Tensor) -> th.Tensor:
    """(Ψ − mean Ψ) / (std Ψ + 1e-8): SB3's ``normalize_advantage``."""
    return (advantages - advantages.mean()) / (advantages.std() + 1e-8)
