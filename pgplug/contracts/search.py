"""How a plugin declares the values a hyperparameter search tries for its constructor arguments.

An estimator lists them in its ``search_space`` class attribute, ``{argument: distribution}``
(``GAE.search_space = {"gae_lambda": OneMinusLog(1e-4, 0.1)}``), so ``pgplug train --optimize``
searches a third-party estimator's arguments as it searches the built-in ones; arguments not listed
keep their defaults. The distributions are plain data: the search (:mod:`pgplug.interop.search_space`)
turns them into Optuna's ``suggest_*`` calls, so a plugin does not import Optuna.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pgplug.errors import PgplugError


@dataclass(frozen=True)
class Choice:
    """One of ``values`` (numbers, strings, booleans or None), as Optuna's ``suggest_categorical``."""

    values: tuple[Any, ...]

    def __init__(self, *values: Any) -> None:
        if not values or not all(v is None or isinstance(v, (bool, int, float, str)) for v in values):
            raise PgplugError(f"Choice takes one or more numbers, strings, booleans or None, got {values!r}")
        object.__setattr__(self, "values", tuple(values))


@dataclass(frozen=True)
class Named:
    """One of ``options``' values, searched by its label (a ``policy_kwargs`` network, say)."""

    options: Mapping[str, Any]


@dataclass(frozen=True)
class FloatRange:
    """A float in ``[low, high]``, on a log scale when ``log``."""

    low: float
    high: float
    log: bool = False


@dataclass(frozen=True)
class IntRange:
    """An integer in ``[low, high]``, on a log scale when ``log``."""

    low: int
    high: int
    log: bool = False


@dataclass(frozen=True)
class OneMinusLog:
    """``1 − x`` with ``x`` in ``[low, high]`` on a log scale: a value close to 1 (γ, λ), searched as the zoo does
    (its ``one_minus_gamma``)."""

    low: float
    high: float


Distribution = Choice | Named | FloatRange | IntRange | OneMinusLog


def check_search_space(owner: str, space: object) -> Mapping[str, Distribution]:
    """``space`` if it maps argument names to distributions; one line naming ``owner`` otherwise."""
    kinds = (Choice, Named, FloatRange, IntRange, OneMinusLog)
    if not isinstance(space, Mapping) or not all(isinstance(k, str) and isinstance(v, kinds) for k, v in space.items()):
        raise PgplugError(
            f"{owner}'s search_space must map argument names to Choice, Named, FloatRange, IntRange or OneMinusLog "
            f"(pgplug.contracts.search), got {space!r}"
        )
    return space
