"""Drawing a trial's hyperparameters for ``pgplug train --optimize``, rl-baselines3-zoo's ``hyperparams_opt.py`` made
generic: each algorithm declares its space (``search_space``, data of :mod:`pgplug.contracts.search`), and the advantage
estimator and its arguments are searched too.

The estimator is a categorical over the registered estimators that fit the algorithm and its objective
(:func:`pgplug.contracts.compatibility.compatible_estimators`), so a plugin's estimator is searched as the built-in ones
are, with the arguments its ``search_space`` declares. :func:`sample` draws one trial's hyperparameters as config data
(what a ``configs/<algo>.yml`` entry holds) through Optuna's ``trial.suggest_*`` (the trial is duck-typed: this module
does not import Optuna).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from pgplug.contracts.compatibility import compatible_estimators
from pgplug.contracts.registries import get_host
from pgplug.contracts.search import Choice, Distribution, FloatRange, IntRange, Named, check_search_space
from pgplug.errors import PgplugError


class Trial(Protocol):
    """What :func:`sample` asks of an Optuna trial."""

    def suggest_categorical(self, name: str, choices: Any) -> Any: ...
    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False) -> float: ...
    def suggest_int(self, name: str, low: int, high: int, *, log: bool = False) -> int: ...


#: The hyperparameters that choose the estimator: SB3's ``gae_lambda`` (A2C) selects GAE(λ) too.
ESTIMATOR_KEYS = ("estimator", "estimator_kwargs", "gae_lambda")


def algorithms_with_spaces() -> list[str]:
    """The registered algorithms that declare a search space."""
    return [entry.name for entry in get_host().algorithms if getattr(entry.cls, "search_space", None)]


def space_of(algorithm: type) -> Mapping[str, Distribution]:
    """The space ``algorithm`` declares; one line naming the algorithms that declare one otherwise."""
    space = getattr(algorithm, "search_space", None)
    if not space:
        raise PgplugError(
            f"algorithm {algorithm.name!r} declares no hyperparameter search space (search_space); algorithms with "
            f"one: {', '.join(algorithms_with_spaces()) or '(none)'}"
        )
    return check_search_space(f"algorithm {algorithm.name!r}", space)


def estimator_choices(algorithm: type, objective: str | None = None) -> list[str]:
    """The registered estimators that fit ``algorithm`` with ``objective`` (default: the algorithm's own)."""
    objective_cls = get_host().objectives.get(objective or algorithm.default_objective)
    return compatible_estimators(algorithm, objective_cls)


def suggest(trial: Trial, name: str, distribution: Distribution) -> Any:
    """One value of ``distribution``, recorded by the trial under ``name``."""
    if isinstance(distribution, Choice):
        return trial.suggest_categorical(name, list(distribution.values))
    if isinstance(distribution, Named):
        return distribution.options[trial.suggest_categorical(name, list(distribution.options))]
    if isinstance(distribution, FloatRange):
        return trial.suggest_float(name, distribution.low, distribution.high, log=distribution.log)
    if isinstance(distribution, IntRange):
        return trial.suggest_int(name, distribution.low, distribution.high, log=distribution.log)
    prefix, _, last = name.rpartition(":")
    searched = f"{prefix}:one_minus_{last}" if prefix else f"one_minus_{last}"
    return 1.0 - trial.suggest_float(searched, distribution.low, distribution.high, log=True)


def put(hyperparams: dict[str, Any], key: str, value: Any) -> None:
    """Set ``key`` (``policy_kwargs.net_arch``: an entry of a mapping, kept beside its other entries)."""
    head, _, rest = key.partition(".")
    if not rest:
        hyperparams[head] = value
        return
    inner = hyperparams.get(head)
    hyperparams[head] = inner = dict(inner) if isinstance(inner, Mapping) else {}
    put(inner, rest, value)


def sample_estimator(trial: Trial, names: list[str], fixed_name: str | None = None) -> dict[str, Any]:
    """``estimator`` and ``estimator_kwargs``: a categorical over ``names`` (or ``fixed_name``), then the arguments
    the chosen estimator's ``search_space`` declares, recorded as ``<estimator>:<argument>``."""
    name = fixed_name or trial.suggest_categorical("estimator", names)
    cls = get_host().estimators.get(name)
    space = check_search_space(f"estimator {name!r}", cls.search_space)
    kwargs = {arg: suggest(trial, f"{name}:{arg}", distribution) for arg, distribution in space.items()}
    return {"estimator": name, "estimator_kwargs": kwargs}


def sample(
    trial: Trial, algorithm: type, base: Mapping[str, Any], fixed: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """One trial's hyperparameters over ``base`` (the config entry and the command line's overrides), as config data.

    :param fixed: what the command line set, which is not searched (``estimator`` fixes the estimator but not its
        arguments; non-empty ``estimator_kwargs``, or ``gae_lambda``, fix both)
    """
    fixed = fixed or {}
    hyperparams = {k: v for k, v in base.items() if k not in ESTIMATOR_KEYS or k in fixed}
    for key, distribution in space_of(algorithm).items():
        if key.partition(".")[0] not in fixed:
            put(hyperparams, key, suggest(trial, key.rpartition(".")[2], distribution))
    if not fixed.get("estimator_kwargs") and "gae_lambda" not in fixed:
        fixed_name = base.get("estimator") if "estimator" in fixed else None
        objective = base.get("objective")
        names = estimator_choices(algorithm, objective if isinstance(objective, str) else None)
        hyperparams.update(sample_estimator(trial, names, fixed_name))
    return hyperparams
