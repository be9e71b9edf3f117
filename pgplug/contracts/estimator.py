"""The estimator contract: what every advantage estimator receives, returns and declares.

An estimator turns a time-major rollout (``T`` steps × ``N`` envs) into Ψ_t, the factor that
multiplies ∇log π(a_t|s_t), and, where it has a critic, the critic's regression target.
Conventions (docs/estimators.md): ``episode_starts[t]`` marks s_t as the first state of an episode;
the step t *ended* an episode when ``episode_starts[t + 1]`` (or ``last_dones`` for the last step);
at a time-limit truncation the reward already carries γ·V(terminal observation).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch as th

from pgplug.contracts.parameters import Parametrised
from pgplug.contracts.search import Distribution
from pgplug.errors import PgplugError
from pgplug.plugin.registry import RegistryKind
from pgplug.validation import check_gamma

ArrayLike = np.ndarray | th.Tensor

#: The estimator argument every estimator takes: keep the exact discounted gradient's γ^t (:attr:`Estimator.gamma_t`).
GAMMA_T = "gamma_t"


@dataclass(frozen=True)
class Estimate:
    """Ψ_t for the policy gradient and, for critic estimators, the critic's targets; both ``[T, N]``."""

    advantages: th.Tensor
    returns: th.Tensor | None


def as_tensor(x: ArrayLike | None) -> th.Tensor | None:
    """Float32 tensor view of a numpy array or tensor (no copy when already float32)."""
    if x is None:
        return None
    if type(x) is th.Tensor and x.dtype is th.float32:  # the rollout's own rows, at every update
        return x
    return th.as_tensor(x).to(th.float32)


def episode_ends(episode_starts: th.Tensor, last_dones: th.Tensor) -> th.Tensor:
    """``done[t] = 1`` where step t ended an episode: ``episode_starts[t+1]``, and ``last_dones`` at T−1."""
    return th.cat([episode_starts[1:], last_dones.reshape(1, -1)], dim=0)


def episode_time(episode_starts: th.Tensor, first_times: th.Tensor | None = None) -> th.Tensor:
    """t of each step, ``[T, N]``: steps since its episode began, 0 at an episode start.

    Steps before an env's first episode start in the rollout count on from ``first_times`` (``[N]``, the steps that
    env's episode had already run when the rollout began; None: 0, the rollout begins fresh episodes).
    """
    index = th.arange(episode_starts.shape[0], dtype=th.float32).unsqueeze(1).expand(episode_starts.shape)
    no_start = th.full_like(index, -1.0)
    last_start = th.cummax(th.where(episode_starts.bool(), index, no_start), dim=0).values
    before_first = index if first_times is None else index + first_times.reshape(1, -1).to(th.float32)
    return th.where(last_start >= 0, index - last_start, before_first)


