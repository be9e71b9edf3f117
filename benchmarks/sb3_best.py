"""SB3 at its best, pgplug at its defaults: the thread counts every throughput benchmark compares.

A user running SB3 on a machine gets torch's default thread count unless they change it, and one thread is
faster for small networks: so SB3 runs at both, in the same rounds as pgplug, and the faster setting by median
steps/s is SB3's best for that workload. pgplug runs at the thread count ``pgplug train`` chooses
(:mod:`pgplug.runtime.threads`: one for an MLP, the idle cores for a CNN, A3C's workers sharing them).

Rounds rotate the order of their runs (A B C, B C A, C A B, ...) so that load from other processes hits every
setting alike; ratios are taken round by round against SB3's best setting and summarised by their median.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any, TypeVar

#: The SB3 thread settings measured: one thread, and torch's default (0).
SB3_THREADS = (1, 0)

T = TypeVar("T")


def thread_label(threads: int) -> str:
    """``1 thread``, or ``default threads`` for torch's own choice (0)."""
    return "default threads" if threads == 0 else f"{threads} thread{'s' if threads > 1 else ''}"


def apply_threads(threads: int) -> int:
    """Set torch's intra-op threads (0 keeps torch's default); returns the count torch runs on."""
    import torch as th

    if threads > 0:
        th.set_num_threads(threads)
    return th.get_num_threads()


def pgplug_default_threads(policy: Any) -> int:
    """Set the thread count ``pgplug train`` would choose for ``policy``; returns it."""
    import torch as th

    from pgplug.runtime.threads import choose_num_threads

    threads = choose_num_threads(0, policy)[0]
    th.set_num_threads(threads)
    return threads


def rotation(setups: Sequence[T], round_index: int) -> list[T]:
    """The order of round ``round_index``: the setups rotated by it, so each runs first, in the middle and last."""
    shift = round_index % len(setups)
    return [*setups[shift:], *setups[:shift]]


def best_sb3(runs: dict[int, list[dict[str, Any]]], key: str = "steps_per_s") -> int:
    """The SB3 thread setting (a key of ``runs``) with the higher median ``key``."""
    return max(runs, key=lambda threads: statistics.median(r[key] for r in runs[threads]))


def ratios(ours: list[dict[str, Any]], theirs: list[dict[str, Any]], key: str) -> list[float]:
    """Round-by-round ratios of ``key``, ours over theirs."""
    return [a[key] / b[key] for a, b in zip(ours, theirs, strict=True)]
