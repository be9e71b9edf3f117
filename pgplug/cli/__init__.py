"""The ``pgplug`` command line: the parser, sub-command dispatch and one-line user errors.

Each sub-command is a module with ``HELP``, ``add_arguments(parser, host)`` and ``run(args) -> int``,
and optionally ``ALIASES`` (other names for the command, e.g. the zoo's ``enjoy`` for ``eval``).
Plugins named with ``--plugin`` are loaded before the parser is built, so their algorithms,
estimators and ``pgplug_addoption`` options are there from the start.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import ModuleType

from pgplug import __version__
from pgplug.cli import optimize
from pgplug.cli.signals import exit_code, stop_signals_interrupt
from pgplug.errors import PgplugError, PgplugWarning, one_line
from pgplug.runtime.runners import FAST_PATHS_ENV_VAR

COMMANDS: dict[str, str] = {
    "train": "pgplug.cli.train",
    "eval": "pgplug.cli.evaluate",
    "bc": "pgplug.cli.bc",
    "list": "pgplug.cli.list_plugins",
    "plot": "pgplug.cli.plot",
    "variance": "pgplug.cli.variance",
}
#: The commands that run a policy, and so take ``--no-fast-paths``.
RUNS_POLICIES = ("train", "eval", "bc", "variance")


class UsageError(PgplugError):
    """A command line argparse could not parse."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse that raises :class:`UsageError` instead of printing the usage and exiting."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(f"{message} (see '{self.prog} --help')")


def add_plugin_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="MODULE_OR_FILE",
        help="load a plugin module or .py file first (repeatable; PGPLUG_PLUGINS works too)",
    )


def add_fast_paths_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-fast-paths",
        action="store_true",
        help=f"run SB3's own code instead of pgplug's speed paths (as {FAST_PATHS_ENV_VAR}=0 does)",
    )


@contextmanager
def fast_paths_switch(off: bool) -> Iterator[None]:
    """``--no-fast-paths``: ``PGPLUG_FAST_PATHS=0`` while the command runs (worker processes inherit it)."""
    if not off:
        yield
        return
    previous = os.environ.get(FAST_PATHS_ENV_VAR)
    os.environ[FAST_PATHS_ENV_VAR] = "0"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(FAST_PATHS_ENV_VAR, None)
        else:
            os.environ[FAST_PATHS_ENV_VAR] = previous


@contextmanager
def one_line_warnings() -> Iterator[None]:
    """pgplug's warnings (:class:`PgplugWarning`) as one ``pgplug: warning: ...`` line on stderr each, once;
    other warnings as Python shows them."""
    shown: set[str] = set()
    show_other = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None) -> None:  # warnings.showwarning's
        if not issubclass(category, PgplugWarning):
            show_other(message, category, filename, lineno, file, line)
        elif one_line(message) not in shown:
            shown.add(one_line(message))
            print(f"pgplug: warning: {one_line(message)}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.simplefilter("always", PgplugWarning)
        warnings.showwarning = show
        yield


def load_plugins(argv: Sequence[str]) -> None:
    """Load the ``--plugin`` modules named anywhere on the command line."""
    from pgplug.contracts.registries import get_host

    pre = argparse.ArgumentParser(add_help=False)
    add_plugin_option(pre)
    known, _ = pre.parse_known_args(list(argv))
    host = get_host()
    for spec in known.plugin:
        host.load_local(spec)


def build_parser() -> tuple[ArgumentParser, dict[str, ModuleType]]:
    from pgplug.contracts.registries import get_host

    host = get_host()
    parser = ArgumentParser(
        prog="pgplug",
        description="Policy-gradient algorithms and advantage estimators as plugins on Stable-Baselines3.",
    )
    parser.add_argument("--version", action="version", version=f"pgplug {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    modules = {}
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        aliases = list(getattr(module, "ALIASES", ()))
        sub = subparsers.add_parser(name, aliases=aliases, help=module.HELP, description=module.HELP)
        sub.set_defaults(command=name)  # an alias runs, and is reported to plugins as, its command
        module.add_arguments(sub, host)
        if name == "train":
            optimize.add_arguments(sub)  # train --optimize runs pgplug.cli.optimize instead of train
        add_plugin_option(sub)
        if name in RUNS_POLICIES:
            add_fast_paths_option(sub)
        host.call_checked("pgplug_addoption", parser=sub, command=name)
        modules[name] = module
    return parser, modules


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``pgplug``; returns the exit code (0 ok, 1 a bad value, 2 a bad command line)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        with one_line_warnings():
            load_plugins(argv)
            parser, modules = build_parser()
            args = parser.parse_args(argv)
            from pgplug.contracts.registries import get_host

            get_host().call_checked("pgplug_configure", args=args, command=args.command)
            with fast_paths_switch(getattr(args, "no_fast_paths", False)), stop_signals_interrupt():
                run = optimize.run if getattr(args, "optimize", False) else modules[args.command].run
                return run(args)
    except PgplugError as exc:
        print(f"pgplug: error: {one_line(exc)}", file=sys.stderr)
        return 2 if isinstance(exc, UsageError) else 1
    except OSError as exc:  # a full disk, a read-only folder: the system's own words, on one line
        print(f"pgplug: error: {one_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        print("pgplug: interrupted", file=sys.stderr)
        return exit_code(exc)
    except SystemExit as exc:  # --help and --version
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        raise
