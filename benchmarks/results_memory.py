"""Results §6: a feed-forward policy cannot remember, an LSTM policy can (A2C and A3C on a memory task; Pong).

Pong is played with one frame per step, so only memory tells which way the ball is moving.

The lecture's claim: a policy that sees only the current observation cannot act on what it saw earlier; an LSTM
policy carries it in its hidden state (the A3C paper's A3C LSTM replaces frame stacking by memory). Measured with
pgplug's command line (``pgplug train ... -params policy=...``):

- (a) ``pgplug/CueMemory-v0`` (``pgplug/toy_envs.py``): a cue (−1 or +1) at step 0, four blank steps, then the
  answer, rewarded +1 if it names the cue, −1 otherwise. Chance is 0; the answer step's observation is the same
  whatever the cue, so a feed-forward policy cannot beat chance; a remembering one scores 1. A2C (8 envs) and
  A3C (2 worker processes × 4 envs), each with ``MlpPolicy`` and ``MlpLstmPolicy`` (32 units), the settings of
  ``benchmarks/recurrent.py`` (rollouts of 6 steps, learning rate 1e-3, entropy 0.01), ``--seeds``; evaluated every
  ``--cue-eval-freq`` steps on 100 deterministic episodes (± 0.1 is one standard error at chance). Reported: the
  last and best evaluation over seeds, how many seeds solved it (an evaluation ≥ 0.9) and when, steps/s
  (evaluations included).
- (b) ``PongNoFrameskip-v4`` with one frame per step (no frame stack), A3C (2 workers × 8 envs), ``CnnPolicy``
  with ``-params frame_stack=1`` against ``CnnLstmPolicy`` (``configs/a3c.yml``'s ``atari/CnnLstmPolicy``: the
  paper's 256-unit LSTM, t_max 20, one frame per step), one seed each. ``--pong-steps`` (250k steps, 1M frames:
  about 4 and 7 minutes) is far too few to learn Pong on 2 cores (§7's A3C needs millions): what is measurable
  is what the LSTM costs (steady env steps/s, from the training episodes' clock) and the start of the curve
  (near −21 for both at this budget, as expected).

The A2C runs go two at a time (one core each); A3C runs, which use both cores, one at a time.

Writes ``docs/results/memory.csv`` (every evaluation; for Pong also every training episode), ``memory.json``
(settings, commands, spreads over seeds, steps/s) and ``docs/images/results/memory-cue.png``,
``memory-pong.png``.

    python benchmarks/results_memory.py                  # about 16 minutes on 2 quiet cores
    python benchmarks/results_memory.py --part cue       # the memory task only, about 5 minutes
    python benchmarks/results_memory.py --plot-only      # re-plot from docs/results/memory.csv and memory.json
"""

from __future__ import annotations

import argparse
import shlex
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import results_common as common
from recurrent import CUE_ID, CUE_KWARGS, CUE_LSTM_KWARGS, CUE_ROLLOUT, N_ENVS, N_WORKERS
from results_common import Done, Job, spread, train_job

CUE_NAME = "pgplug-CueMemory-v0"  # the run folders' name for CUE_ID
PONG = "PongNoFrameskip-v4"
FRAME_SKIP = 4
SEEDS = (0, 1, 2)
ALGOS = ("a2c", "a3c")
CUE_POLICIES = ("MlpPolicy", "MlpLstmPolicy")
PONG_POLICIES = ("CnnPolicy", "CnnLstmPolicy")
CUE_STEPS = 30_000
CUE_EVAL_FREQ = 1_000
CUE_EVAL_EPISODES = 100
#: CueMemory "solved": an evaluation's mean ≥ this (95% of the answers right).
CUE_SOLVED = 0.9
PONG_STEPS = 250_000
PONG_EVAL_FREQ = 125_000
PONG_EVAL_EPISODES = 3
PONG_SEED = 0
COLUMNS = ("task", "algo", "policy", "seed", "kind", "steps", "seconds", "score")


def count(seeds: int) -> str:
    return f"{seeds} seed" + ("s" if seeds != 1 else "")


def lstm(policy: str) -> bool:
    return "Lstm" in policy


def label(algo: str, policy: str) -> str:
    """``A2C LSTM``, ``A3C feed-forward``, ...: the name of a learner in tables and legends."""
    return f"{algo.upper()} {'LSTM' if lstm(policy) else 'feed-forward'}"


# -- the runs ---------------------------------------------------------------------------------------------------


