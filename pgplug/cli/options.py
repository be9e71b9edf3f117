"""Argument types and option groups shared by the ``pgplug`` sub-commands.

The value types apply the rules of :mod:`pgplug.validation`, so a flag refuses what the Python API refuses.
"""

from __future__ import annotations

import argparse

from pgplug.errors import PgplugError
from pgplug.validation import check_positive_int


def positive_int(text: str) -> int:
    """A whole number ≥ 1 (``3``)."""
    try:
        return check_positive_int("value", int(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    except PgplugError:
        raise argparse.ArgumentTypeError(f"not a positive number: {text!r}") from None


def non_negative_int(text: str) -> int:
    """``0`` or a whole number ≥ 1."""
    return 0 if text.strip() == "0" else positive_int(text)


def timesteps(text: str) -> int:
    """A number of timesteps: ``100000``, ``100_000`` and ``1e5`` all mean the same."""
    try:
        value = float(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of timesteps: {text!r}") from None
    if not value.is_integer() or value < 1:
        raise argparse.ArgumentTypeError(f"not a positive whole number of timesteps: {text!r}")
    return int(value)


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"not a positive number: {text!r}")
    return value


def add_trust_argument(parser: argparse.ArgumentParser) -> None:
    """``--trust-file``: the one way to let the files a command opens run code (pickles, modules they name)."""
    parser.add_argument(
        "--trust-file",
        action="store_true",
        help="open the given model zips, VecNormalize statistics and run folders as SB3 does, running the code "
        "their pickles and configs name: only for files you trust (default: read them as data only)",
    )


def add_config_arguments(parser: argparse.ArgumentParser, hyperparams_help: str) -> None:
    """Where a run's hyperparameters come from and where it is saved (shared by ``train`` and ``bc``)."""
    parser.add_argument("-params", "--hyperparams", nargs="+", default=[], metavar="KEY=VALUE", help=hyperparams_help)
    parser.add_argument("-conf", "--conf-file", help="YAML config to read instead of the built-in configs/<algo>.yml")
    parser.add_argument("-f", "--log-folder", default="logs", help="root folder of the runs (default: logs)")
