"""The objective contract: the loss an update minimises, from the policy's outputs and the estimator's.

An update runs the policy on the collected steps (log π(a|s), its entropy, V(s)) and hands those,
with the estimator's Ψ_t and critic targets, to an objective as one typed :class:`UpdateBatch`. The
objective returns the loss and its parts; the gradient step (:mod:`pgplug.runtime.gradient`) does
the rest, the same for every algorithm. The policy-gradient objective, behavioural cloning (Ψ = 1)
and any plugin's (a clipped ratio, V-trace) are objectives registered through
``pgplug_register_objectives``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar

import torch as th

from pgplug.contracts.parameters import Parametrised
from pgplug.plugin.registry import RegistryKind


@dataclass(frozen=True)
class PolicyEvaluation:
    """What the policy being updated says about the batch's (state, action) pairs, each ``[B]``.

    :param values: V(s)
    :param log_prob: log π(a|s)
    :param entropy: H(π(·|s)), or None for a distribution without a closed form (SB3's squashed Gaussian)
    """

    values: th.Tensor
    log_prob: th.Tensor
    entropy: th.Tensor | None


@dataclass(frozen=True)
class UpdateBatch:
    """Everything an objective's loss may use, flattened over the update's steps (``[B]`` each).

    :param evaluation: the policy's outputs under the weights being updated
    :param advantages: Ψ_t from the estimator; None when the objective takes no estimator
    :param returns: the critic's regression targets; None when no critic is trained
    :param old_log_prob: log π(a|s) when the step was collected (for ratio objectives)
    :param old_values: V(s) when the step was collected
    """

    evaluation: PolicyEvaluation
    advantages: th.Tensor | None
    returns: th.Tensor | None
    old_log_prob: th.Tensor
    old_values: th.Tensor


@dataclass
class LossTerms:
    """The loss to differentiate and its parts, logged as ``train/<name>``.

    :param loss: the scalar the gradient step differentiates
    :param policy_loss: the policy term
    :param value_loss: the critic term, None when no critic is trained
    :param entropy_loss: −mean entropy (logged even when it is not in the loss)
    :param metrics: further scalars an objective reports (``clip_fraction``, ...)
    """

    loss: th.Tensor
    policy_loss: th.Tensor
    value_loss: th.Tensor | None
    entropy_loss: th.Tensor
    metrics: dict[str, th.Tensor] = field(default_factory=dict)


class Objective(Parametrised, ABC):
    """Base class of objectives: set ``name``, what it fits, and ``loss``.

    Constructor arguments are the objective's parameters. An algorithm hands its own settings of the
    same names (``ent_coef``, ``vf_coef``, ``normalize_advantage``, as SB3 spells them) to the
    objectives that take them, at every update.

    :cvar supported_estimators: the estimators whose Ψ it can use: None for any, an empty set for
        none (its Ψ is fixed, as behavioural cloning's Ψ = 1)
    """

    name: ClassVar[str]
    supported_estimators: ClassVar[frozenset[str] | None] = None

    @property
    def differentiates_entropy(self) -> bool:
        """Whether the loss depends on the entropy: if not, the runner computes it outside the autograd graph."""
        return True

    @abstractmethod
    def loss(self, batch: UpdateBatch) -> LossTerms:
        """The loss of one gradient step on ``batch``."""


#: The objective registry: filled by ``pgplug_register_objectives``.
OBJECTIVES = RegistryKind("objective", "pgplug_register_objectives", Objective)
