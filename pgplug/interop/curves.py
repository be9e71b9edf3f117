"""Learning curves of training runs, read from the files SB3 writes: ``*.monitor.csv`` and ``evaluations.npz``.

A run is a folder as ``pgplug train`` and rl-baselines3-zoo make them, ``<log>/<algo>/<env>_<k>/``, holding SB3
``Monitor`` files (one per env, ``<rank>.monitor.csv``; A3C's ``workers.monitor.csv``) and ``EvalCallback``'s
``evaluations.npz``. Runs of one setting (same algorithm and env, other seeds) are grouped by their folder names
and summarised on a common x grid: the mean and the spread (min–max or ±1 std) over seeds.

Only numbers are read: ``evaluations.npz`` is opened with ``allow_pickle=False``, the csv files as text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pgplug.errors import PgplugError

EVALUATIONS_FILE = "evaluations.npz"
MONITOR_GLOB = "*.monitor.csv"
#: ``<env>_<k>`` with the zoo's optional ``_<uuid>`` suffix.
RUN_SUFFIX = re.compile(r"_\d+(?:_[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})?$")
X_AXES = ("steps", "time")
BANDS = ("minmax", "std", "none")


@dataclass(frozen=True)
class Curve:
    """Points of one curve: ``y`` at timesteps ``steps`` and wall-clock seconds ``seconds`` (None when unknown)."""

    steps: np.ndarray
    y: np.ndarray
    seconds: np.ndarray | None = None

    def x(self, axis: str) -> np.ndarray | None:
        return self.steps if axis == "steps" else self.seconds


@dataclass(frozen=True)
class RunCurves:
    """The curves of one run folder.

    :param episodes: the training episodes' returns, in the order they ended (steps: timesteps so far)
    :param evaluations: the mean return of each periodic evaluation
    :param eval_episodes: episodes per evaluation
    """

    path: Path
    algo: str
    env: str
    episodes: Curve | None
    evaluations: Curve | None
    eval_episodes: int = 0

    @property
    def setting(self) -> str:
        return f"{self.algo} {self.env}"


@dataclass(frozen=True)
class Band:
    """A setting's curve over seeds on a common grid: mean, lower and upper edge of the spread."""

    x: np.ndarray
    mean: np.ndarray
    lower: np.ndarray
    upper: np.ndarray


@dataclass(frozen=True)
class Group:
    """The runs of one setting (algorithm and env)."""

    setting: str
    runs: list[RunCurves] = field(default_factory=list)


# -- reading -------------------------------------------------------------------------------------


def read_monitor_file(path: Path) -> tuple[float, np.ndarray]:
    """``(t_start, rows)`` of one SB3 Monitor file; rows are ``(r, l, t)`` with ``t`` seconds since ``t_start``."""
    try:
        with open(path, encoding="utf-8") as handle:
            first = handle.readline()
            header = json.loads(first[1:]) if first.startswith("#") else {}
            columns = handle.readline().strip().split(",")
            rows = [line for line in handle.read().splitlines() if line.strip()]
            usecols = [columns.index(c) for c in "rlt"]
            data = np.loadtxt(rows, delimiter=",", ndmin=2, usecols=usecols) if rows else np.empty((0, 3))
    except (OSError, ValueError, json.JSONDecodeError) as exc:
        raise PgplugError(f"cannot read the Monitor file {path}: {str(exc).splitlines()[0]}") from exc
    return float(header.get("t_start", 0.0)), data.reshape(-1, 3)


def read_episodes(run_dir: Path) -> Curve | None:
    """All training episodes of a run's Monitor files, in the order they ended, or None without any.

    Several files (one per env) are merged on wall-clock time, as SB3's ``load_results`` does; the timesteps are
    the cumulative episode lengths.
    """
    files = sorted(Path(run_dir).glob(MONITOR_GLOB))
    if not files:
        return None
    starts, tables = zip(*(read_monitor_file(f) for f in files))
    origin = min(starts)
    rows = np.concatenate([table + np.array([0.0, 0.0, start - origin]) for start, table in zip(starts, tables)])
    if len(rows) == 0:
        return None
    rows = rows[np.argsort(rows[:, 2], kind="stable")]
    return Curve(steps=np.cumsum(rows[:, 1]), y=rows[:, 0], seconds=rows[:, 2])


