"""Argument types and option groups shared by the ``pgplug`` sub-commands.

Every value type is a rule of :mod:`pgplug.validation` (:func:`checked`), so a flag refuses what the Python
API and the config reader refuse, in the same words.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from pgplug.errors import PgplugError
from pgplug.validation import (
    Rule,
    check_constant_learning_rate,
    check_device,
    check_non_negative_int,
    check_positive_int,
    check_precision,
    check_seed,
    check_timesteps,
    check_writable_folder,
)

#: The options naming folders a command writes to (argparse ``dest`` → the flag), see :func:`check_output_folders`.
OUTPUT_FOLDERS: dict[str, str] = {
    "log_folder": "-f/--log-folder",
    "tensorboard_log": "-tb/--tensorboard-log",
    "video_folder": "--video-folder",
}


def number(text: str) -> int | float:
    """``3`` → 3, ``1e5`` and ``100_000.0`` → floats (a rule then decides whether a whole float counts)."""
    try:
        return int(text)
    except ValueError:
        return float(text)


def checked(rule: Rule, name: str, parse: Callable[[str], Any] = str) -> Callable[[str], Any]:
    """An argparse type: the text read by ``parse``, then checked by ``rule`` under ``name``.

    Text ``parse`` cannot read goes to the rule as it is, which refuses it in its own words.
    """

    def convert(text: str) -> Any:
        try:
            value = parse(text)
        except ValueError:
            value = text
        try:
            return rule(name, value)
        except PgplugError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = name
    return convert


def positive_int(name: str) -> Callable[[str], int]:
    """A whole number ≥ 1 (``3``)."""
    return checked(check_positive_int, name, int)


def non_negative_int(name: str) -> Callable[[str], int]:
    """``0`` or a whole number ≥ 1."""
    return checked(check_non_negative_int, name, int)


def timesteps(name: str) -> Callable[[str], int]:
    """A number of timesteps: ``100000``, ``100_000`` and ``1e5`` all mean the same; at most 2**53."""
    return checked(check_timesteps, name, number)


def log_interval(text: str) -> int:
    """``--log-interval``: -1 (the algorithm's default) or a whole number ≥ 1 (SB3 divides by it)."""
    return -1 if text.strip() == "-1" else positive_int("log_interval")(text)


#: ``--learning-rate`` of ``pgplug bc`` (a constant: the cloning optimizer takes no schedule).
learning_rate = checked(check_constant_learning_rate, "learning_rate", number)
#: ``--seed``: 0 to 2**32 - 1.
seed = checked(check_seed, "seed", int)
#: ``--device``: ``auto``, ``cpu`` or a device this machine has.
device = checked(check_device, "device")
#: ``--precision``: ``fp32`` or ``bf16``.
precision = checked(check_precision, "precision")


def add_precision_argument(parser: argparse.ArgumentParser) -> None:
    """``--precision``: the policy's forward passes in float32 or with the body in bfloat16 (the model's setting)."""
    parser.add_argument(
        "--precision",
        type=precision,
        help="fp32, or bf16 to run the policy's body (a CNN) under bfloat16 autocast: faster on CPUs with AMX or "
        "AVX-512 BF16, a speed path (refused with --no-fast-paths); default: the config's, else (train, a new "
        "model) bf16 for a CNN policy on a CPU with bfloat16 instructions and fp32 otherwise",
    )


def check_output_folders(args: argparse.Namespace) -> None:
    """Refuse, before anything runs, an output folder (:data:`OUTPUT_FOLDERS`) that cannot be written: a file,
    ``/dev/null``, a read-only folder. Nothing is created: a missing folder is made when the run writes to it."""
    for dest, flag in OUTPUT_FOLDERS.items():
        path = getattr(args, dest, None)
        if path is not None:
            check_writable_folder(flag, path)


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


#: The flags that find a run's model as the zoo's ``enjoy`` does (argparse ``dest`` → the flag).
RUN_FLAGS: dict[str, str] = {
    "folder": "-f/--folder",
    "exp_id": "--exp-id",
    "load_best": "--load-best",
    "load_checkpoint": "--load-checkpoint",
    "load_last_checkpoint": "--load-last-checkpoint",
}


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """rl_zoo3 ``enjoy``'s flags that pick a run's model: ``-f LOGS --exp-id N --load-best ...``."""
    parser.add_argument(
        "-f", "--folder", metavar="LOGS", help="find the model in this log folder, by --algo and --env (default: logs)"
    )
    parser.add_argument(
        "--exp-id",
        type=int,
        metavar="N",
        help="the run <LOGS>/<algo>/<env>_N (default 0: the latest; -1: <LOGS>/<algo> itself)",
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--load-best", action="store_true", help="the run's best_model.zip (of --eval-freq)")
    which.add_argument(
        "--load-checkpoint", type=int, metavar="STEPS", help="the run's checkpoint rl_model_STEPS_steps.zip"
    )
    which.add_argument("--load-last-checkpoint", action="store_true", help="the run's last checkpoint")


def add_progress_argument(parser: argparse.ArgumentParser, help_text: str) -> None:
    """``-P/--progress``, rl_zoo3's flag for a progress display, on every command that runs a policy."""
    parser.add_argument("-P", "--progress", action="store_true", help=help_text)
