"""Results §4: A2C against A3C with 1, 2 and 4 workers: wall-clock to solve CartPole-v1 on 2 cores, and policy lag.

The lecture's claim: A3C's asynchronous workers use every core without waiting for each other, so on a multi-core
machine it reaches a given score sooner in wall-clock time than synchronous A2C in one process, at the price of
policy lag (a worker's gradient is computed on weights that other workers have meanwhile updated: about
``n_workers − 1`` updates), which the method tolerates.

What is measured: ``pgplug train --algo a2c`` (configs/a2c.yml, rl-baselines3-zoo's settings: 8 envs, 5 steps,
one torch thread) and ``pgplug train --algo a3c --n-workers N`` for N = 1, 2, 4 (configs/a3c.yml: 4 envs per
worker, t_max 5, shared RMSprop), each seed with the same budget and an evaluation of 5 deterministic episodes every
5,000 steps. Per setting: the wall-clock seconds and the steps to the first evaluation with mean ≥ 475, the whole
run's steps/s, and the mean policy lag (global updates between a worker's pull of the weights and its push of the
gradient), read from the logger table ``--verbose 1`` prints (``a3c/policy_lag_mean``, weighted by the updates of
each table). A2C is synchronous: its lag is 0 by construction, not measured.

The jobs run one at a time (A3C with 2 and 4 workers uses both cores), settings in a rotating order per seed. The
clock of "seconds to solve" is that of the training episodes' Monitor files, on which the evaluations are placed:
for A2C it starts when its envs are built, before the model; for A3C when each worker builds its envs, after the
workers' start-up (0.4 s with the forkserver, docs/a3c.md), which it therefore leaves out. Evaluations take
wall-clock time in both (A2C waits for them; A3C's workers go on for at most ``callback_lag`` = 1,000 steps). Runs
train to their budget (pgplug train has no stop-on-reward option); one that never reaches 475 counts as unsolved.

Writes ``docs/results/a3c.json`` and ``.csv`` (a row per setting × seed) and ``docs/images/results/a3c-solve-time.png``
(seconds to solve per setting, a dot per seed and the median; the evaluations against wall-clock), and prints a
summary table.

    python benchmarks/results_a3c.py                    # make results-a3c; ≤ 10 min on 2 cores
    python benchmarks/results_a3c.py --plot-only        # redraw and reprint from the JSON
    python benchmarks/results_a3c.py --seeds 0 1 2 --workers 2 8 --steps 200000
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from results_common import (
    Done,
    Job,
    fresh_folder,
    image,
    load_average,
    read_kept,
    run_folder,
    run_jobs,
    shown,
    solved,
    spread,
    train_job,
    write_csv,
    write_json,
)

NAME = "a3c"
PICTURE = "a3c-solve-time.png"
ENV = "CartPole-v1"
THRESHOLD = 475.0
#: CPU seconds before training (imports, envs, model; A3C's forkserver too) and per 1,000 steps, measured at nice 19
#: beside a 2-worker A3C run (so conservative); A3C's per-step cost is wall-clock over its workers.
STARTUP_SECONDS = {"a2c": 5.5, "a3c": 7.0}
SECONDS_PER_KSTEP = {0: 0.101, 1: 0.13, 2: 0.065, 4: 0.08}  # 0: A2C
SECONDS_PER_EVALUATION = 0.6  # 5 episodes of 500 steps, one env


@dataclass(frozen=True)
class Setting:
    """A2C (``workers`` 0) or A3C with ``workers`` worker processes."""

    workers: int

    @property
    def algo(self) -> str:
        return "a3c" if self.workers else "a2c"

    @property
    def label(self) -> str:
        if not self.workers:
            return "A2C"
        return f"A3C {self.workers} worker{'s' if self.workers > 1 else ''}"

    @property
    def slug(self) -> str:
        return f"a3c_{self.workers}" if self.workers else "a2c"


def settings_for(workers: Sequence[int]) -> list[Setting]:
    """A2C, then A3C with each worker count."""
    return [Setting(0), *(Setting(n) for n in workers)]


@dataclass(frozen=True)
class Planned:
    setting: Setting
    seed: int
    folder: Path
    job: Job


def plan(
    settings: Sequence[Setting], seeds: Sequence[int], steps: int, eval_freq: int, eval_episodes: int, root: Path
) -> list[Planned]:
    """One ``pgplug train --verbose 1`` per setting and seed, the settings' order rotated from one seed to the next
    (so that a slow spell of the machine does not fall on one setting)."""
    planned = []
    for index, seed in enumerate(seeds):
        shift = index % len(settings)
        for setting in [*settings[shift:], *settings[:shift]]:
            folder = root / setting.slug / f"seed_{seed}"
            extra = ["--verbose", "1"] + (["--n-workers", str(setting.workers)] if setting.workers else [])
            job = train_job(
                f"{setting.label} seed {seed}", folder, setting.algo, ENV, seed=seed, steps=steps,
                eval_freq=eval_freq, eval_episodes=eval_episodes, extra=extra,
            )  # fmt: skip
            planned.append(Planned(setting, seed, folder, job))
    return planned


def estimate_minutes(planned: Sequence[Planned], steps: int, eval_freq: int) -> float:
    """Wall-clock minutes, one job at a time."""
    total = 0.0
    for p in planned:
        per_kstep = SECONDS_PER_KSTEP.get(p.setting.workers, SECONDS_PER_KSTEP[4])
        total += STARTUP_SECONDS[p.setting.algo] + steps / 1000 * per_kstep
        total += steps / eval_freq * SECONDS_PER_EVALUATION
    return total / 60


# -- what a job printed ----------------------------------------------------------------------------------------

_DASHES = re.compile(r"^-{8,}$")
_ROW = re.compile(r"^\| (.+?)\s*\| (.*?)\s*\|$")


def logger_tables(output: str) -> list[dict[str, str]]:
    """The tables SB3's logger printed (``--verbose 1``), each as ``{"a3c/policy_lag_mean": "0.93", ...}``."""
    tables: list[dict[str, str]] = []
    current: dict[str, str] | None = None
    tag = ""
    for line in output.splitlines():
        line = line.rstrip()
        if _DASHES.match(line):
            if current:
                tables.append(current)
            current, tag = ({} if current is None else None), ""
            continue
        match = _ROW.match(line) if current is not None else None
        if match is None:
            continue
        key, value = match.groups()
        if key.startswith("   "):
            current[tag + key.strip()] = value  # type: ignore[index]
        elif key.endswith("/") and not value:
            tag = key
        else:
            current[key] = value  # type: ignore[index]
    return tables


