"""What the scripts behind ``docs/results.md`` share: where results go, running ``pgplug`` commands two at a time,
and reading "solved" off a run folder.

Every section of the results page is one script (``benchmarks/results_*.py``), run by ``make results`` (all) or
``make results-N``. Each trains with pgplug's own command line (``pgplug train ... -f FOLDER``), so a reader can
rerun any single point by hand; run folders go to ``runs/results/`` (not kept), the raw numbers to
``docs/results/`` (CSV/JSON, kept) and the pictures to ``docs/images/results/``.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from pgplug.interop.curves import Band

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "docs" / "results"
IMAGES = REPO / "docs" / "images" / "results"
RUNS = REPO / "runs" / "results"
#: Concurrent jobs: one per core of the 2-core machine the page was measured on (each job uses one torch thread).
JOBS = 2


def pgplug_command(*args: str) -> list[str]:
    """``python -m pgplug ARGS`` with this interpreter (the one the script runs under)."""
    return [sys.executable, "-m", "pgplug", *args]


@dataclass(frozen=True)
class Job:
    """One command to run, and what to call it in the progress lines."""

    label: str
    command: list[str]


@dataclass(frozen=True)
class Done:
    label: str
    seconds: float
    returncode: int
    output: str


def run_jobs(jobs: Sequence[Job], parallel: int = JOBS, log: Path | None = None) -> list[Done]:
    """Run the jobs ``parallel`` at a time (each in its own process, one torch thread), in order of submission;
    a progress line per finished job. Fails in one line naming the first job that failed, with its output's tail.

    :param log: append every job's command and output to this file
    """
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")

    def run(job: Job) -> Done:
        started = time.perf_counter()
        done = subprocess.run(job.command, capture_output=True, text=True, env=env)
        return Done(job.label, time.perf_counter() - started, done.returncode, done.stdout + done.stderr)

    results: list[Done] = []
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        for index, done in enumerate(pool.map(run, jobs), start=1):
            print(f"[{index}/{len(jobs)}] {done.label}: {done.seconds:.0f} s, exit {done.returncode}", flush=True)
            if log is not None:
                with log.open("a") as file:
                    file.write(f"$ {' '.join(jobs[index - 1].command)}\n{done.output}\n")
            results.append(done)
    failed = [d for d in results if d.returncode != 0]
    if failed:
        tail = "\n".join(failed[0].output.strip().splitlines()[-5:])
        raise SystemExit(f"{failed[0].label} failed (exit {failed[0].returncode}):\n{tail}")
    return results


@dataclass(frozen=True)
class EstimatorSetting:
    """One estimator with its arguments: how tables name it, and what ``pgplug train --estimator`` gets."""

    label: str
    estimator: str
    kwargs: tuple[str, ...] = ()  # ``KEY=VALUE`` strings, as ``--estimator-kwargs`` takes them

    @property
    def slug(self) -> str:
        """A folder name: ``gae_gae_lambda_0.95``."""
        return re.sub(r"[^A-Za-z0-9.]+", "_", f"{self.estimator} {' '.join(self.kwargs)}").strip("_")

    def parsed(self) -> dict[str, Any]:
        """The kwargs as values (``n=null`` → None), as pgplug's YAML reading gives them."""
        import yaml

        return {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in self.kwargs)}


@dataclass(frozen=True)
class Solved:
    """When a run first reached its threshold in a periodic evaluation (None: never, within its budget)."""

    steps: int | None
    seconds: float | None
    final: float | None  # the last evaluation's mean return
    best: float | None


def solved(run_dir: Path, threshold: float) -> Solved:
    """Steps and wall-clock seconds at the first evaluation whose mean return reached ``threshold``."""
    from pgplug.interop.curves import read_run

    evaluations = read_run(run_dir).evaluations
    if evaluations is None or len(evaluations.y) == 0:
        return Solved(None, None, None, None)
    reached = [i for i, y in enumerate(evaluations.y) if y >= threshold]
    final, best = float(evaluations.y[-1]), float(max(evaluations.y))
    if not reached:
        return Solved(None, None, final, best)
    first = reached[0]
    seconds = None if evaluations.seconds is None else float(evaluations.seconds[first])
    return Solved(int(evaluations.steps[first]), seconds, final, best)


def shown(path: Path) -> str:
    """``path`` relative to the repository when it is inside it (for progress lines), else as it is."""
    try:
        return str(path.relative_to(REPO))
    except ValueError:
        return str(path)


def read_kept(name: str) -> Any:
    """``docs/results/<name>.json`` as a full run wrote it, for ``--plot-only``; one line when there is none."""
    path = RESULTS / f"{name}.json"
    if not path.exists():
        raise SystemExit(f"{shown(path)} does not exist: run without --plot-only first")
    return json.loads(path.read_text())


