"""Results §2: what lower variance buys REINFORCE on CartPole-v1: steps and wall-clock to solve, per estimator.

**The lecture's claim**: an estimator whose gradient is less noisy learns faster, so REINFORCE with the
reward-to-go (causality) should need fewer steps than with the full return, and with a baseline fewer still;
keeping the γ^t factor (``gamma_t=true``, the exact gradient of the discounted objective) weights late steps
less, which on CartPole, where the late steps are the ones to learn, should slow it down.

**What is measured**: ``pgplug train --algo reinforce --env CartPole-v1`` with each complete-episode estimator
(``full_return``, ``reward_to_go``, ``baseline``, ``reward_to_go`` with ``gamma_t=true``), 5 seeds each, at
configs/reinforce.yml's CartPole hyperparameters (4 envs, one episode each per update, Adam 3e-3, advantages
normalised, γ = 0.99) for 100,000 steps, evaluated every 5,000 steps on 5 deterministic episodes. Solved: the
first evaluation with mean ≥ 475, in steps and in wall-clock seconds since the run's envs were made (its
evaluations included; two runs at a time, one torch thread each, on 2 cores).

Writes ``docs/results/reinforce.json`` (per estimator: each seed's solved steps and seconds, final and best
evaluation, their spread over seeds, and the evaluation curves' mean and min–max band over seeds against steps
and against seconds), ``docs/results/reinforce.csv`` (a row per run) and
``docs/images/results/reinforce-curves.png`` (the bands against steps and against seconds). About 7 minutes on
2 cores at the defaults.

    make results-reinforce                                # or: python benchmarks/results_reinforce.py
    python benchmarks/results_reinforce.py --plot-only    # redraw from docs/results/reinforce.json
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import results_common as common
from results_common import EstimatorSetting as Setting
from results_common import Job, evaluation_band, run_folder, run_jobs, solved, spread, train_job

ENV = "CartPole-v1"
ALGO = "reinforce"
THRESHOLD = 475.0


SETTINGS = (
    Setting("full_return", "full_return"),
    Setting("reward_to_go", "reward_to_go"),
    Setting("baseline", "baseline"),
    Setting("reward_to_go:gamma_t=true", "reward_to_go", ("gamma_t=true",)),
)


def jobs(args: argparse.Namespace, settings: list[Setting]) -> list[tuple[Setting, int, Path, Job]]:
    """One ``pgplug train`` per setting and seed, seed by seed (so each setting shares the cores alike)."""
    planned = []
    for seed in args.seeds:
        for setting in settings:
            folder = common.fresh_folder("reinforce", setting.slug, f"seed_{seed}")
            job = train_job(
                f"{setting.label} seed {seed}", folder, ALGO, ENV, seed=seed, steps=args.budget,
                eval_freq=args.eval_freq, eval_episodes=args.eval_episodes, estimator=setting.estimator,
                estimator_kwargs=setting.kwargs, hyperparams=args.hyperparams,
            )  # fmt: skip
            planned.append((setting, seed, folder, job))
    return planned


def band_json(run_dirs: list[Path], axis: str) -> dict[str, list[float]] | None:
    """:func:`results_common.evaluation_band` as lists (None without the axis, e.g. no Monitor files)."""
    from pgplug.errors import PgplugError

    try:
        band = evaluation_band(run_dirs, axis=axis, band="minmax")
    except PgplugError:
        return None
    return {k: [round(float(v), 3) for v in getattr(band, k)] for k in ("x", "mean", "lower", "upper")}


def curve_json(run_dir: Path) -> dict[str, list[float] | None]:
    """A run's evaluations: steps, seconds (None without Monitor files) and mean return."""
    from pgplug.interop.curves import read_run

    evaluations = read_run(run_dir).evaluations
    if evaluations is None:
        return {"steps": [], "seconds": None, "mean": []}
    seconds = None if evaluations.seconds is None else [round(float(s), 3) for s in evaluations.seconds]
    return {"steps": [int(s) for s in evaluations.steps], "seconds": seconds, "mean": [float(y) for y in evaluations.y]}


