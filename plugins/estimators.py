"""The six built-in advantage estimators, registered through the same hook a third-party plugin uses.

Each class is a thin, validated wrapper over a pure function of :mod:`pgplug.plugins.estimator_math`.
"""

from __future__ import annotations

import numbers

import numpy as np

from pgplug.contracts.estimator import Estimate, Estimator, episode_ends
from pgplug.contracts.search import Choice, OneMinusLog
from pgplug.errors import PgplugError
from pgplug.plugin.hookspecs import hookimpl
from pgplug.plugins import estimator_math as math
from pgplug.validation import check_unit_interval


class FullReturn(Estimator):
    """Ψ_t = G(τ), the whole episode's discounted return, for every step (vanilla REINFORCE)."""

    name = "full_return"
    needs_complete_episodes = True

    def estimate(self, *, rewards, values, episode_starts, last_values, last_dones, gamma) -> Estimate:
        dones = episode_ends(episode_starts, last_dones)
        return Estimate(math.full_return(rewards, episode_starts, dones, gamma), None)


class RewardToGo(Estimator):
    """Ψ_t = Σ_{k≥t} γ^{k−t} r_k to the episode's end (causality: actions only affect later rewards)."""

    name = "reward_to_go"
    needs_complete_episodes = True

    def estimate(self, *, rewards, values, episode_starts, last_values, last_dones, gamma) -> Estimate:
        dones = episode_ends(episode_starts, last_dones)
        return Estimate(math.reward_to_go(rewards, dones, gamma), None)


class Baseline(Estimator):
    """Ψ_t = reward-to-go − V(s_t); the critic regresses on the Monte-Carlo reward-to-go."""

    name = "baseline"
    needs_critic = True
    needs_complete_episodes = True

    def estimate(self, *, rewards, values, episode_starts, last_values, last_dones, gamma) -> Estimate:
        dones = episode_ends(episode_starts, last_dones)
        to_go = math.reward_to_go(rewards, dones, gamma)
        return Estimate(to_go - values, to_go)


class TD(Estimator):
    """Ψ_t = δ_t = r_t + γV(s_{t+1}) − V(s_t), the one-step TD advantage."""

    name = "td"
    needs_critic = True

    @property
    def equivalent_gae_lambda(self) -> float:
        return 0.0  # GAE(0)

    def estimate(self, *, rewards, values, episode_starts, last_values, last_dones, gamma) -> Estimate:
        dones = episode_ends(episode_starts, last_dones)
        target = math.td_target(rewards, values, dones, last_values, gamma)
        return Estimate(target - values, target)


class NStep(Estimator):
    """Ψ_t = G_t^(n) − V(s_t), the n-step advantage; n=None looks ahead to the rollout's end (A3C)."""

    name = "nstep"
    needs_critic = True
    search_space = {"n": Choice(1, 2, 4, 8, 16, 32, None)}

    def __init__(self, n: int | None = None) -> None:
        if n is not None and (isinstance(n, (bool, np.bool_)) or not isinstance(n, numbers.Integral) or n < 1):
            raise PgplugError(f"nstep's n must be an integer >= 1 or None (to the rollout's end), got {n!r}")
        self.n = None if n is None else int(n)

    @property
    def equivalent_gae_lambda(self) -> float | None:
        return 1.0 if self.n is None else None  # the forward view to the rollout's end is GAE(1)

    def estimate(self, *, rewards, values, episode_starts, last_values, last_dones, gamma) -> Estimate:
        dones = episode_ends(episode_starts, last_dones)
        target = math.nstep_return(rewards, values, dones, last_values, gamma, self.n)
        return Estimate(target - values, target)


class GAE(Estimator):
    """Ψ_t = Σ_l (γλ)^l δ_{t+l}, generalised advantage estimation; the critic targets Ψ_t + V(s_t)."""

    name = "gae"
    needs_critic = True
    search_space = {"gae_lambda": OneMinusLog(1e-4, 0.1)}  # rl-baselines3-zoo's one_minus_gae_lambda

    def __init__(self, gae_lambda: float = 0.95) -> None:
        self.gae_lambda = check_unit_interval("gae's gae_lambda", gae_lambda)

    @property
    def equivalent_gae_lambda(self) -> float:
        return self.gae_lambda

    def estimate(self, *, rewards, values, episode_starts, last_values, last_dones, gamma) -> Estimate:
        dones = episode_ends(episode_starts, last_dones)
        advantages = math.gae_advantage(rewards, values, dones, last_values, gamma, self.gae_lambda)
        return Estimate(advantages, advantages + values)


ESTIMATORS: tuple[type[Estimator], ...] = (FullReturn, RewardToGo, Baseline, TD, NStep, GAE)


@hookimpl
def pgplug_register_estimators(register) -> None:
    for cls in ESTIMATORS:
        register(cls)


__all__ = ["ESTIMATORS", "GAE", "TD", "Baseline", "FullReturn", "NStep", "RewardToGo"]