def policy_lag(output: str) -> dict[str, float] | None:
    """The mean policy lag over the whole run, from the logger's ``a3c/policy_lag_mean`` (the mean over each
    table's window of updates) weighted by the window's updates (``train/n_updates`` is cumulative), and the highest
    window mean; None when the output has none (A2C)."""
    points = [
        (float(t["a3c/policy_lag_mean"]), float(t["train/n_updates"]))
        for t in logger_tables(output)
        if "a3c/policy_lag_mean" in t and "train/n_updates" in t
    ]
    if not points:
        return None
    lags = np.array([lag for lag, _ in points])
    weights = np.diff([0.0, *(n for _, n in points)])
    mean = float(np.average(lags, weights=weights)) if weights.sum() > 0 else float(lags.mean())
    return {"mean": round(mean, 3), "max_window": float(lags.max()), "windows": len(points)}


def learn_figures(output: str) -> tuple[float | None, float | None]:
    """``wall time`` (seconds in ``learn()``, start-up included) and ``steps/s`` from the results table that
    ``pgplug train`` prints at the end."""
    wall = re.search(r"^[│|]\s*wall time\s*[│|]\s*([\d,.]+) s", output, re.M)
    rate = re.search(r"^[│|]\s*steps/s\s*[│|]\s*([\d,.]+)", output, re.M)
    return tuple(None if m is None else float(m.group(1).replace(",", "")) for m in (wall, rate))  # type: ignore[return-value]


# -- reading the runs back -------------------------------------------------------------------------------------