def collect(planned: list[tuple[Setting, int, Path, Job]], seconds: dict[str, float]) -> dict[str, Any]:
    """Per setting: each seed's run read back from its folder, the spreads over seeds, the curves' bands."""
    results: dict[str, Any] = {}
    for setting in dict.fromkeys(s for s, *_ in planned):
        runs, dirs = [], []
        for _, seed, folder, job in (p for p in planned if p[0] == setting):
            run_dir = run_folder(folder, ALGO, ENV)
            reached = solved(run_dir, THRESHOLD)
            dirs.append(run_dir)
            runs.append(
                {
                    "seed": seed,
                    "solved_steps": reached.steps,
                    "solved_seconds": None if reached.seconds is None else round(reached.seconds, 2),
                    "final": reached.final,
                    "best": reached.best,
                    "run_seconds": round(seconds.get(job.label, float("nan")), 1),
                    "run": common.shown(run_dir),
                    "command": " ".join(job.command),
                    "evaluations": curve_json(run_dir),
                }
            )
        results[setting.label] = {
            "estimator": setting.estimator,
            "estimator_kwargs": list(setting.kwargs),
            "solved": sum(r["solved_steps"] is not None for r in runs),
            "seeds": len(runs),
            "solved_steps": spread(r["solved_steps"] for r in runs),
            "solved_seconds": spread(r["solved_seconds"] for r in runs),
            "final": spread(r["final"] for r in runs),
            "best": spread(r["best"] for r in runs),
            "band_steps": band_json(dirs, "steps"),
            "band_seconds": band_json(dirs, "time"),
            "runs": runs,
        }
    return results


def rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """A CSV row per run."""
    return [
        {
            "setting": label,
            "estimator": entry["estimator"],
            "estimator_kwargs": " ".join(entry["estimator_kwargs"]),
            "seed": run["seed"],
            "solved_steps": run["solved_steps"],
            "solved_seconds": run["solved_seconds"],
            "final": run["final"],
            "best": run["best"],
            "run_seconds": run["run_seconds"],
            "run": run["run"],
        }
        for label, entry in result["settings"].items()
        for run in entry["runs"]
    ]


# -- the picture and the table ---------------------------------------------------------------------------


def draw(result: dict[str, Any], output: Path) -> Path:
    """Two panels, steps and seconds: per estimator the mean evaluation over seeds and the min–max band."""
    from matplotlib.ticker import EngFormatter

    from pgplug.interop.plotting import pyplot, save_figure

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12.8, 4.8), layout="constrained")
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, (label, entry) in enumerate(result["settings"].items()):
        colour = colours[index % len(colours)]
        name = f"{label} ({entry['solved']}/{entry['seeds']} solved)"
        for ax, key in zip(axes, ("band_steps", "band_seconds")):
            band = entry.get(key)
            if not band:
                continue
            x = np.asarray(band["x"], dtype=float)
            marker = "o" if len(x) <= 30 else None
            ax.plot(x, band["mean"], color=colour, marker=marker, markersize=3, label=name)
            ax.fill_between(x, band["lower"], band["upper"], color=colour, alpha=0.18, linewidth=0)
    for ax, xlabel in zip(axes, ("env steps", "wall-clock seconds (2 runs at a time on 2 cores)")):
        ax.axhline(result["threshold"], color="black", linewidth=0.8, linestyle="--", label=f"solved: {THRESHOLD:g}")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"evaluation return (mean of {result['eval_episodes']} episodes)")
        ax.grid(True, alpha=0.3)
    axes[0].xaxis.set_major_formatter(EngFormatter(sep=""))
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=5, fontsize="small", frameon=False,
               title="mean over seeds; band: min–max over seeds", title_fontsize="small")  # fmt: skip
    fig.suptitle(f"REINFORCE on {ENV}: {len(result['seeds'])} seeds per estimator, {result['budget']:,} steps")
    return save_figure(fig, output)


