"""Which estimators, objectives and algorithms fit together, from the sets each declares (as TorchRL's losses
declare their value estimators), and the one-line refusal that names what fits."""

from __future__ import annotations

from pgplug.contracts.algorithm import Algorithm
from pgplug.contracts.estimator import Estimator
from pgplug.contracts.objective import Objective
from pgplug.contracts.registries import get_host
from pgplug.errors import IncompatibleEstimatorError, IncompatibleObjectiveError


def estimator_fits(algorithm: type[Algorithm], objective: type[Objective] | None, estimator: type[Estimator]) -> bool:
    """Whether ``estimator`` fits ``algorithm`` (and ``objective``, when given)."""
    if estimator.needs_complete_episodes and not algorithm.accepts_episode_estimators:
        return False
    for declared in (algorithm.supported_estimators, None if objective is None else objective.supported_estimators):
        if declared is not None and estimator.name not in declared:
            return False
    return True


def compatible_estimators(algorithm: type[Algorithm], objective: type[Objective] | None = None) -> list[str]:
    """Names of the registered estimators that fit ``algorithm`` (and ``objective``)."""
    return [e.name for e in get_host().estimators if estimator_fits(algorithm, objective, e.cls)]


def objective_fits(algorithm: type[Algorithm], objective: type[Objective]) -> bool:
    """Whether ``algorithm`` can minimise ``objective``: declared by the algorithm, and taking an estimator's Ψ
    (an algorithm estimates Ψ from its rollouts; an objective with a fixed Ψ, as cloning's, is for expert data)."""
    declared = algorithm.supported_objectives
    return (declared is None or objective.name in declared) and objective.supported_estimators != frozenset()


def compatible_objectives(algorithm: type[Algorithm]) -> list[str]:
    """Names of the registered objectives ``algorithm`` can minimise."""
    return [o.name for o in get_host().objectives if objective_fits(algorithm, o.cls)]


def check_fits(algorithm: type[Algorithm], objective: Objective, estimator: Estimator | None) -> None:
    """Refuse, in one line naming what fits, an objective or estimator that ``algorithm`` cannot combine."""
    name = algorithm.name
    declared = algorithm.supported_objectives
    if declared is not None and objective.name not in declared:
        raise IncompatibleObjectiveError(
            f"objective {objective.name!r} does not fit {name}; objectives that fit {name}: "
            f"{', '.join(compatible_objectives(algorithm)) or '(none registered)'}"
        )
    if estimator is None:
        return
    uses = objective.supported_estimators
    if uses is not None and not uses:
        raise IncompatibleObjectiveError(
            f"objective {objective.name!r} takes no estimator (its Ψ is fixed), so {name} cannot use it with "
            f"estimator {estimator.name!r}; objectives that fit {name}: {', '.join(compatible_objectives(algorithm))}"
        )
    if estimator_fits(algorithm, type(objective), type(estimator)):
        return
    fitting = ", ".join(compatible_estimators(algorithm, type(objective))) or "(none registered)"
    if estimator.needs_complete_episodes and not algorithm.accepts_episode_estimators:
        raise IncompatibleEstimatorError(
            f"estimator {estimator.name!r} needs complete episodes, which {name} cuts into rollouts; "
            f"estimators that fit {name}: {fitting}"
        )
    raise IncompatibleEstimatorError(
        f"estimator {estimator.name!r} does not fit {name} with objective {objective.name!r}; "
        f"estimators that fit: {fitting}"
    )