def read_result(p: Planned, done: Done, steps: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The CSV row of one finished run and its evaluation curve (steps, seconds, mean)."""
    from pgplug.interop.curves import read_run

    run = run_folder(p.folder, p.setting.algo, ENV)
    reached = solved(run, THRESHOLD)
    evaluations = read_run(run).evaluations
    lag = policy_lag(done.output)
    learn_seconds, steps_per_second = learn_figures(done.output)
    row = {
        "setting": p.setting.label,
        "algo": p.setting.algo,
        "workers": p.setting.workers,
        "seed": p.seed,
        "steps_budget": steps,
        "solved_steps": reached.steps,
        "solved_seconds": None if reached.seconds is None else round(reached.seconds, 2),
        "final": reached.final,
        "best": reached.best,
        "learn_seconds": learn_seconds,
        "steps_per_second": steps_per_second,
        "policy_lag": None if lag is None else lag["mean"],
        "policy_lag_max_window": None if lag is None else lag["max_window"],
        "run": shown(run),
    }
    seconds = None if evaluations is None else evaluations.seconds
    curve = {
        "setting": p.setting.label,
        "seed": p.seed,
        "steps": [] if evaluations is None else [int(s) for s in evaluations.steps],
        "seconds": [] if seconds is None else [round(float(s), 3) for s in seconds],
        "mean": [] if evaluations is None else [float(y) for y in evaluations.y],
    }
    return row, curve


def summarise_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per setting (in the rows' order): runs, solved, the spread over seeds of the seconds and steps to solve
    (unsolved runs counted as ``missing``), of steps/s and of the policy lag, and the speed-up over A2C in seconds to
    solve (A2C's median over this setting's; and per seed, where both solved)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row["setting"], []).append(row)
    a2c = {r["seed"]: r["solved_seconds"] for r in groups.get("A2C", [])}
    a2c_median = spread(a2c.values())["median"]
    summary = []
    for label, group in groups.items():
        seconds = spread(r["solved_seconds"] for r in group)
        per_seed = {
            r["seed"]: round(a2c[r["seed"]] / r["solved_seconds"], 3)
            for r in group
            if a2c.get(r["seed"]) is not None and r["solved_seconds"]
        }
        summary.append(
            {
                "setting": label,
                "workers": group[0]["workers"],
                "runs": len(group),
                "solved": sum(r["solved_steps"] is not None for r in group),
                "steps_budget": group[0]["steps_budget"],
                "seconds_to_solve": seconds,
                "steps_to_solve": spread(r["solved_steps"] for r in group),
                "steps_per_second": spread(r["steps_per_second"] for r in group),
                "policy_lag": spread(r["policy_lag"] for r in group),
                "speedup_over_a2c": None
                if a2c_median is None or seconds["median"] is None
                else round(a2c_median / seconds["median"], 3),
                "speedup_over_a2c_per_seed": per_seed,
            }
        )
    return summary


# -- the summary table and the picture --------------------------------------------------------------------------


def table(summary: Sequence[dict[str, Any]]) -> str:
    """The summary as aligned text, one line per setting."""
    header = (
        "setting", "solved", "seconds to solve: median [min–max]", "steps to solve: median", "steps/s",
        "policy lag", "speed-up over A2C",
    )  # fmt: skip
    lines = []
    for s in summary:
        seconds, steps, rate, lag = s["seconds_to_solve"], s["steps_to_solve"], s["steps_per_second"], s["policy_lag"]
        lines.append(
            (
                s["setting"],
                f"{s['solved']}/{s['runs']} in {s['steps_budget'] / 1000:.0f}k",
                "—" if seconds["n"] == 0 else f"{seconds['median']:.1f} [{seconds['min']:.1f}–{seconds['max']:.1f}]",
                "—" if steps["n"] == 0 else f"{steps['median'] / 1000:.0f}k",
                "—" if rate["n"] == 0 else f"{rate['median']:,.0f}",
                ("0 (synchronous)" if not s["workers"] else "—") if lag["n"] == 0 else f"{lag['median']:.2f}",
                "—" if s["speedup_over_a2c"] is None else f"{s['speedup_over_a2c']:.2f}×",
            )
        )
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in [header, *lines])


def draw(rows: Sequence[dict[str, Any]], curves: Sequence[dict[str, Any]], output: Path) -> Path:
    """Left: seconds to solve per setting, a dot per seed and the median (an unsolved run as an ×, at its whole
    ``learn()`` time). Right: the evaluations against wall-clock, mean and min–max over seeds per setting."""
    from pgplug.interop.curves import Curve, summarise
    from pgplug.interop.plotting import pyplot, save_figure

    plt = pyplot()
    labels = list(dict.fromkeys(r["setting"] for r in rows))
    colours = {label: f"C{i}" for i, label in enumerate(labels)}
    fig, (left, right) = plt.subplots(1, 2, figsize=(12.8, 4.8), layout="constrained")
    rng = np.random.default_rng(0)
    for i, label in enumerate(labels):
        group = [r for r in rows if r["setting"] == label]
        times = [r["solved_seconds"] for r in group if r["solved_seconds"] is not None]
        jitter = rng.uniform(-0.12, 0.12, len(times))
        left.scatter(i + jitter, times, color=colours[label], zorder=3, s=25)
        if times:
            left.hlines(statistics.median(times), i - 0.3, i + 0.3, color=colours[label], linewidth=2)
        unsolved = [r["learn_seconds"] for r in group if r["solved_seconds"] is None and r["learn_seconds"]]
        if unsolved:
            left.scatter([i] * len(unsolved), unsolved, color=colours[label], marker="x", zorder=3)
    left.set_xticks(range(len(labels)), labels)
    left.set_ylabel(f"seconds to the first evaluation ≥ {THRESHOLD:.0f}")
    left.set_ylim(bottom=0)
    left.set_title("time to solve CartPole-v1 (dot: seed, bar: median, ×: not solved)", fontsize="medium")
    left.grid(True, axis="y", alpha=0.3)
    for label in labels:
        runs = [c for c in curves if c["setting"] == label and c["seconds"]]
        if not runs:
            continue
        band = summarise(
            [
                Curve(np.array(c["steps"], float), np.array(c["mean"], float), np.array(c["seconds"], float))
                for c in runs
            ],
            axis="time",
        )
        right.plot(band.x, band.mean, color=colours[label], label=label)
        right.fill_between(band.x, band.lower, band.upper, color=colours[label], alpha=0.2, linewidth=0)
    right.axhline(THRESHOLD, color="black", linestyle=":", linewidth=0.8, label=f"threshold {THRESHOLD:.0f}")
    right.set_xlabel("wall-clock seconds")
    right.set_ylabel("evaluation return (mean, min–max over seeds)")
    right.set_xlim(left=0)
    right.set_title("evaluations against wall-clock", fontsize="medium")
    right.grid(True, alpha=0.3)
    right.legend(fontsize="small")
    fig.suptitle("A2C (one process) and A3C (1, 2, 4 worker processes) on 2 cores, CartPole-v1")
    return save_figure(fig, output)


# -- the command -------------------------------------------------------------------------------------------------


def train(args: argparse.Namespace) -> dict[str, Any]:
    settings = settings_for(args.workers)
    before = load_average()
    root = fresh_folder(NAME)
    args.eval_freq = min(args.eval_freq, args.steps)  # a smoke run still evaluates once
    planned = plan(settings, args.seeds, args.steps, args.eval_freq, args.eval_episodes, root)
    print(
        f"{len(planned)} runs of {args.steps:,} steps, one at a time: about "
        f"{estimate_minutes(planned, args.steps, args.eval_freq):.0f} minutes at the rates measured beside another "
        f"run, less on a quiet machine (load average now {before})",
        flush=True,
    )
    started = time.perf_counter()
    done = run_jobs([p.job for p in planned], parallel=1, log=root / "jobs.log")
    results = [read_result(p, d, args.steps) for p, d in zip(planned, done)]
    order = {s.label: i for i, s in enumerate(settings)}
    results.sort(key=lambda r: (order[r[0]["setting"]], r[0]["seed"]))
    rows, curves = [r for r, _ in results], [c for _, c in results]
    return {
        "section": "§4 A2C against A3C",
        "command": "python benchmarks/results_a3c.py " + " ".join(sys.argv[1:]),
        "settings": {
            "env": ENV,
            "threshold": THRESHOLD,
            "seeds": args.seeds,
            "steps": args.steps,
            "eval_freq": args.eval_freq,
            "eval_episodes": args.eval_episodes,
            "a3c_workers": args.workers,
            "configs": "configs/a2c.yml and configs/a3c.yml, entry CartPole-v1",
        },
        "minutes": round((time.perf_counter() - started) / 60, 1),
        "load_average_before": before,
        "load_average_after": load_average(),
        "summary": summarise_rows(rows),
        "rows": rows,
        "curves": curves,
    }


def report(result: dict[str, Any]) -> None:
    """Draw the picture and print the table (after training, or from the JSON with ``--plot-only``)."""
    output = draw(result["rows"], result["curves"], image(PICTURE))
    print(f"wrote {shown(output)}")
    print(table(result["summary"]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="seeds (default 0 1 2 3 4)")
    parser.add_argument("--steps", type=lambda t: int(float(t)), default=100_000, help="steps per run (default 1e5)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4], help="A3C worker counts (default 1 2 4)")
    parser.add_argument("--eval-freq", type=int, default=5_000, help="steps between evaluations (default 5000)")
    parser.add_argument("--eval-episodes", type=int, default=5, help="episodes per evaluation (default 5)")
    parser.add_argument("--plot-only", action="store_true", help=f"redraw and reprint from docs/results/{NAME}.json")
    args = parser.parse_args(argv)
    if args.plot_only:
        report(read_kept(NAME))
        return
    result = train(args)
    write_json(NAME, result)
    write_csv(NAME, result["rows"])
    report(result)


if __name__ == "__main__":
    main()
