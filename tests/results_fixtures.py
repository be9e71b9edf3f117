"""Fabricated run folders for the tests of the scripts behind docs/results.md (benchmarks/results_*.py): the files
``pgplug train`` writes and ``pgplug.interop.curves.read_run`` reads, with no training."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def fake_run(
    folder: Path,
    algo: str,
    env: str,
    *,
    evaluations: Sequence[tuple[int, Sequence[float]]] = (),
    episodes: Sequence[tuple[float, int, float]] = (),
    monitor: str = "0.monitor.csv",
    t_start: float = 1_700_000_000.0,
) -> Path:
    """A run folder as ``results_common.train_job`` makes one: ``<folder>/<algo>/<env>_1/`` with

    - ``evaluations.npz`` (as SB3's ``EvalCallback`` writes it): one ``(timestep, [episode returns])`` per
      periodic evaluation;
    - a Monitor csv file ``monitor`` (``0.monitor.csv`` as A2C's first env writes it; A3C's is
      ``workers.monitor.csv``): one ``(return, length, seconds since t_start)`` per training episode, which is what
      places the evaluations on the wall clock.

    :return: the run folder
    """
    run = folder / algo / f"{env}_1"
    run.mkdir(parents=True, exist_ok=True)
    if evaluations:
        steps = np.array([s for s, _ in evaluations], dtype=np.int64)
        results = np.array([list(r) for _, r in evaluations], dtype=np.float64)
        np.savez(run / "evaluations.npz", timesteps=steps, results=results, ep_lengths=np.ones_like(results))
    if episodes:
        lines = [f"#{json.dumps({'t_start': t_start, 'env_id': env})}", "r,l,t"]
        lines += [f"{r},{length},{t}" for r, length, t in episodes]
        (run / monitor).write_text("\n".join(lines) + "\n")
    return run


def even_episodes(steps: int, seconds: float, n: int = 10, reward: float = 0.0) -> list[tuple[float, int, float]]:
    """``n`` training episodes of equal length spanning ``steps`` timesteps in ``seconds``: a run that made
    ``steps / seconds`` steps per second throughout."""
    length = steps // n
    return [(reward, length, seconds * (i + 1) / n) for i in range(n)]