def read_typed_csv(path: Path, types: dict[str, type]) -> list[dict[str, Any]]:
    """A CSV ``write_csv`` wrote, back as rows: the columns named in ``types`` converted, empty cells None, the rest
    strings; one line when the file is missing (``--plot-only`` before a full run)."""
    if not path.exists():
        raise SystemExit(f"{shown(path)} does not exist: run without --plot-only first")
    with path.open(newline="") as file:
        rows = list(csv.DictReader(file))
    return [{k: None if v == "" else types[k](v) if k in types else v for k, v in r.items()} for r in rows]


def write_json(name: str, data: Any) -> Path:
    """``docs/results/<name>.json``, indented, keys in the order given."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    print(f"wrote {shown(path)}")
    return path


def write_csv(name: str, rows: Iterable[dict[str, Any]]) -> Path:
    """``docs/results/<name>.csv`` from dict rows (the first row's keys are the header)."""
    rows = list(rows)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.csv"
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]) if rows else [])
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {shown(path)}")
    return path


def image(name: str) -> Path:
    """``docs/images/results/<name>``, its folder made."""
    IMAGES.mkdir(parents=True, exist_ok=True)
    return IMAGES / name


def load_average() -> str:
    """The 1-minute load average, to print beside timings (the machine may be shared)."""
    return f"{os.getloadavg()[0]:.2f}"


# -- training runs: one pgplug command per (setting, seed), read back from its run folder ---------------------


def fresh_folder(*parts: str) -> Path:
    """``runs/results/<parts...>``, emptied: a section's runs never mix with an earlier invocation's."""
    folder = RUNS.joinpath(*parts)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return folder


def train_job(
    label: str,
    folder: Path,
    algo: str,
    env: str,
    *,
    seed: int,
    steps: int,
    eval_freq: int,
    eval_episodes: int = 5,
    estimator: str | None = None,
    estimator_kwargs: Sequence[str] = (),
    hyperparams: Sequence[str] = (),
    extra: Sequence[str] = (),
) -> Job:
    """``pgplug train`` of one setting and seed into ``folder`` (which gets ``<algo>/<env>_1/``), evaluating
    every ``eval_freq`` steps, no final evaluation and no live display; a reader can paste the printed command.

    :param estimator_kwargs: ``KEY=VALUE`` strings, as ``--estimator-kwargs`` takes them
    :param hyperparams: ``KEY=VALUE`` strings (values are YAML), as ``-params`` takes them
    :param extra: any further ``pgplug train`` arguments
    """
    command = pgplug_command(
        "train", "--algo", algo, "--env", env, "--seed", str(seed), "-n", str(steps), "-f", str(folder),
        "--eval-freq", str(eval_freq), "--eval-episodes", str(eval_episodes), "--n-eval-episodes", "0",
        "--no-progress", "--num-threads", "1",
    )  # fmt: skip
    if estimator is not None:
        command += ["--estimator", estimator]
    if estimator_kwargs:
        command += ["--estimator-kwargs", *estimator_kwargs]
    if hyperparams:
        command += ["-params", *hyperparams]
    return Job(label, [*command, *extra])


def run_folder(folder: Path, algo: str, env: str) -> Path:
    """The run ``train_job`` made in ``folder``: ``<folder>/<algo>/<env>_<k>`` (the only one, or the newest)."""
    runs = sorted((folder / algo).glob(f"{env}_*"), key=lambda p: int(p.name.rsplit("_", 1)[1]))
    if not runs:
        raise SystemExit(f"{folder / algo} holds no run of {env}")
    return runs[-1]


def spread(values: Iterable[float | None]) -> dict[str, float | int | None]:
    """Median, min, max, mean and std of the values that are not None, and how many were None (e.g. runs that
    never solved within their budget); all None when none are left."""
    values = list(values)
    present = np.array([v for v in values if v is not None], dtype=np.float64)
    missing = len(values) - len(present)
    if len(present) == 0:
        return {"n": 0, "missing": missing, "median": None, "min": None, "max": None, "mean": None, "std": None}
    return {
        "n": len(present),
        "missing": missing,
        "median": float(np.median(present)),
        "min": float(present.min()),
        "max": float(present.max()),
        "mean": float(present.mean()),
        "std": float(present.std()),
    }


def evaluation_band(run_dirs: Sequence[Path], axis: str = "steps", band: str = "minmax") -> Band:
    """The runs' periodic evaluations over seeds on a common x grid (``axis``: steps or time)."""
    from pgplug.interop.curves import read_run, summarise

    curves = [read_run(d).evaluations for d in run_dirs]
    return summarise([c for c in curves if c is not None], axis=axis, band=band)
