"""The algorithm contract: what every registered algorithm declares about itself.

An algorithm decides how data is collected and how the update uses it. The registry holds classes
that subclass :class:`Algorithm`; pgplug's own base, :class:`pgplug.runtime.algorithm.PolicyGradientAlgorithm`,
adds the SB3 machinery (policies, vec envs, logger, callbacks, save/load) on top of it.
"""

from __future__ import annotations

from abc import ABC
from collections.abc import Mapping
from typing import ClassVar

from pgplug.contracts.search import Distribution
from pgplug.plugin.registry import RegistryKind


class Algorithm(ABC):
    """The class attributes every algorithm declares.

    :cvar name: the registered name (``--algo``, ``pgplug.load(algo=...)``)
    :cvar default_estimator: the estimator used when none is given
    :cvar accepts_episode_estimators: False for algorithms that cut episodes into fixed-length rollouts
        (A2C, A3C): they refuse estimators that need complete episodes
    :cvar supported_estimators: the estimators it can use: None for any (subject to
        ``accepts_episode_estimators``), or a set of names
    :cvar default_objective: the objective used when none is given
    :cvar supported_objectives: the objectives its update can minimise: None for any, or a set of names
        (an update that steps several times on one rollout needs a ratio objective, say)
    :cvar sb3_counterpart: the SB3 algorithm (a :func:`pgplug.interop.compat.algorithm_names` name such as
        ``sb3_a2c``) whose zips this class opens as its own
    :cvar search_space: what ``pgplug train --optimize`` searches (:mod:`pgplug.contracts.search`), a dotted key
        naming an entry of a mapping (``policy_kwargs.net_arch``); empty: the algorithm is not searched. The
        estimator is searched besides, over the estimators that fit
    """

    name: ClassVar[str]
    default_estimator: ClassVar[str]
    accepts_episode_estimators: ClassVar[bool] = True
    supported_estimators: ClassVar[frozenset[str] | None] = None
    default_objective: ClassVar[str] = "policy_gradient"
    supported_objectives: ClassVar[frozenset[str] | None] = None
    sb3_counterpart: ClassVar[str | None] = None
    search_space: ClassVar[Mapping[str, Distribution]] = {}


#: The algorithm registry: filled by ``pgplug_register_algorithms``.
ALGORITHMS = RegistryKind("algorithm", "pgplug_register_algorithms", Algorithm)
