"""A categorical policy's sampling, log-probabilities and entropy without torch.distributions objects.

SB3 builds a ``Categorical`` distribution at every step and for every update; for a small policy its
construction and argument checks cost more than the arithmetic. These functions run the same
formulas (and, for sampling, the same random draws) on the logits directly; they apply only to
SB3's own ``ActorCriticPolicy`` code over a plain categorical (:func:`runs_sb3_categorical`).
"""

from __future__ import annotations

import numpy as np
import torch as th
from stable_baselines3.common.distributions import CategoricalDistribution
from stable_baselines3.common.policies import ActorCriticPolicy

from pgplug.fast.torch_internals import has_forward_hooks


def sample_categorical(logits: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
    """Actions and log-probs drawn as ``Categorical(logits=logits)``'s ``sample()`` and ``log_prob()`` do.

    The same random draws, without building a torch.distributions object at every step (most of a
    small policy's forward time):

    - the normalised logits come from one fused ``log_softmax`` rather than ``Categorical``'s
      ``logits - logsumexp(logits)`` (seven kernels); the two agree to one float32 ulp;
    - the draw is what ``torch.multinomial(probs, 1, True)`` computes for one sample (the
      exponential-race form of the Gumbel-max trick, ``argmax(p / q)`` with ``q ~ Exp(1)``: the same
      generator calls, so the same actions unless a one-ulp difference in ``p`` decides a near-tie),
      minus its argument checks and their two host syncs, which cost more than the draw.
      Non-finite logits are caught by the update's loss check.
    """
    log_pmf = th.log_softmax(logits, dim=-1)
    actions = draw_categorical(log_pmf)
    return actions, categorical_log_prob(log_pmf, actions)


def sample_categorical_array(logits: np.ndarray) -> tuple[th.Tensor, th.Tensor]:
    """:func:`sample_categorical` for logits computed in numpy (``FusedActorCritic.numpy_forward``): the same
    formulas and the same draws from torch's generator, in numpy's cheaper calls; actions and log-probs as tensors.
    The race divides the unnormalised probabilities (each row's sum scaled away), which decides the same action
    but for a near-tie one float32 rounding apart."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    unnormalised = np.exp(shifted)
    race = th.empty(logits.shape).exponential_(1).numpy()
    actions = (unnormalised / race).argmax(axis=-1)
    log_probs = shifted[np.arange(len(actions)), actions] - np.log(unnormalised.sum(axis=-1))
    return th.from_numpy(actions), th.from_numpy(log_probs)


def draw_categorical(log_pmf: th.Tensor) -> th.Tensor:
    """One action per row of normalised logits, drawn as ``torch.multinomial(probs, 1, True)`` draws it.

    Give it logits outside the autograd graph (inference mode or detached): the draw is a constant.
    """
    probs = th.softmax(log_pmf, dim=-1).reshape(-1, log_pmf.shape[-1])
    race = th.empty_like(probs).exponential_(1)
    return th.div(probs, race, out=race).argmax(dim=-1).reshape(log_pmf.shape[:-1])


def categorical_log_prob(log_pmf: th.Tensor, actions: th.Tensor) -> th.Tensor:
    """``Categorical.log_prob(actions)`` from normalised logits (``actions``: integer indices)."""
    return log_pmf.gather(-1, actions.unsqueeze(-1)).squeeze(-1)


def categorical_entropy(log_pmf: th.Tensor) -> th.Tensor:
    """``Categorical.entropy()`` from normalised logits (the same formula: −Σ p·max(log p, float min))."""
    p_log_p = th.clamp(log_pmf, min=th.finfo(log_pmf.dtype).min) * th.softmax(log_pmf, dim=-1)
    return -p_log_p.sum(-1)


def runs_sb3_categorical(policy: ActorCriticPolicy, method: str) -> bool:
    """True when ``policy.<method>`` is SB3's own ``ActorCriticPolicy`` code over a plain categorical.

    Then pgplug may run the same ops itself (:meth:`pgplug.runtime.fast_runners.FastRunner.act`,
    :meth:`pgplug.runtime.fast_runners.FastRunner.evaluate_rollout`); any other policy is called as it is.
    """
    return (
        getattr(type(policy), method) is getattr(ActorCriticPolicy, method)
        and method not in policy.__dict__  # nor replaced on the instance
        and type(policy)._get_action_dist_from_latent is ActorCriticPolicy._get_action_dist_from_latent
        and type(policy.action_dist) is CategoricalDistribution
        and not has_forward_hooks(policy)
    )
