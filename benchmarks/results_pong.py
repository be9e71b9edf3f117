"""Results §7: A3C on Pong on 2 cores, the learning curve in frames and in wall-clock, against published scores.

The run itself is ``benchmarks/a3c_pong_long.py`` (at most 2.5 hours here; not a test). This script starts it with
the settings below unless ``--plot-only``, then reads its folder and writes:

- ``docs/results/a3c_pong_evaluations.csv`` (each periodic evaluation: steps, frames, hours, mean and std score),
  ``docs/results/a3c_pong_episodes.csv`` (every training episode: hours, frames, worker, score) and
  ``docs/results/a3c_pong.json`` (the settings, the best evaluation, when +18 was first reached, steps/s);
- ``docs/images/results/a3c-pong.png``: evaluation scores and the training episodes' rolling mean against frames
  and against hours, with the reference lines below.

References (both are other setups, drawn for scale, not as like-for-like targets):

- the A3C paper (Mnih et al. 2016, Table S3, human starts): A3C FF 1 day on 16 CPU cores 11.4, A3C FF 4 days 5.6,
  A3C LSTM 4 days 10.7;
- rl-baselines3-zoo's A2C (benchmark.md at DLR-RM/rl-baselines3-zoo@0088472b): 17.29 ± 3.21 after 10M steps
  (40M frames), stochastic policy.

    python benchmarks/results_pong.py                       # train (≤ 2.5 h), then plot
    python benchmarks/results_pong.py --plot-only --run runs/a3c_pong_bf16
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
from results_common import REPO, RUNS, image, shown, write_csv, write_json

FRAME_SKIP = 4
TARGET = 18.0
#: (label, score, line style): the published scores drawn as horizontal lines.
REFERENCES = (
    ("A3C paper, FF 1 day, 16 cores (human starts)", 11.4, ":"),
    ("A3C paper, LSTM 4 days (human starts)", 10.7, "-."),
    ("rl-baselines3-zoo A2C, 40M frames", 17.292, "--"),
)
#: The run's settings: issue 16's (2 workers × 8 envs, bf16, +18 within 2.5 hours).
LONG_RUN = [
    "--precision", "bf16", "--hours", "2.45", "--frames", "60000000",
    "--eval-every", "250000", "--eval-episodes", "5", "--stop-at", str(TARGET), "--log-interval", "1000",
]  # fmt: skip


def train(run: Path) -> None:
    """Run ``a3c_pong_long.py`` into ``run`` (its progress goes to the terminal)."""
    command = [sys.executable, str(REPO / "benchmarks" / "a3c_pong_long.py"), *LONG_RUN, "--out", str(run)]
    print("$ " + " ".join(command), flush=True)
    subprocess.run(command, check=True)


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def clock(run: Path) -> tuple[np.ndarray, np.ndarray]:
    """(timesteps, seconds since the start) pairs from the logger's ``progress.csv``, to put evaluations, which
    record only their timestep, on the wall-clock axis."""
    rows = [r for r in read_rows(run / "progress.csv") if r.get("time/total_timesteps") and r.get("time/time_elapsed")]
    steps = np.array([0.0] + [float(r["time/total_timesteps"]) for r in rows])
    seconds = np.array([0.0] + [float(r["time/time_elapsed"]) for r in rows])
    return steps, seconds


def evaluations(run: Path) -> list[dict[str, float]]:
    """One row per periodic evaluation: steps, frames, hours, mean and std of its episodes' scores."""
    path = run / "evaluations.npz"
    if not path.exists():
        return []
    with np.load(path, allow_pickle=False) as data:
        steps, scores = data["timesteps"].astype(float), data["results"].astype(float)
    clock_steps, clock_seconds = clock(run)
    hours = np.interp(steps, clock_steps, clock_seconds) / 3600
    return [
        {
            "steps": int(s),
            "frames": int(s) * FRAME_SKIP,
            "hours": round(float(h), 4),
            "mean": float(row.mean()),
            "std": float(row.std()),
        }
        for s, h, row in zip(steps, hours, scores)
    ]


