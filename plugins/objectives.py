"""The built-in objectives, registered through the same hook a third-party plugin uses.

Each is a thin class over the pure terms of :mod:`pgplug.plugins.objective_math`.
"""

from __future__ import annotations

import torch as th

from pgplug.contracts.objective import LossTerms, Objective, UpdateBatch
from pgplug.errors import PgplugError
from pgplug.plugin.hookspecs import hookimpl
from pgplug.plugins import objective_math as terms
from pgplug.validation import check_bool, check_finite


class PolicyGradient(Objective):
    """loss = −mean(Ψ log π(a|s)) − ent_coef·mean H(π) + vf_coef·MSE(V(s), returns), SB3's A2C loss.

    :param ent_coef: weight of the entropy bonus (0: the entropy is only logged)
    :param vf_coef: weight of the critic's loss (used when the estimator has a critic)
    :param normalize_advantage: standardise Ψ over the batch first
    """

    name = "policy_gradient"

    def __init__(self, ent_coef: float = 0.0, vf_coef: float = 0.5, normalize_advantage: bool = False) -> None:
        self.ent_coef = check_finite("ent_coef", ent_coef)
        self.vf_coef = check_finite("vf_coef", vf_coef)
        self.normalize_advantage = check_bool("normalize_advantage", normalize_advantage)

    @property
    def differentiates_entropy(self) -> bool:
        return self.ent_coef != 0

    def loss(self, batch: UpdateBatch) -> LossTerms:
        evaluation = batch.evaluation
        if batch.advantages is None:
            raise PgplugError("the policy_gradient objective needs an estimator's advantages")
        advantages = terms.standardized(batch.advantages) if self.normalize_advantage else batch.advantages
        policy_loss = terms.policy_gradient_term(evaluation.log_prob, advantages)
        entropy_loss = terms.entropy_term(evaluation.entropy, evaluation.log_prob)
        loss = policy_loss + self.ent_coef * entropy_loss if self.ent_coef != 0 else policy_loss
        value_loss = None
        if batch.returns is not None:
            value_loss = terms.value_term(evaluation.values, batch.returns)
            loss = loss + self.vf_coef * value_loss
        return LossTerms(loss, policy_loss, value_loss, entropy_loss)


class BehaviouralCloning(Objective):
    """loss = −mean log π(a_expert|s): the policy-gradient term with Ψ_t = 1, on an expert's actions.

    The critic is not trained and the entropy is only logged: maximising the expert data's
    log-likelihood is all there is.
    """

    name = "behavioural_cloning"
    supported_estimators = frozenset()  # Ψ is fixed at 1

    @property
    def differentiates_entropy(self) -> bool:
        return False

    def loss(self, batch: UpdateBatch) -> LossTerms:
        log_prob = batch.evaluation.log_prob
        policy_loss = terms.policy_gradient_term(log_prob, th.ones_like(log_prob))
        return LossTerms(policy_loss, policy_loss, None, terms.entropy_term(batch.evaluation.entropy, log_prob))


OBJECTIVES: tuple[type[Objective], ...] = (PolicyGradient, BehaviouralCloning)


@hookimpl
def pgplug_register_objectives(register) -> None:
    for cls in OBJECTIVES:
        register(cls)


__all__ = ["OBJECTIVES", "BehaviouralCloning", "PolicyGradient"]
