"""``pgplug list``: the registered algorithms and estimators, where each comes from and what it needs."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

HELP = "list the registered algorithms and estimators"


def add_arguments(parser: argparse.ArgumentParser, host) -> None:
    """``list`` has no options of its own (``--plugin`` is added for every command)."""


def estimator_needs(cls: type) -> str:
    needs = [
        label
        for attr, label in (("needs_critic", "critic"), ("needs_complete_episodes", "complete episodes"))
        if getattr(cls, attr, False)
    ]
    return ", ".join(needs) or "-"


def algorithm_needs(cls: type) -> str:
    compatible = getattr(cls, "compatible_estimators", None)
    return f"estimators: {', '.join(compatible())}" if callable(compatible) else "-"


def plugin_table(host) -> Table:
    table = Table(title="pgplug plugins", title_justify="left")
    table.add_column("name", no_wrap=True, style="bold")
    table.add_column("kind", no_wrap=True)
    table.add_column("source", overflow="fold")
    table.add_column("needs / fits", overflow="fold")
    table.add_column("description", overflow="fold")
    for entry in host.algorithms:
        table.add_row(entry.name, "algorithm", entry.source, algorithm_needs(entry.cls), entry.description)
    for entry in host.estimators:
        table.add_row(entry.name, "estimator", entry.source, estimator_needs(entry.cls), entry.description)
    return table


def run(args: argparse.Namespace) -> int:
    from pgplug.contracts.registries import get_host

    Console().print(plugin_table(get_host()))
    return 0