def cue_hyperparams(algo: str, policy: str) -> list[str]:
    """``-params`` of a CueMemory run: ``benchmarks/recurrent.py``'s settings (8 envs, rollouts of 6 steps)."""
    values = [f"policy={policy}", *(f"{k}={v}" for k, v in CUE_KWARGS.items())]
    if algo == "a3c":
        values += [f"n_workers={N_WORKERS}", f"n_envs_per_worker={N_ENVS // N_WORKERS}", f"t_max={CUE_ROLLOUT}"]
    else:
        values += [f"n_envs={N_ENVS}", f"n_steps={CUE_ROLLOUT}"]
    if lstm(policy):
        values.append("policy_kwargs={" + ", ".join(f"{k}: {v}" for k, v in CUE_LSTM_KWARGS.items()) + "}")
    return values


def cue_job(algo: str, policy: str, seed: int, folder: Path, args: argparse.Namespace) -> Job:
    return train_job(
        f"CueMemory {label(algo, policy)}, seed {seed}", folder, algo, CUE_ID, seed=seed, steps=args.cue_steps,
        eval_freq=args.cue_eval_freq, eval_episodes=CUE_EVAL_EPISODES, hyperparams=cue_hyperparams(algo, policy),
    )  # fmt: skip


def pong_hyperparams(policy: str) -> list[str]:
    """One frame per step: the LSTM entry has it; the feed-forward one's frame stack of 4 is turned off."""
    return [f"policy={policy}"] if lstm(policy) else [f"policy={policy}", "frame_stack=1"]


def pong_job(policy: str, folder: Path, args: argparse.Namespace) -> Job:
    return train_job(
        f"Pong A3C {policy}, one frame per step", folder, "a3c", PONG, seed=PONG_SEED, steps=args.pong_steps,
        eval_freq=args.pong_eval_freq, eval_episodes=PONG_EVAL_EPISODES, hyperparams=pong_hyperparams(policy),
    )  # fmt: skip


# -- reading the runs back ---------------------------------------------------------------------------------------


def episodes(run: Path, frame_skip: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A run's training episodes in the order they ended: (env steps so far, seconds, return).

    :param frame_skip: what Monitor's episode lengths count per env step (Atari: the Monitor sits under
        ``AtariWrapper`` and counts emulator frames, 4 to a step)
    """
    from pgplug.interop.curves import read_episodes

    curve = read_episodes(run)
    if curve is None:
        return np.empty(0), np.empty(0), np.empty(0)
    return curve.steps / frame_skip, np.asarray(curve.seconds, dtype=float), curve.y


def steady_rate(steps: np.ndarray, seconds: np.ndarray, start: float = 0.2) -> float | None:
    """Env steps per second from ``start`` of the run's logged steps to its end (the workers all running)."""
    if len(steps) < 2:
        return None
    first = int(np.searchsorted(steps, start * steps[-1]))
    first = min(first, len(steps) - 2)
    elapsed = seconds[-1] - seconds[first]
    return None if elapsed <= 0 else float((steps[-1] - steps[first]) / elapsed)


def run_rows(
    run: Path, task: str, algo: str, policy: str, seed: int, frame_skip: int = 1, with_episodes: bool = False
) -> list[dict[str, Any]]:
    """Rows of ``memory.csv`` for one run: each evaluation (its seconds read off the training episodes' clock),
    and with ``with_episodes`` each training episode."""
    from pgplug.interop.curves import read_evaluations

    steps, seconds, returns = episodes(run, frame_skip)
    evaluations, _ = read_evaluations(run)
    key = {"task": task, "algo": algo, "policy": policy, "seed": seed}
    rows = []
    if evaluations is not None:
        at = np.interp(evaluations.steps, steps, seconds) if len(steps) > 1 else [None] * len(evaluations.steps)
        rows += [
            key
            | {
                "kind": "evaluation",
                "steps": int(s),
                "seconds": None if t is None else round(float(t), 2),
                "score": float(y),
            }
            for s, t, y in zip(evaluations.steps, at, evaluations.y)
        ]
    if with_episodes:
        rows += [
            key | {"kind": "episode", "steps": int(s), "seconds": round(float(t), 2), "score": float(r)}
            for s, t, r in zip(steps, seconds, returns)
        ]
    return rows


def read_rows(path: Path) -> list[dict[str, Any]]:
    """``memory.csv`` back as typed rows (empty cells: None)."""
    return common.read_typed_csv(path, {"seed": int, "steps": int, "seconds": float, "score": float})


# -- summary -----------------------------------------------------------------------------------------------------


