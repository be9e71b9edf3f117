"""How many threads torch uses: ``--num-threads``, or a choice fitted to the policy.

An MLP policy's matrices are too small for torch's intra-op threads to pay: one thread is fastest, and on a
shared machine the others are free for the envs. For convolutional policies ``CNN_THREADS`` holds the choice
measured by ``benchmarks/threads_cnn.py`` (A2C, CnnPolicy, Pong, 16 envs; see benchmarks/README.md): on a
2-core machine shared with other jobs one thread ran 6.2 times as many steps per second as torch's default
(median of 3 alternating pairs), as OpenMP's spinning threads wait for cores the envs and other jobs hold.
"""

from __future__ import annotations

import argparse

import torch as th
from torch import nn

#: Threads for a convolutional policy; None would keep torch's default (one per core).
CNN_THREADS: int | None = 1


def is_convolutional(policy: nn.Module | None) -> bool:
    """True when the policy has a convolution (SB3's NatureCNN, any CnnPolicy)."""
    if policy is None:
        return False
    return any(isinstance(m, nn.modules.conv._ConvNd) for m in policy.modules())


def choose_num_threads(requested: int, policy: nn.Module | None) -> tuple[int, str]:
    """The thread count for a policy and why: ``requested`` when positive, else fitted to the policy.

    :param requested: ``--num-threads`` (0 or below: choose)
    :param policy: the policy that will run, or None when unknown (then torch's default stays)
    """
    if requested > 0:
        return requested, "--num-threads"
    if policy is None:
        return th.get_num_threads(), "torch's default"
    if is_convolutional(policy):
        if CNN_THREADS is None:
            return th.get_num_threads(), "CNN policy: torch's default, one per core"
        return CNN_THREADS, "CNN policy: measured fastest by benchmarks/threads_cnn.py"
    return 1, "MLP policy: one thread is fastest for small matrices"


def set_num_threads(requested: int, policy: nn.Module | None, workers: bool = False) -> str:
    """Set torch's intra-op threads (:func:`choose_num_threads`); returns the line a command prints in its header.

    :param workers: the algorithm runs worker processes (A3C), which take one thread each whatever this says
    """
    n, reason = choose_num_threads(requested, policy)
    if n != th.get_num_threads():
        th.set_num_threads(n)
    where = "1 in each worker, " if workers else ""
    return f"torch threads: {where}{n}{' in the driver' if workers else ''} ({reason}; --num-threads N to change)"


def add_num_threads_argument(parser: argparse.ArgumentParser) -> None:
    """``--num-threads``, shared by the commands that run a policy."""
    parser.add_argument(
        "--num-threads",
        type=int,
        default=-1,
        help="torch threads (default -1: chosen from the policy, 1 for MLP policies; the header says which)",
    )
