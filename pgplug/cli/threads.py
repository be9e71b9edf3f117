"""``--num-threads`` and the header line saying how many torch threads a command runs on and why.

The choice itself is :mod:`pgplug.runtime.threads` (A3C's workers make it too).
"""

from __future__ import annotations

import argparse

import torch as th
from torch import nn

from pgplug.runtime.threads import choose_num_threads, idle_cores, is_convolutional

__all__ = ["add_num_threads_argument", "choose_num_threads", "idle_cores", "is_convolutional", "set_num_threads"]


def set_num_threads(requested: int, policy: nn.Module | None, worker_threads: int | None = None) -> str:
    """Set torch's intra-op threads (:func:`choose_num_threads`); returns the line a command prints in its header.

    :param worker_threads: the threads of each worker process, for an algorithm that runs workers (A3C, which
        chooses them itself); None for one that does not
    """
    n, reason = choose_num_threads(requested, policy)
    if n != th.get_num_threads():
        th.set_num_threads(n)
    if worker_threads is None:
        return f"torch threads: {n} ({reason}; --num-threads N to change)"
    return (
        f"torch threads: {worker_threads} in each worker, {n} in the driver "
        f"({reason} in the driver; --num-threads N to change it)"
    )


def add_num_threads_argument(parser: argparse.ArgumentParser) -> None:
    """``--num-threads``, shared by the commands that run a policy."""
    parser.add_argument(
        "--num-threads",
        type=int,
        default=-1,
        help="torch threads (default -1: chosen from the policy, 1 for MLP policies; the header says which)",
    )