def select(rows: Sequence[dict[str, Any]], **match: Any) -> list[dict[str, Any]]:
    return [r for r in rows if all(r[k] == v for k, v in match.items())]


def by_seed(rows: Sequence[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    """Rows by seed, each in step order."""
    seeds: dict[int, list[dict[str, Any]]] = {}
    for r in rows:
        seeds.setdefault(r["seed"], []).append(r)
    return {s: sorted(v, key=lambda r: r["steps"]) for s, v in sorted(seeds.items())}


def cue_summary(rows: Sequence[dict[str, Any]], solved_at: float = CUE_SOLVED) -> list[dict[str, Any]]:
    """Per learner: last and best evaluation over seeds, seeds solved and the steps to it."""
    learners = []
    for algo in ALGOS:
        for policy in CUE_POLICIES:
            seeds = by_seed(select(rows, task="cue", algo=algo, policy=policy, kind="evaluation"))
            if not seeds:
                continue
            firsts = [next((r for r in evals if r["score"] >= solved_at), None) for evals in seeds.values()]
            learners.append(
                {
                    "learner": label(algo, policy),
                    "algo": algo,
                    "policy": policy,
                    "seeds": len(seeds),
                    "last_evaluation": spread(e[-1]["score"] for e in seeds.values()),
                    "best_evaluation": spread(max(r["score"] for r in e) for e in seeds.values()),
                    "solved": sum(f is not None for f in firsts),
                    "steps_to_solve": spread(None if f is None else f["steps"] for f in firsts),
                }
            )
    return learners


def pong_summary(rows: Sequence[dict[str, Any]], window: int = 20) -> list[dict[str, Any]]:
    """Per policy: steps trained, steady steps/s, training episodes and the mean of the last ``window``, the
    evaluations."""
    policies = []
    for policy in PONG_POLICIES:
        eps = sorted(select(rows, task="pong", policy=policy, kind="episode"), key=lambda r: r["steps"])
        evals = sorted(select(rows, task="pong", policy=policy, kind="evaluation"), key=lambda r: r["steps"])
        if not eps and not evals:
            continue
        steps = np.array([r["steps"] for r in eps], dtype=float)
        seconds = np.array([r["seconds"] for r in eps], dtype=float)
        last = [r["score"] for r in eps[-window:]]
        policies.append(
            {
                "policy": policy,
                "frame_stack": 1,
                "logged_steps": int(steps[-1]) if len(steps) else None,
                "logged_minutes": round(float(seconds[-1]) / 60, 2) if len(seconds) else None,
                "steps_per_second": None if (rate := steady_rate(steps, seconds)) is None else round(rate, 1),
                "training_episodes": len(eps),
                f"mean_of_last_{window}_episodes": float(np.mean(last)) if last else None,
                "evaluations": [{"steps": r["steps"], "score": r["score"]} for r in evals],
            }
        )
    rates = {p["policy"]: p["steps_per_second"] for p in policies}
    if rates.get("CnnPolicy") and rates.get("CnnLstmPolicy"):
        for p in policies:
            p["speed_vs_feed_forward"] = round(p["steps_per_second"] / rates["CnnPolicy"], 3)
    return policies


# -- pictures ----------------------------------------------------------------------------------------------------


def draw_cue(rows: Sequence[dict[str, Any]], output: Path, episodes_per_evaluation: int = CUE_EVAL_EPISODES) -> Path:
    """One panel per algorithm: evaluation score against env steps, feed-forward and LSTM, mean over seeds with
    the min–max band; chance (± 2 standard errors of an evaluation) and the optimum as references."""
    from pgplug.interop.curves import Curve, summarise
    from pgplug.interop.plotting import pyplot, save_figure

    plt = pyplot()
    fig, axes = plt.subplots(1, len(ALGOS), figsize=(12.8, 4.8), layout="constrained", sharey=True)
    noise = 2 / np.sqrt(episodes_per_evaluation)
    for ax, algo in zip(axes, ALGOS):
        for policy, colour in zip(CUE_POLICIES, ("tab:orange", "tab:blue")):
            seeds = by_seed(select(rows, task="cue", algo=algo, policy=policy, kind="evaluation"))
            if not seeds:
                continue
            curves = [
                Curve(np.array([r["steps"] for r in e], float), np.array([r["score"] for r in e]))
                for e in seeds.values()
            ]
            band = summarise(curves)
            ax.plot(band.x / 1e3, band.mean, color=colour, label=f"{label(algo, policy)} ({count(len(seeds))})")
            ax.fill_between(band.x / 1e3, band.lower, band.upper, color=colour, alpha=0.2, linewidth=0)
        ax.axhspan(
            -noise,
            noise,
            color="grey",
            alpha=0.15,
            linewidth=0,
            label=f"chance ± 2 s.e. ({episodes_per_evaluation} episodes)",
        )
        ax.axhline(0, color="grey", linewidth=0.8)
        ax.axhline(1, color="black", linestyle="--", linewidth=1, label="always right")
        ax.set_title(
            {"a2c": f"A2C, {N_ENVS} envs", "a3c": f"A3C, {N_WORKERS} workers × {N_ENVS // N_WORKERS} envs"}[algo]
        )
        ax.set_xlabel("env steps (thousands)")
        ax.set_ylim(-1.05, 1.05)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="lower right", fontsize="small")
    axes[0].set_ylabel("evaluation return (mean over seeds, min–max band)")
    fig.suptitle("CueMemory-v0: name a cue seen 5 steps earlier (+1 right, −1 wrong)")
    return save_figure(fig, output)


def draw_pong(rows: Sequence[dict[str, Any]], rates: dict[str, float | None], output: Path, window: int = 20) -> Path:
    """Two panels, env steps and wall-clock minutes: the training episodes' rolling mean and the evaluations of
    the feed-forward and the LSTM policy, one frame per step."""
    from pgplug.interop.curves import rolling_mean
    from pgplug.interop.plotting import pyplot, save_figure

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12.8, 4.8), layout="constrained", sharey=True)
    for policy, colour in zip(PONG_POLICIES, ("tab:orange", "tab:blue")):
        eps = sorted(select(rows, task="pong", policy=policy, kind="episode"), key=lambda r: r["steps"])
        evals = sorted(select(rows, task="pong", policy=policy, kind="evaluation"), key=lambda r: r["steps"])
        rate = rates.get(policy)
        name = f"{'LSTM' if lstm(policy) else 'feed-forward'} ({policy}"
        name += f", {rate:,.0f} steps/s)" if rate else ")"
        for ax, axis, scale in ((axes[0], "steps", 1e3), (axes[1], "seconds", 60.0)):
            if eps:
                xs = np.array([r[axis] for r in eps], dtype=float) / scale
                ys = rolling_mean(np.array([r["score"] for r in eps]), window)
                ax.plot(xs, ys, color=colour, label=f"{name}: training episodes, mean of last {window}")
            timed = [r for r in evals if r[axis] is not None]
            if timed:
                ax.plot(
                    [r[axis] / scale for r in timed],
                    [r["score"] for r in timed],
                    color=colour,
                    marker="o",
                    linestyle="none",
                    label=f"{name}: evaluations",
                )
    top = max([-10.0, *(r["score"] + 1 for r in select(rows, task="pong"))])
    for ax, xlabel in zip(axes, ("env steps (thousands; 4 frames each)", "wall-clock minutes")):
        ax.axhline(-21, color="grey", linestyle=":", linewidth=1)
        ax.set_xlabel(xlabel)
        ax.set_ylim(-21.5, top)
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("score (points won − points lost)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=2, fontsize="small", frameon=False)
    fig.suptitle(f"A3C on {PONG}, one frame per step, 2 workers × 8 envs: the first steps only")
    return save_figure(fig, output)


# -- main --------------------------------------------------------------------------------------------------------


def rate_of(run: Path, frame_skip: int = 1) -> float | None:
    steps, seconds, _ = episodes(run, frame_skip)
    return steady_rate(steps, seconds)


def run_cue(args: argparse.Namespace, log: Path) -> tuple[list[dict[str, Any]], dict[str, float | None], list[str]]:
    """The CueMemory runs (A2C two at a time, A3C one at a time): rows, median steps/s per learner, commands."""
    folders = {
        (a, p, s): common.fresh_folder("memory", f"cue-{a}-{p}-seed{s}")
        for a in ALGOS
        for p in CUE_POLICIES
        for s in args.seeds
    }
    jobs = {key: cue_job(*key, folder, args) for key, folder in folders.items()}
    common.run_jobs([job for (a, _, _), job in jobs.items() if a == "a2c"], log=log)
    common.run_jobs([job for (a, _, _), job in jobs.items() if a == "a3c"], parallel=1, log=log)
    rows, rates = [], {}
    for algo in ALGOS:
        for policy in CUE_POLICIES:
            per_seed = []
            for seed in args.seeds:
                run = common.run_folder(folders[(algo, policy, seed)], algo, CUE_NAME)
                rows += run_rows(run, "cue", algo, policy, seed)
                per_seed.append(rate_of(run))
            rates[label(algo, policy)] = spread(per_seed)["median"]
    return rows, rates, [shlex.join(jobs[(a, p, args.seeds[0])].command) for a in ALGOS for p in CUE_POLICIES]


def run_pong(args: argparse.Namespace, log: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """The two Pong runs, one at a time: rows and commands."""
    folders = {p: common.fresh_folder("memory", f"pong-{p}") for p in PONG_POLICIES}
    jobs = [pong_job(policy, folder, args) for policy, folder in folders.items()]
    done: list[Done] = common.run_jobs(jobs, parallel=1, log=log)
    rows = []
    for policy, folder in folders.items():
        run = common.run_folder(folder, "a3c", PONG)
        rows += run_rows(run, "pong", "a3c", policy, PONG_SEED, frame_skip=FRAME_SKIP, with_episodes=True)
    print("; ".join(f"{d.label}: {d.seconds:.0f} s" for d in done))
    return rows, [shlex.join(job.command) for job in jobs]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--plot-only", action="store_true", help="re-plot from docs/results/memory.csv and .json")
    parser.add_argument("--part", nargs="+", choices=["cue", "pong"], default=["cue", "pong"])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS), help="(a): seeds of each learner")
    parser.add_argument("--cue-steps", type=int, default=CUE_STEPS, help="(a): env steps per run")
    parser.add_argument("--cue-eval-freq", type=int, default=CUE_EVAL_FREQ, help="(a): evaluate every N steps")
    parser.add_argument("--pong-steps", type=int, default=PONG_STEPS, help="(b): env steps per run (4 frames each)")
    parser.add_argument("--pong-eval-freq", type=int, default=PONG_EVAL_FREQ, help="(b): evaluate every N steps")
    args = parser.parse_args(argv)

    if args.plot_only:
        result = common.read_kept("memory")
        rows = read_rows(common.RESULTS / "memory.csv")
    else:
        started = time.perf_counter()
        print(f"load average {common.load_average()}", flush=True)
        root = common.fresh_folder("memory")
        rows, commands, cue_rates_ = [], [], {}
        if "cue" in args.part:
            cue_rows_, cue_rates_, cue_commands = run_cue(args, root / "commands.log")
            rows, commands = rows + cue_rows_, commands + cue_commands
        if "pong" in args.part:
            pong_rows, pong_commands = run_pong(args, root / "commands.log")
            rows, commands = rows + pong_rows, commands + pong_commands
        result = {
            "claim": "a feed-forward policy cannot beat chance on a cue it must remember; an LSTM policy can",
            "settings": {
                "seeds": args.seeds,
                "cue_env": CUE_ID,
                "cue_steps": args.cue_steps,
                "cue_eval_freq": args.cue_eval_freq,
                "cue_eval_episodes": CUE_EVAL_EPISODES,
                "cue_solved": CUE_SOLVED,
                "cue_hyperparams": {f"{a} {p}": cue_hyperparams(a, p) for a in ALGOS for p in CUE_POLICIES},
                "pong_env": PONG,
                "pong_seed": PONG_SEED,
                "pong_steps": args.pong_steps,
                "pong_eval_freq": args.pong_eval_freq,
                "pong_eval_episodes": PONG_EVAL_EPISODES,
                "pong_hyperparams": {p: pong_hyperparams(p) for p in PONG_POLICIES},
            },
            "commands": commands,
            "cue": [c | {"steps_per_second_with_evaluations": cue_rates_.get(c["learner"])} for c in cue_summary(rows)],
            "pong": pong_summary(rows),
            "wall_seconds": round(time.perf_counter() - started, 1),
            "load_average_at_end": common.load_average(),
        }
        common.write_csv("memory", rows)
        common.write_json("memory", result)
    if select(rows, task="cue"):
        print(f"wrote {draw_cue(rows, common.image('memory-cue.png'))}")
    if select(rows, task="pong"):
        rates = {p["policy"]: p["steps_per_second"] for p in result["pong"]}
        print(f"wrote {draw_pong(rows, rates, common.image('memory-pong.png'))}")
    for c in result["cue"]:
        last = c["last_evaluation"]
        print(
            f"CueMemory {c['learner']}: last evaluation median {last['median']:+.2f} "
            f"(min {last['min']:+.2f}, max {last['max']:+.2f}), solved {c['solved']}/{c['seeds']}"
        )
    for p in result["pong"]:
        print(f"Pong {p['policy']}: {p['steps_per_second']} steps/s over {p['logged_steps']} steps")


if __name__ == "__main__":
    main()