def _described(value: object) -> str:
    """A value as messages show it: an array's kind, dtype and shape, not its numbers (one short line)."""
    if isinstance(value, th.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    if isinstance(value, np.ndarray):
        return f"a {value.dtype} numpy array of shape {value.shape}"
    return "None" if value is None else f"a {type(value).__name__}"


def _flat(x: th.Tensor) -> th.Tensor:
    return x if x.ndim == 1 else x.reshape(-1)


class Estimator(Parametrised, ABC):
    """Base class of advantage estimators; subclasses set the class attributes and ``estimate``.

    :cvar search_space: the values ``pgplug train --optimize`` tries for constructor arguments
        (:mod:`pgplug.contracts.search`); arguments not listed keep their defaults
    :ivar gamma_t: multiply Ψ_t by γ^t, t the step's time in its episode (:func:`episode_time`): the exact gradient
        of the discounted objective E[Σ_t γ^t r_t], which the usual estimators (and SB3) drop. Off by default; every
        estimator, a third-party one too, takes it as the argument ``gamma_t=True``
        (:func:`pgplug.contracts.registries.make_estimator`). The critic's targets are unchanged.
    """

    name: ClassVar[str]
    needs_critic: ClassVar[bool] = False
    needs_complete_episodes: ClassVar[bool] = False
    search_space: ClassVar[Mapping[str, Distribution]] = {}
    gamma_t: bool = False

    def params(self) -> dict[str, object]:
        """The constructor arguments, and ``gamma_t`` when it is on (so a saved config rebuilds it)."""
        params = super().params()
        if self.gamma_t:
            params[GAMMA_T] = True
        return params

    @property
    def equivalent_gae_lambda(self) -> float | None:
        """The λ for which this estimator computes exactly GAE(λ), or None: SB3's ``gae_lambda`` of an algorithm
        using it (SB3 computes nothing else), saved so that SB3 continues a pgplug model the same way."""
        return None

    def __call__(
        self,
        *,
        rewards: ArrayLike,
        episode_starts: ArrayLike,
        last_dones: ArrayLike,
        gamma: float,
        values: ArrayLike | None = None,
        last_values: ArrayLike | None = None,
        first_step_times: ArrayLike | None = None,
    ) -> Estimate:
        """Validate and convert the inputs, then :meth:`estimate` (then γ^t, with :attr:`gamma_t`).

        :param first_step_times: ``[N]``, the steps each env's episode had run when the rollout began (only
            :attr:`gamma_t` reads it; None: the rollout begins fresh episodes)
        """
        rewards_t = as_tensor(rewards)
        assert rewards_t is not None
        if rewards_t.ndim != 2:
            raise PgplugError(f"rewards must be time-major [T, n_envs], got shape {tuple(rewards_t.shape)}")
        values_t, last_values_t = as_tensor(values), as_tensor(last_values)
        starts_t = as_tensor(episode_starts)
        for name, x in (("values", values_t), ("episode_starts", starts_t)):
            if x is not None and x.shape != rewards_t.shape:
                raise PgplugError(
                    f"{name} must have the shape of rewards {tuple(rewards_t.shape)}, not {tuple(x.shape)}"
                )
        if self.needs_critic and (values_t is None or last_values_t is None):
            raise PgplugError(f"estimator {self.name!r} needs the critic's values and last_values")
        estimate = self.estimate(
            rewards=rewards_t,
            values=values_t,
            episode_starts=starts_t,
            last_values=None if last_values_t is None else _flat(last_values_t),
            last_dones=_flat(as_tensor(last_dones)),
            gamma=check_gamma(gamma),
        )
        estimate = self.check_estimate(estimate, rewards_t.shape)
        if not self.gamma_t:
            return estimate
        discount = th.pow(gamma, episode_time(starts_t, as_tensor(first_step_times)))
        return Estimate(estimate.advantages * discount, estimate.returns)

    def check_estimate(self, estimate: object, shape: th.Size) -> Estimate:
        """``estimate`` if it keeps the contract: an :class:`Estimate` of float tensors shaped ``[T, n_envs]`` like the
        rewards, with the critic's targets when the estimator has a critic (and None or such a tensor otherwise).

        The one place a plugin's output is checked, so a wrong one is a line naming the plugin, not a shape error
        deep inside the update.
        """
        who = f"estimator {self.name!r} ({type(self).__module__}.{type(self).__qualname__})"
        if not isinstance(estimate, Estimate):
            raise PgplugError(f"{who} returned {_described(estimate)}, not an Estimate(advantages, returns)")
        expected = f"a float tensor of shape {tuple(shape)} ([T, n_envs], as the rewards)"
        for field, value in (("advantages", estimate.advantages), ("returns", estimate.returns)):
            if value is None and (field == "advantages" or self.needs_critic):
                raise PgplugError(f"{who} returned no {field} (None); expected {expected}")
            if value is not None and not (
                isinstance(value, th.Tensor) and value.shape == shape and value.is_floating_point()
            ):
                raise PgplugError(f"{who} returned {field} as {_described(value)}; expected {expected}")
        return estimate

    @abstractmethod
    def estimate(
        self,
        *,
        rewards: th.Tensor,
        values: th.Tensor | None,
        episode_starts: th.Tensor,
        last_values: th.Tensor | None,
        last_dones: th.Tensor,
        gamma: float,
    ) -> Estimate:
        """Compute Ψ_t (and critic targets) from float32 tensors of shape ``[T, N]`` / ``[N]``."""


#: The estimator registry: filled by ``pgplug_register_estimators``.
ESTIMATORS = RegistryKind("estimator", "pgplug_register_estimators", Estimator)
