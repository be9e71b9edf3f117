"""Reusing the rollout's forward passes as the update's: when it is the same computation, and what is kept.

A2C and A3C update once per rollout, on the weights that collected it, so the rollout's forward
pass, kept with its autograd graph, *is* the update's forward pass: for a CNN that is a third of the
update's time, for the price of recording the graph during the rollout. An algorithm opts in
(``PolicyGradientAlgorithm.reuse_rollout_graph``); the fast runner then keeps the graph only for a
policy where it is safe and worth it (:func:`can_reuse_rollout_graph`), and the update uses it once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch as th
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy
from stable_baselines3.common.torch_layers import CombinedExtractor, FlattenExtractor, MlpExtractor, NatureCNN

from pgplug.fast.torch_internals import has_forward_hooks

_CONVOLUTIONS = (th.nn.Conv1d, th.nn.Conv2d, th.nn.Conv3d)
# Leaves whose output does not depend on training mode (rollouts run in eval mode, updates in training mode).
_MODE_FREE_LEAVES = (
    *_CONVOLUTIONS,
    th.nn.Linear,
    th.nn.ReLU,
    th.nn.Tanh,
    th.nn.ELU,
    th.nn.LeakyReLU,
    th.nn.GELU,
    th.nn.SiLU,
    th.nn.Sigmoid,
    th.nn.Flatten,
    th.nn.Unflatten,
    th.nn.Identity,
)
# Containers whose forward only composes their children (exact types: a subclass may do more).
_COMPOSITIONS = (th.nn.Sequential, th.nn.ModuleList, th.nn.ModuleDict, NatureCNN, CombinedExtractor)
_COMPOSITIONS += (FlattenExtractor, MlpExtractor)


@dataclass
class RolloutGraph:
    """The differentiable outputs of the rollout's own forward passes, ``[T, N]`` each."""

    values: th.Tensor
    log_probs: th.Tensor
    entropy: th.Tensor | None


def can_reuse_rollout_graph(policy: BasePolicy) -> bool:
    """True when differentiating the rollout's forward passes gives the update's gradient, and saves work.

    That is SB3's own actor-critic math (no gSDE, no hooks) over modules known not to depend on
    training mode (an allowlist: convolutions, linear layers, activations and SB3's extractors;
    dropout, batch norm, attention or any unknown module turns it off), with at least one
    convolution: for an MLP the step forward is overhead-bound and keeps its inference-mode fast
    path. The gradient is the same; float rounding may differ (a CNN's kernels depend on the batch
    size).
    """
    if not (
        isinstance(policy, ActorCriticPolicy)
        and type(policy).forward is ActorCriticPolicy.forward
        and type(policy).evaluate_actions is ActorCriticPolicy.evaluate_actions
        and type(policy)._get_action_dist_from_latent is ActorCriticPolicy._get_action_dist_from_latent
        and not policy.use_sde
    ):
        return False
    modules = list(policy.modules())[1:]  # the policy itself is checked above
    if any(has_forward_hooks(module) for module in [policy, *modules]):
        return False
    if not all(type(m) in _COMPOSITIONS or (type(m) in _MODE_FREE_LEAVES and not list(m.children())) for m in modules):
        return False
    return any(isinstance(module, _CONVOLUTIONS) for module in modules)
