"""``pgplug list``: the registered algorithms, objectives, estimators and worker backends, where each comes from
and what it needs or fits."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from pgplug.contracts.compatibility import compatible_estimators, compatible_objectives
from pgplug.contracts.registries import Host, get_host

HELP = "list the registered algorithms, objectives, estimators and worker backends"


def add_arguments(parser: argparse.ArgumentParser, host: Host) -> None:
    """``list`` has no options of its own (``--plugin`` is added for every command)."""


def estimator_needs(cls: type) -> str:
    needs = [
        label
        for attr, label in (("needs_critic", "critic"), ("needs_complete_episodes", "complete episodes"))
        if getattr(cls, attr, False)
    ]
    return ", ".join(needs) or "-"


def algorithm_fits(cls: type) -> str:
    return f"estimators: {', '.join(compatible_estimators(cls))}; objectives: {', '.join(compatible_objectives(cls))}"


def objective_fits(cls: type) -> str:
    declared = cls.supported_estimators
    if declared is None:
        return "estimators: any"
    return f"estimators: {', '.join(sorted(declared))}" if declared else "no estimator (fixed Ψ)"


def backend_fits(cls: type) -> str:
    return "workers: any number" if cls.max_workers is None else f"workers: at most {cls.max_workers}"


def plugin_table(host: Host) -> Table:
    table = Table(title="pgplug plugins", title_justify="left")
    table.add_column("name", no_wrap=True, style="bold")
    table.add_column("kind", no_wrap=True)
    table.add_column("source", overflow="fold")
    table.add_column("needs / fits", overflow="fold")
    table.add_column("description", overflow="fold")
    for registry, kind, fits in (
        (host.algorithms, "algorithm", algorithm_fits),
        (host.objectives, "objective", objective_fits),
        (host.estimators, "estimator", estimator_needs),
        (host.backends, "backend", backend_fits),
    ):
        for entry in registry:
            table.add_row(entry.name, kind, entry.source, fits(entry.cls), entry.description)
    return table


def run(args: argparse.Namespace) -> int:
    Console().print(plugin_table(get_host()))
    return 0
