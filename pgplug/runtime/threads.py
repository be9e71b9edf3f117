"""How many torch threads a policy should run on: a choice fitted to the policy and the machine.

An MLP policy's matrices are too small for torch's intra-op threads to pay: one thread is fastest, and on a
shared machine the others are free for the envs. A convolutional policy gains from threads only on cores nobody
else is using: ``benchmarks/threads_cnn.py`` (A2C, CnnPolicy, Pong, 16 envs, alternating pairs, medians) ran
torch's default of 2 threads at 1.33 times the steps/s of one thread on a quiet 2-core machine (732 against 549),
but at a sixth of them (38 against 237) with the machine's load average near 10, as OpenMP's threads wait for
cores other processes hold. So a CNN policy gets the machine's idle cores: the cores this process may use less
those busy now, read off the kernel's per-core idle time over a fifth of a second (``/proc/stat``; where there is
none, the 1-minute load average stands in). Not the load average where the kernel says more: it trails by a
minute, so a command started right after another one ended (a benchmark's next run, a user's second training)
would count the finished one as load and leave a core idle. Several learners on one machine (A3C's workers) share
the idle cores: each gets its part, so that learners × threads fits the cores.
"""

from __future__ import annotations

import os
import time

import torch as th
from torch import nn

from pgplug.validation import available_cpus

#: How long :func:`idle_cores` watches the cores: 20 of the kernel's 100 Hz ticks per core, and a fifth of a
#: second added to the start of a command with a CNN policy.
IDLE_WINDOW_S = 0.2


def cpu_times() -> dict[int, tuple[int, int]] | None:
    """Per core: (idle ticks, all ticks) since boot from ``/proc/stat`` (idle and iowait count as idle, stolen
    time as busy); None where the kernel gives no such file."""
    try:
        with open("/proc/stat") as stat:
            lines = stat.readlines()
    except OSError:
        return None
    times: dict[int, tuple[int, int]] = {}
    for line in lines:
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit():
            ticks = [int(field) for field in fields[:8]]  # user nice system idle iowait irq softirq steal
            times[int(name[3:])] = (ticks[3] + ticks[4], sum(ticks))
    return times or None


def busy_cores(window: float = IDLE_WINDOW_S) -> float | None:
    """How many of this process's cores other processes kept busy over the next ``window`` seconds (this one
    sleeps meanwhile); None where the kernel does not say."""
    before = cpu_times()
    if before is None:
        return None
    time.sleep(window)
    after = cpu_times()
    if after is None:
        return None
    cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(after)
    busy = 0.0
    for core in cores:
        if core in before and core in after:
            idle, total = (now - then for now, then in zip(after[core], before[core]))
            busy += 1.0 - idle / total if total > 0 else 0.0
    return busy


def idle_cores() -> int:
    """The cores this process may use that are idle now (:func:`busy_cores`; else the 1-minute load average
    stands for the busy ones), at least one."""
    cores = available_cpus()
    busy = busy_cores()
    if busy is None:
        try:
            busy = os.getloadavg()[0]
        except OSError:  # no load average on this system either: assume the machine is ours
            busy = 0.0
    return max(1, min(cores, cores - round(busy)))


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
