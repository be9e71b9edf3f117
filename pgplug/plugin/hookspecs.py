"""The hooks a pgplug plugin can implement.

Built-in estimators, objectives, algorithms and worker backends implement these exactly as a
third-party plugin does. Every hook is prefixed ``pgplug_`` and receives its arguments by keyword.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("pgplug")
hookimpl = pluggy.HookimplMarker("pgplug")


@hookspec
def pgplug_register_estimators(register: Callable[[type], None]) -> None:
    """Register advantage estimators.

    :param register: call it once per estimator class; the class carries its ``name``.
        Registering a name that another plugin registered is an error naming both plugins.
    """


@hookspec
def pgplug_register_objectives(register: Callable[[type], None]) -> None:
    """Register objectives, the losses updates minimise (subclasses of :class:`pgplug.contracts.objective.Objective`).

    :param register: call it once per objective class; the class carries its ``name``.
    """


@hookspec
def pgplug_register_algorithms(register: Callable[[type], None]) -> None:
    """Register algorithms (subclasses of :class:`pgplug.contracts.algorithm.Algorithm`, usually through
    :class:`pgplug.runtime.algorithm.PolicyGradientAlgorithm`).

    :param register: call it once per algorithm class; the class carries its ``name``.
    """


@hookspec
def pgplug_register_backends(register: Callable[[type], None]) -> None:
    """Register worker backends: how the workers of an asynchronous algorithm (A3C) run and exchange
    parameters (subclasses of :class:`pgplug.contracts.backend.WorkerBackend`).

    :param register: call it once per backend class; the class carries its ``name``.
    """


@hookspec
def pgplug_addoption(parser: argparse.ArgumentParser, command: str) -> None:
    """Add command-line options to a ``pgplug`` sub-command, in the spirit of ``pytest_addoption``.

    :param parser: the sub-command's parser.
    :param command: the sub-command's name (``train``, ``eval``, ...).
    """


@hookspec
def pgplug_configure(args: argparse.Namespace, command: str) -> None:
    """Read the parsed command line (including options added by ``pgplug_addoption``) before a command runs.

    :param args: the parsed arguments.
    :param command: the sub-command's name.
    """


@hookspec
def pgplug_after_rollout(algorithm: Any, rollout: Any) -> None:
    """Observe a rollout after the estimator has filled its advantages and returns.

    :param algorithm: the algorithm that collected it. Always called in the main process: A3C calls it
        there for each worker rollout, from a copy the worker sends when some plugin implements this hook.
    :param rollout: the :class:`pgplug.contracts.rollout.Rollout`; treat it as read-only, and copy what
        you keep: its tensors are views of buffers the next rollout reuses.
    """


@hookspec
def pgplug_after_update(algorithm: Any, metrics: dict[str, float]) -> None:
    """Observe one gradient update.

    :param algorithm: the algorithm that made the update. Always called in the main process: A3C calls it
        there for every worker update, from the workers' reports.
    :param metrics: the losses and statistics the update logged.
    """
