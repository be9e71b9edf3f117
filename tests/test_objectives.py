"""Objectives: the loss terms against hand-computed numbers, the built-in objectives, and what fits what."""

from __future__ import annotations

from typing import Any

import pytest
import torch as th
from stable_baselines3.common.callbacks import BaseCallback

import pgplug
from pgplug.contracts.compatibility import compatible_objectives
from pgplug.contracts.objective import PolicyEvaluation, UpdateBatch
from pgplug.contracts.registries import get_host, make_objective
from pgplug.errors import IncompatibleEstimatorError, IncompatibleObjectiveError, PgplugError
from pgplug.plugins import objective_math as terms
from pgplug.plugins.objectives import BehaviouralCloning, PolicyGradient

LOG_PROB = th.tensor([-0.5, -1.0, -2.0])
ADVANTAGES = th.tensor([1.0, 2.0, -1.0])
ENTROPY = th.tensor([0.5, 0.7, 0.9])
VALUES = th.tensor([1.0, 2.0, 3.0])
RETURNS = th.tensor([1.0, 1.0, 1.0])


def batch(entropy: th.Tensor | None = ENTROPY, returns: th.Tensor | None = RETURNS) -> UpdateBatch:
    return UpdateBatch(PolicyEvaluation(VALUES, LOG_PROB, entropy), ADVANTAGES, returns, LOG_PROB, VALUES)


# -- the terms, by hand --------------------------------------------------------------------------


def test_policy_gradient_term() -> None:
    # −mean(Ψ·log π) = −mean(−0.5, −2.0, 2.0) = 1/6
    assert terms.policy_gradient_term(LOG_PROB, ADVANTAGES).item() == pytest.approx(1 / 6)


def test_entropy_term_and_its_estimate_without_a_closed_form() -> None:
    assert terms.entropy_term(ENTROPY, LOG_PROB).item() == pytest.approx(-0.7)
    # No closed form: −mean(−log π) = −(0.5 + 1 + 2)/3
    assert terms.entropy_term(None, LOG_PROB).item() == pytest.approx(-3.5 / 3)


def test_value_term_and_standardized_advantages() -> None:
    assert terms.value_term(VALUES, RETURNS).item() == pytest.approx(5 / 3)  # mean(0, 1, 4)
    th.testing.assert_close(terms.standardized(VALUES), th.tensor([-1.0, 0.0, 1.0]))  # std (unbiased) is 1


# -- the built-in objectives -----------------------------------------------------------------------


def test_policy_gradient_objective_combines_the_terms() -> None:
    loss = PolicyGradient(ent_coef=0.1, vf_coef=0.5).loss(batch())
    assert loss.loss.item() == pytest.approx(1 / 6 + 0.1 * -0.7 + 0.5 * 5 / 3)
    assert loss.policy_loss.item() == pytest.approx(1 / 6)
    assert loss.value_loss is not None and loss.value_loss.item() == pytest.approx(5 / 3)
    assert loss.entropy_loss.item() == pytest.approx(-0.7)


def test_policy_gradient_without_critic_targets_or_entropy_weight() -> None:
    loss = PolicyGradient(ent_coef=0.0).loss(batch(returns=None))
    assert loss.value_loss is None
    assert loss.loss.item() == pytest.approx(1 / 6)
    assert not PolicyGradient(ent_coef=0.0).differentiates_entropy
    assert PolicyGradient(ent_coef=0.01).differentiates_entropy


def test_normalize_advantage_standardizes_psi() -> None:
    # Ψ = (1, 2, −1): mean 2/3, std √(7/3); the loss is the policy term of the standardized Ψ.
    loss = PolicyGradient(normalize_advantage=True).loss(batch(returns=None))
    psi = (ADVANTAGES - ADVANTAGES.mean()) / (ADVANTAGES.std() + 1e-8)
    assert loss.loss.item() == pytest.approx(-(psi * LOG_PROB).mean().item())


def test_behavioural_cloning_is_the_policy_gradient_with_psi_one() -> None:
    loss = BehaviouralCloning().loss(batch())
    assert loss.loss.item() == pytest.approx(3.5 / 3)  # −mean log π
    assert loss.value_loss is None and not BehaviouralCloning().differentiates_entropy
    assert BehaviouralCloning.supported_estimators == frozenset()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"ent_coef": "abc"}, "ent_coef must be a finite number"), ({"vf_coef": float("nan")}, "vf_coef must be")],
)
def test_bad_coefficients_are_one_line_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(PgplugError, match=message) as error:
        make_objective("policy_gradient", kwargs)
    assert "\n" not in str(error.value)


def test_objectives_are_registered_like_plugins() -> None:
    host = get_host()
    assert {"policy_gradient", "behavioural_cloning"} <= set(host.objectives.names())
    assert host.objectives.entry("policy_gradient").source == "built-in"


# -- the algorithm hands its settings to the objective --------------------------------------------


def test_the_objective_takes_the_algorithms_settings_at_every_update() -> None:
    """As SB3 reads ent_coef at every update, a callback that changes it changes the next update's loss."""
    model = pgplug.A2C("MlpPolicy", "CartPole-v1", ent_coef=0.0, vf_coef=0.25, seed=0)
    assert model.objective_for_update().params() == {"ent_coef": 0.0, "vf_coef": 0.25, "normalize_advantage": False}
    seen: list[float] = []

    class Anneal(BaseCallback):
        def _on_rollout_end(self) -> None:
            self.model.ent_coef = 0.01 * self.n_calls
            seen.append(self.model.objective_for_update().ent_coef)

        def _on_step(self) -> bool:
            return True

    model.learn(40, callback=Anneal())
    assert seen == [pytest.approx(0.01 * 5 * k) for k in range(1, 9)]  # 8 rollouts of 5 steps


def test_objective_kwargs_may_not_repeat_the_algorithms_settings() -> None:
    with pytest.raises(PgplugError, match=r"objective_kwargs \['ent_coef'\] are a2c's own settings") as error:
        pgplug.A2C("MlpPolicy", "CartPole-v1", objective_kwargs={"ent_coef": 0.1})
    assert "\n" not in str(error.value)


# -- what fits what ---------------------------------------------------------------------------------


def test_an_objective_without_estimator_is_refused_by_an_algorithm_that_estimates() -> None:
    with pytest.raises(IncompatibleObjectiveError) as error:
        pgplug.A2C("MlpPolicy", "CartPole-v1", objective="behavioural_cloning")
    message = str(error.value)
    assert "\n" not in message and "takes no estimator" in message and "policy_gradient" in message


def test_an_algorithms_declared_objectives_are_enforced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pgplug.A2C, "supported_objectives", frozenset({"policy_gradient"}))
    assert compatible_objectives(pgplug.A2C) == ["policy_gradient"]
    with pytest.raises(IncompatibleObjectiveError, match=r"objectives that fit a2c: policy_gradient$"):
        pgplug.A2C("MlpPolicy", "CartPole-v1", objective="behavioural_cloning")


def test_an_objectives_declared_estimators_are_enforced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(PolicyGradient, "supported_estimators", frozenset({"gae", "td"}))
    with pytest.raises(IncompatibleEstimatorError, match=r"estimators that fit: gae, td$"):
        pgplug.A2C("MlpPolicy", "CartPole-v1", estimator="nstep")
    pgplug.A2C("MlpPolicy", "CartPole-v1", estimator="td")


def test_an_unknown_objective_lists_the_registered_ones() -> None:
    with pytest.raises(PgplugError, match="unknown objective 'ppo'; valid objectives: behavioural_cloning, "):
        pgplug.A2C("MlpPolicy", "CartPole-v1", objective="ppo")
