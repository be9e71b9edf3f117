"""How many torch threads a policy should run on: a choice fitted to the policy and the machine.

An MLP policy's matrices are too small for torch's intra-op threads to pay: one thread is fastest, and on a
shared machine the others are free for the envs. A convolutional policy gains from threads only on cores nobody
else is using: ``benchmarks/threads_cnn.py`` (A2C, CnnPolicy, Pong, 16 envs, alternating pairs, medians) ran
torch's default of 2 threads at 1.33 times the steps/s of one thread on a quiet 2-core machine (732 against 549),
but at a sixth of them (38 against 237) with the machine's load average near 10, as OpenMP's threads wait for
cores other processes hold. So a CNN policy gets the machine's idle cores: the cores this process may use less
the 1-minute load average (rounded), at least one. Several learners on one machine (A3C's workers) share them:
each gets its part, so that learners × threads fits the cores.
"""

from __future__ import annotations

import os

import torch as th
from torch import nn

from pgplug.validation import available_cpus


def idle_cores() -> int:
    """The cores this process may use that the 1-minute load average leaves free, at least one."""
    cores = available_cpus()
    try:
        load = os.getloadavg()[0]
    except OSError:  # no load average on this system: assume the machine is ours
        load = 0.0
    return max(1, min(cores, cores - round(load)))


def is_convolutional(policy: nn.Module | None) -> bool:
    """True when the policy has a convolution (SB3's NatureCNN, any CnnPolicy)."""
    if policy is None:
        return False
    return any(isinstance(m, nn.modules.conv._ConvNd) for m in policy.modules())


def choose_num_threads(requested: int, policy: nn.Module | None, learners: int = 1) -> tuple[int, str]:
    """The thread count for a policy and why: ``requested`` when positive, else fitted to the policy.

    :param requested: ``--num-threads`` (0 or below: choose)
    :param policy: the policy that will run, or None when unknown (then torch's default stays)
    :param learners: how many processes run such a policy side by side on this machine (A3C's workers); each
        gets an equal part of the idle cores, at least one
    """
    if requested > 0:
        return requested, "--num-threads"
    if policy is None:
        return th.get_num_threads(), "torch's default"
    if is_convolutional(policy):
        cores = idle_cores()
        share = max(1, cores // max(1, learners))
        each = f", {share} for each of {learners}" if learners > 1 else ""
        return share, f"CNN policy: the idle cores, {cores} of {available_cpus()} at the current load{each}"
    return 1, "MLP policy: one thread is fastest for small matrices"