def episodes(run: Path) -> list[dict[str, Any]]:
    """Every training episode a worker finished (``episodes.csv``): hours, frames, worker, score."""
    return [
        {
            "hours": round(float(r["wall_time"]) / 3600, 4),
            "frames": int(r["timesteps"]) * FRAME_SKIP,
            "worker": int(r["worker"]),
            "score": float(r["reward"]),
        }
        for r in read_rows(run / "episodes.csv")
    ]


def summary(evals: list[dict[str, float]], eps: list[dict[str, Any]], run: Path) -> dict[str, Any]:
    """The figures the results page quotes."""
    best = max(evals, key=lambda e: e["mean"]) if evals else None
    reached = next((e for e in evals if e["mean"] >= TARGET), None)
    clock_steps, clock_seconds = clock(run)
    total_steps, total_seconds = float(clock_steps[-1]), float(clock_seconds[-1])
    return {
        "settings": "benchmarks/a3c_pong_long.py " + " ".join(LONG_RUN),
        "run": shown(run),
        "target": TARGET,
        "reached_target": None if reached is None else {k: reached[k] for k in ("frames", "hours", "mean")},
        "best_evaluation": best,
        "last_evaluation": evals[-1] if evals else None,
        "evaluations": len(evals),
        "training_episodes": len(eps),
        "logged_steps": int(total_steps),
        "logged_hours": round(total_seconds / 3600, 3),
        "steps_per_second": round(total_steps / total_seconds, 1) if total_seconds else None,
        "references": {label: score for label, score, _ in REFERENCES},
    }


def draw(evals: list[dict[str, float]], eps: list[dict[str, Any]], output: Path, window: int = 20) -> Path:
    """Two panels, frames and hours: evaluation means (± std), the training episodes' rolling mean, references."""
    from pgplug.interop.curves import rolling_mean
    from pgplug.interop.plotting import pyplot, save_figure

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12.8, 4.8), layout="constrained")
    for ax, axis, label in ((axes[0], "frames", "frames (millions)"), (axes[1], "hours", "wall-clock (hours)")):
        scale = 1e6 if axis == "frames" else 1.0
        if eps:
            xs = np.array([e[axis] for e in eps]) / scale
            ax.plot(xs, rolling_mean(np.array([e["score"] for e in eps]), window), color="tab:blue", alpha=0.6,
                    label=f"training episodes (mean of the last {window})")  # fmt: skip
        if evals:
            xs = np.array([e[axis] for e in evals]) / scale
            means, stds = np.array([e["mean"] for e in evals]), np.array([e["std"] for e in evals])
            ax.errorbar(xs, means, yerr=stds, color="tab:red", marker="o", markersize=3, capsize=2,
                        label="evaluation (mean ± std of its episodes)")  # fmt: skip
        for text, score, style in REFERENCES:
            ax.axhline(score, color="grey", linestyle=style, linewidth=1, label=text)
        ax.axhline(TARGET, color="black", linewidth=0.8, label=f"target +{TARGET:.0f}")
        ax.set_xlabel(label)
        ax.set_ylabel("score (points won − points lost)")
        ax.set_ylim(-21.5, 21.5)
        ax.grid(True, alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=3, fontsize="small", frameon=False)
    fig.suptitle("A3C on PongNoFrameskip-v4, 2 workers × 8 envs on 2 cores")
    return save_figure(fig, output)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=RUNS / "a3c_pong", help="the long run's folder")
    parser.add_argument("--plot-only", action="store_true", help="read an existing run; do not train")
    args = parser.parse_args(argv)
    if not args.plot_only:
        train(args.run)
    if not (args.run / "episodes.csv").exists():
        raise SystemExit(f"{args.run} holds no run of a3c_pong_long.py (no episodes.csv); run without --plot-only")
    evals, eps = evaluations(args.run), episodes(args.run)
    write_csv("a3c_pong_evaluations", evals)
    write_csv("a3c_pong_episodes", eps)
    result = summary(evals, eps, args.run)
    write_json("a3c_pong", result)
    print(f"wrote {shown(draw(evals, eps, image('a3c-pong.png')))}")
    best, reached = result["best_evaluation"], result["reached_target"]
    if best:
        print(f"best evaluation {best['mean']:+.1f} at {best['frames'] / 1e6:.1f}M frames, {best['hours']:.2f} h")
    print("target +18: " + ("not reached" if reached is None else f"reached at {reached['hours']:.2f} h"))


if __name__ == "__main__":
    main()