def read_evaluations(run_dir: Path, episodes: Curve | None = None) -> tuple[Curve | None, int]:
    """The mean return of each evaluation in ``evaluations.npz`` and the episodes per evaluation.

    The file has no clock: an evaluation's wall-clock time is read off the training episodes' (when the run
    reached that many timesteps), so it is known only with Monitor files.
    """
    path = Path(run_dir) / EVALUATIONS_FILE
    if not path.is_file():
        return None, 0
    try:
        with np.load(path, allow_pickle=False) as data:
            steps = np.asarray(data["timesteps"], dtype=np.float64).reshape(-1)
            results = np.asarray(data["results"], dtype=np.float64)
    except (OSError, ValueError, KeyError) as exc:
        raise PgplugError(f"cannot read {path}: {str(exc).splitlines()[0]}") from exc
    if len(steps) == 0:
        return None, 0
    results = results.reshape(len(steps), -1)
    seconds = None
    if episodes is not None and len(episodes.steps) > 1:
        seconds = np.interp(steps, episodes.steps, episodes.seconds)
    return Curve(steps=steps, y=results.mean(axis=1), seconds=seconds), results.shape[1]


def setting_of(run_dir: Path) -> tuple[str, str]:
    """``(algo, env)`` from a run folder's path ``.../<algo>/<env>_<k>``."""
    run_dir = Path(run_dir).resolve()
    return run_dir.parent.name, RUN_SUFFIX.sub("", run_dir.name)


class NoCurveError(PgplugError):
    """A run folder with nothing to draw yet: no episode ended and no evaluation ran."""


def read_run(run_dir: str | Path) -> RunCurves:
    """The curves of a run folder; fails in one line when the folder is missing or holds neither file."""
    path = Path(run_dir)
    if not path.is_dir():
        raise PgplugError(f"run folder {str(run_dir)!r} does not exist")
    episodes = read_episodes(path)
    evaluations, eval_episodes = read_evaluations(path, episodes)
    if episodes is None and evaluations is None:
        raise NoCurveError(
            f"{path} has no learning curve: neither {MONITOR_GLOB} files nor {EVALUATIONS_FILE} with data"
        )
    algo, env = setting_of(path)
    return RunCurves(path, algo, env, episodes, evaluations, eval_episodes)


def group_runs(runs: Iterable[RunCurves]) -> list[Group]:
    """Runs grouped by setting (algorithm and env), in the order the settings first appear."""
    groups: dict[str, Group] = {}
    for run in runs:
        groups.setdefault(run.setting, Group(run.setting)).runs.append(run)
    return list(groups.values())


# -- smoothing and summarising ----------------------------------------------------------------------


def rolling_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Mean of each value and the ``window - 1`` before it (fewer at the start), as long as ``values``."""
    values = np.asarray(values, dtype=np.float64)
    if window <= 1 or len(values) == 0:
        return values
    sums = np.cumsum(np.insert(values, 0, 0.0))
    ends = np.arange(1, len(values) + 1)
    starts = np.maximum(ends - window, 0)
    return (sums[ends] - sums[starts]) / (ends - starts)


def smoothed(curve: Curve, window: int) -> Curve:
    return Curve(steps=curve.steps, y=rolling_mean(curve.y, window), seconds=curve.seconds)


def summarise(curves: Sequence[Curve], axis: str = "steps", band: str = "minmax", points: int = 200) -> Band:
    """Mean and spread of curves over seeds on a common x grid.

    Curves with the very same x (evaluations every N steps) are summarised at those points; others are
    interpolated linearly on ``points`` points spanning the x range all curves cover.

    :param axis: ``steps`` or ``time`` (seconds)
    :param band: ``minmax``, ``std`` (mean ± 1 std) or ``none``
    """
    if band not in BANDS:
        raise PgplugError(f"unknown band {band!r}; valid: {', '.join(BANDS)}")
    xs = [c.x(axis) for c in curves]
    if not curves or any(x is None or len(x) == 0 for x in xs):
        raise PgplugError(f"no {axis} axis for these curves")
    if all(len(x) == len(xs[0]) and np.array_equal(x, xs[0]) for x in xs):
        grid, ys = xs[0], np.stack([c.y for c in curves])
    else:
        low, high = max(float(x[0]) for x in xs), min(float(x[-1]) for x in xs)
        grid = np.linspace(low, high, points) if high > low else np.array([high])
        ys = np.stack([np.interp(grid, x, c.y) for x, c in zip(xs, curves)])
    mean = ys.mean(axis=0)
    if band == "minmax":
        lower, upper = ys.min(axis=0), ys.max(axis=0)
    elif band == "std":
        lower, upper = mean - ys.std(axis=0), mean + ys.std(axis=0)
    else:
        lower = upper = mean
    return Band(np.asarray(grid, dtype=np.float64), mean, lower, upper)


__all__ = [
    "BANDS",
    "X_AXES",
    "Band",
    "Curve",
    "Group",
    "RunCurves",
    "group_runs",
    "read_episodes",
    "read_evaluations",
    "read_monitor_file",
    "read_run",
    "rolling_mean",
    "summarise",
]
