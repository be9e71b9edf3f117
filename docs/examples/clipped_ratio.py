"""A new algorithm and its objective in one file: a clipped-ratio policy gradient (PPO's surrogate), several epochs
over each rollout. ``pgplug train --plugin docs/examples/clipped_ratio.py --algo clipped_pg --env CartPole-v1``.

The objective and the algorithm are plugins like the built-ins; nothing in pgplug's core changes. The
algorithm declares the one objective its update needs: stepping several times on one rollout is only
sound when the loss corrects for the policy having moved since the rollout was collected.
"""

from __future__ import annotations

from typing import Any

import torch as th

from pgplug import PgplugError, hookimpl
from pgplug.contracts.objective import LossTerms, Objective, UpdateBatch
from pgplug.plugins import objective_math as terms
from pgplug.runtime.on_policy import OnPolicyLearner
from pgplug.validation import check_positive_int


def clipped_ratio_term(log_prob: th.Tensor, old_log_prob: th.Tensor, advantages: th.Tensor, clip: float) -> th.Tensor:
    """−mean min(ρ Ψ, clip(ρ, 1 − ε, 1 + ε) Ψ) with ρ = π(a|s) / π_old(a|s): no gain from moving ρ past 1 ± ε.

    At ρ = 1 (the weights that collected the rollout) its gradient is the policy gradient's, −mean(Ψ ∇log π).
    """
    ratio = th.exp(log_prob - old_log_prob)
    return -th.min(ratio * advantages, th.clamp(ratio, 1 - clip, 1 + clip) * advantages).mean()


class ClippedRatio(Objective):
    """loss = −mean min(ρΨ, clip(ρ)Ψ) − ent_coef·mean H(π) + vf_coef·MSE(V(s), returns) (Schulman et al. 2017).

    :param clip_range: ε, how far the probability ratio ρ may move from 1 before the loss stops rewarding it
    :param ent_coef: weight of the entropy bonus
    :param vf_coef: weight of the critic's loss
    :param normalize_advantage: standardise Ψ over the batch first
    """

    name = "clipped_ratio"

    def __init__(
        self, clip_range: float = 0.2, ent_coef: float = 0.0, vf_coef: float = 0.5, normalize_advantage: bool = True
    ) -> None:
        if isinstance(clip_range, bool) or not isinstance(clip_range, (int, float)) or not 0 < clip_range < 1:
            raise PgplugError(f"clipped_ratio's clip_range must be a number in (0, 1), got {clip_range!r}")
        self.clip_range, self.ent_coef, self.vf_coef = float(clip_range), float(ent_coef), float(vf_coef)
        self.normalize_advantage = bool(normalize_advantage)

    @property
    def differentiates_entropy(self) -> bool:
        return self.ent_coef != 0

    def loss(self, batch: UpdateBatch) -> LossTerms:
        evaluation, advantages = batch.evaluation, batch.advantages
        if advantages is None:
            raise PgplugError("the clipped_ratio objective needs an estimator's advantages")
        if self.normalize_advantage:
            advantages = terms.standardized(advantages)
        policy_loss = clipped_ratio_term(evaluation.log_prob, batch.old_log_prob, advantages, self.clip_range)
        entropy_loss = terms.entropy_term(evaluation.entropy, evaluation.log_prob)
        loss = policy_loss + self.ent_coef * entropy_loss
        value_loss = None
        if batch.returns is not None:
            value_loss = terms.value_term(evaluation.values, batch.returns)
            loss = loss + self.vf_coef * value_loss
        with th.no_grad():
            log_ratio = evaluation.log_prob - batch.old_log_prob
            clipped = (th.exp(log_ratio) - 1).abs() > self.clip_range
            approx_kl = ((th.exp(log_ratio) - 1) - log_ratio).mean()
            metrics = {"clip_fraction": clipped.float().mean(), "approx_kl": approx_kl}
        return LossTerms(loss, policy_loss, value_loss, entropy_loss, metrics)


class ClippedPG(OnPolicyLearner):
    """Clipped-ratio policy gradient: ``n_steps`` per env from a vec env, then ``n_epochs`` Adam steps on them.

    :param policy: the policy model (``MlpPolicy``, ``CnnPolicy``, ``MultiInputPolicy`` or a class)
    :param env: the environment (a gymnasium id, an env or an SB3 ``VecEnv``)
    :param learning_rate: Adam's learning rate, or a schedule
    :param n_steps: steps per env per rollout
    :param n_epochs: gradient steps on each rollout, each on the whole of it
    :param clip_range: the objective's ε
    :param kwargs: the shared arguments of :class:`OnPolicyLearner` (``gamma``, ``ent_coef``, ``estimator``, ...)
    """

    name = "clipped_pg"
    default_estimator = "gae"
    accepts_episode_estimators = False  # rollouts cut episodes
    default_objective = "clipped_ratio"
    supported_objectives = frozenset({"clipped_ratio"})  # several steps per rollout need the ratio's correction

    def __init__(
        self,
        policy: Any,
        env: Any,
        learning_rate: float = 3e-4,
        n_steps: int = 128,
        n_epochs: int = 4,
        clip_range: float = 0.2,
        normalize_advantage: bool = True,
        _init_setup_model: bool = True,
        **kwargs: Any,
    ) -> None:
        self.clip_range = clip_range  # a setting the objective takes by name, as it takes ent_coef
        super().__init__(policy, env, learning_rate, normalize_advantage=normalize_advantage, **kwargs)
        self.n_steps = check_positive_int("n_steps", n_steps)
        self.n_epochs = check_positive_int("n_epochs", n_epochs)
        if _init_setup_model:
            self._setup_model()

    def collect_rollout(self, callback: Any, n_steps: int) -> Any:
        return self._collect(callback, n_steps)

    def train(self) -> None:
        """``n_epochs`` updates on the last rollout, each the gradient step every algorithm takes (and logs)."""
        for _ in range(self.n_epochs):
            self.update(self.last_rollout)


@hookimpl
def pgplug_register_objectives(register):
    register(ClippedRatio)


@hookimpl
def pgplug_register_algorithms(register):
    register(ClippedPG)