def _median(values: dict[str, Any], fmt: str) -> str:
    if values["median"] is None:
        return "–"
    return f"{values['median']:{fmt}} [{values['min']:{fmt}}, {values['max']:{fmt}}]"


COLUMNS = ("estimator", "solved", "steps to solve", "seconds to solve", "final eval", "best eval")


def summary_rows(result: dict[str, Any]) -> list[tuple[str, ...]]:
    """The summary table's rows: per estimator, seeds solved and median [min, max] of each figure."""
    return [
        (
            label,
            f"{entry['solved']}/{entry['seeds']}",
            _median(entry["solved_steps"], ",.0f"),
            _median(entry["solved_seconds"], ".1f"),
            _median(entry["final"], ".0f"),
            _median(entry["best"], ".0f"),
        )
        for label, entry in result["settings"].items()
    ]


def table(result: dict[str, Any]) -> str:
    """The summary as plain text, a column per figure (pastes into a terminal, a log or the docs alike)."""
    body = [COLUMNS, *summary_rows(result)]
    widths = [max(len(row[i]) for row in body) for i in range(len(COLUMNS))]
    lines = [
        "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
        for row in body
    ]
    title = f"REINFORCE on {ENV}: first evaluation >= {THRESHOLD:g}, median [min, max] over the seeds that solved"
    return "\n".join([title, *lines])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--plot-only", action="store_true", help="redraw from docs/results/reinforce.json; no runs")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="seeds per estimator")
    parser.add_argument("--budget", type=int, default=100_000, help="env steps per run")
    parser.add_argument("--eval-freq", type=int, default=5_000, help="evaluate every this many steps")
    parser.add_argument("--eval-episodes", type=int, default=5, help="episodes per evaluation")
    parser.add_argument(
        "--estimators", nargs="+", choices=[s.label for s in SETTINGS], default=[s.label for s in SETTINGS],
        help="the settings to run",
    )  # fmt: skip
    parser.add_argument(
        "--hyperparams", nargs="+", default=[], metavar="KEY=VALUE",
        help="override configs/reinforce.yml's CartPole entry, as -params does (e.g. normalize_advantage=false)",
    )  # fmt: skip
    parser.add_argument("--jobs", type=int, default=common.JOBS, help="runs at a time")
    args = parser.parse_args(argv)
    if args.plot_only:
        result = common.read_kept("reinforce")
    else:
        planned = jobs(args, [s for s in SETTINGS if s.label in args.estimators])
        started = time.perf_counter()
        done = run_jobs([job for *_, job in planned], args.jobs, common.RUNS / "reinforce" / "commands.log")
        result = {
            "claim": "lower-variance estimators solve in fewer steps: full_return slowest, baseline fastest",
            "env": ENV,
            "algo": ALGO,
            "threshold": THRESHOLD,
            "budget": args.budget,
            "seeds": args.seeds,
            "eval_freq": args.eval_freq,
            "eval_episodes": args.eval_episodes,
            "hyperparams": "configs/reinforce.yml CartPole-v1" + "".join(f", {h}" for h in args.hyperparams),
            "parallel_jobs": args.jobs,
            "seconds": round(time.perf_counter() - started, 1),
            "load_average_at_end": common.load_average(),
            "settings": collect(planned, {d.label: d.seconds for d in done}),
        }
        common.write_json("reinforce", result)
        common.write_csv("reinforce", rows(result))
    print(f"wrote {common.shown(draw(result, common.image('reinforce-curves.png')))}")
    print(table(result))
    if "seconds" in result:
        print(f"ran in {result['seconds']:.0f} s (load average {result['load_average_at_end']})")


if __name__ == "__main__":
    main()
