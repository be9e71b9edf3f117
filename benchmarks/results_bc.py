"""Results §5: behavioural cloning is the policy gradient with Ψ = 1, and a clone is a warm start for A2C.

The lecture's claim: with the expert's states and actions and Ψ_t = 1, the policy-gradient loss
−mean(log π(a_t|s_t) Ψ_t) is the negative log-likelihood of the expert's actions, so cloning an expert is one
more policy-gradient objective (pgplug's ``behavioural_cloning``, ``docs/behavioural-cloning.md``). A clone
gets better with more expert data, and starting A2C from a clone saves the RL steps it would take to learn
what the expert already knows. Measured on CartPole-v1 with pgplug's command line:

- the expert: SB3 PPO, 20k steps (``benchmarks/bc_warmstart.py --save-expert``), or ``--expert ZIP``;
- (a) clones: ``pgplug bc --expert EXPERT -n K --seed S`` (a new A2C of ``configs/a2c.yml``, 10 epochs of Adam
  at 1e-3 on K expert steps) for each K and seed; each clone's return (10 deterministic episodes, from
  ``bc.yml``), its action agreement with the expert on the K training states (``bc.yml``) and on held-out
  expert states (``--heldout-steps`` steps of the expert on other seeds, computed here);
- (b) warm start vs pure PG: ``pgplug train --algo a2c`` (``configs/a2c.yml``, learning rate 7e-4) from random
  weights and with ``--bc-warmstart EXPERT --bc-steps K``, same seeds, evaluated every ``--eval-freq`` steps:
  RL steps to the first evaluation ≥ 475 (also counting the K expert steps) and wall-clock seconds to it. The
  clone a warm start begins from is (a)'s clone of the same K and seed (same seeded student, data and updates;
  the script checks the printed action agreement), so (a)'s score is drawn at RL step 0.

Wall-clock is read from the checkpoints the runs save with each evaluation (``--save-freq``): the seconds
from the run's envs being made (its Monitor files' ``t_start``) to the checkpoint at that step, so it includes
building the model, the cloning and the evaluations so far. (The Monitor files themselves would not do: a
warm-started run's Monitor also logs the episodes the expert played during cloning, shifting the training
episodes' step count by the expert's.)

Writes ``docs/results/bc.csv`` (one row per clone and per evaluation of each A2C run), ``docs/results/bc.json``
(settings, expert, spreads over seeds) and ``docs/images/results/bc-clone.png``, ``bc-warmstart.png``.

    python benchmarks/results_bc.py                  # about 4 minutes on 2 quiet cores (2 jobs at a time)
    python benchmarks/results_bc.py --plot-only      # re-plot from docs/results/bc.csv and bc.json
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import results_common as common
from results_common import Done, Job, pgplug_command, spread, train_job

ENV = "CartPole-v1"
ALGO = "a2c"
#: CartPole-v1's reward threshold: "solved" at the first evaluation whose mean reaches it.
THRESHOLD = 475.0
SEEDS = (0, 1, 2)
CLONE_STEPS = (250, 1_000, 2_500, 10_000)
WARM_STEPS = (1_000, 10_000)
RL_STEPS = 40_000
EVAL_FREQ = 2_000
EVAL_EPISODES = 5
CLONE_EVAL_EPISODES = 10
HELDOUT_STEPS = 5_000
HELDOUT_SEED = 10_000
COLUMNS = ("part", "bc_steps", "seed", "rl_steps", "seconds", "score", "agreement_train", "agreement_heldout")


def setting(bc_steps: int) -> str:
    """The name of a part (b) setting: pure PG, or A2C warm-started on ``bc_steps`` expert steps."""
    return "A2C from scratch" if bc_steps == 0 else f"BC {bc_steps:,} + A2C"


# -- the runs ---------------------------------------------------------------------------------------------------


def expert_job(folder: Path) -> Job:
    """SB3 PPO on CartPole-v1 (``bc_warmstart.train_expert``) into ``folder/ppo_cartpole.zip``."""
    script = Path(__file__).resolve().parent / "bc_warmstart.py"
    return Job("expert: PPO, 20k steps", [sys.executable, str(script), "--save-expert", str(folder)])


def clone_job(expert: Path, bc_steps: int, seed: int, folder: Path, eval_episodes: int = CLONE_EVAL_EPISODES) -> Job:
    """``pgplug bc``: a new A2C cloned from ``bc_steps`` expert steps into ``folder/a2c/CartPole-v1_bc_1``."""
    command = pgplug_command(
        "bc", "--expert", str(expert), "--env", ENV, "-n", str(bc_steps), "--algo", ALGO, "--seed", str(seed),
        "-f", str(folder), "--n-eval-episodes", str(eval_episodes), "--num-threads", "1",
    )  # fmt: skip
    return Job(f"clone, {bc_steps:,} expert steps, seed {seed}", command)


def a2c_job(expert: Path | None, bc_steps: int, seed: int, folder: Path, args: argparse.Namespace) -> Job:
    """``pgplug train --algo a2c``, from scratch (``bc_steps`` 0) or ``--bc-warmstart``; a checkpoint with each
    evaluation, for the wall-clock."""
    extra = ["--save-freq", str(args.eval_freq)]
    if bc_steps:
        extra += ["--bc-warmstart", str(expert), "--bc-steps", str(bc_steps)]
    return train_job(
        f"{setting(bc_steps)}, seed {seed}", folder, ALGO, ENV, seed=seed, steps=args.rl_steps,
        eval_freq=args.eval_freq, eval_episodes=args.eval_episodes, extra=extra,
    )  # fmt: skip


# -- reading the runs back ---------------------------------------------------------------------------------------


def clone_run(folder: Path) -> Path:
    """The run ``pgplug bc`` made in ``folder``: ``<folder>/a2c/CartPole-v1_bc_<k>``."""
    return common.run_folder(folder, ALGO, f"{ENV}_bc")


def read_clone(run: Path) -> dict[str, float | None]:
    """The clone's and the expert's evaluation returns and the training action agreement, from ``bc.yml``."""
    import yaml

    record = yaml.safe_load((run / "bc.yml").read_text())
    return {
        "score": float(record["bc_return"]["mean"]),
        "expert": float(record["expert_return"]["mean"]),
        "agreement_train": record.get("action_agreement"),
    }


def heldout_states(expert: Path, steps: int = HELDOUT_STEPS, seed: int = HELDOUT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """``steps`` states the expert visits on one env seeded ``seed`` (none of the clones' seeds), and its actions."""
    from pgplug.interop.bc import collect_expert_data

    data = collect_expert_data(str(expert), ENV, steps, seed=seed)
    return np.asarray(data.observations), np.asarray(data.actions).reshape(-1)


def agreement(model: Any, observations: np.ndarray, actions: np.ndarray) -> float:
    """How often ``model``'s most likely action is the expert's ``actions`` in ``observations``."""
    predicted, _ = model.predict(observations, deterministic=True)
    return float(np.mean(np.asarray(predicted).reshape(-1) == actions))


def checkpoint_seconds(run: Path) -> dict[int, float]:
    """Seconds from the run's envs being made (the earliest Monitor ``t_start``) to each checkpoint
    ``rl_model_<steps>_steps.zip`` being written, by step."""
    from pgplug.interop.curves import read_monitor_file

    starts = [read_monitor_file(path)[0] for path in run.glob("*.monitor.csv")]
    if not starts:
        return {}
    origin = min(starts)
    seconds = {}
    for path in run.glob("rl_model_*_steps.zip"):
        match = re.fullmatch(r"rl_model_(\d+)_steps\.zip", path.name)
        if match:
            seconds[int(match.group(1))] = round(path.stat().st_mtime - origin, 3)
    return seconds


def printed_agreement(output: str) -> float | None:
    """The action agreement ``pgplug train --bc-warmstart`` printed for its clone (``... agreement 97.5%``)."""
    match = re.search(r"action agreement ([\d.]+)%", output)
    return None if match is None else round(float(match.group(1)) / 100, 4)


def a2c_rows(run: Path, bc_steps: int, seed: int, output: str = "") -> list[dict[str, Any]]:
    """One row per periodic evaluation of an A2C run: RL steps, wall-clock seconds, mean return."""
    from pgplug.interop.curves import read_evaluations

    evaluations, _ = read_evaluations(run)
    if evaluations is None:
        raise SystemExit(f"{run} holds no evaluations.npz")
    seconds = checkpoint_seconds(run)
    cloned = printed_agreement(output) if bc_steps else None
    return [
        row(
            "warmstart",
            bc_steps,
            seed,
            rl_steps=int(s),
            seconds=seconds.get(int(s)),
            score=float(y),
            agreement_train=cloned,
        )
        for s, y in zip(evaluations.steps, evaluations.y)
    ]


def row(part: str, bc_steps: int, seed: int, **values: Any) -> dict[str, Any]:
    """A row of ``bc.csv`` (columns not given are empty)."""
    return {"part": part, "bc_steps": bc_steps, "seed": seed} | {k: values.get(k) for k in COLUMNS[3:]}


def read_rows(path: Path) -> list[dict[str, Any]]:
    """``bc.csv`` back as typed rows (empty cells: None)."""
    return common.read_typed_csv(
        path, {c: int if c in ("bc_steps", "seed", "rl_steps") else float for c in COLUMNS[1:]}
    )


# -- summary -----------------------------------------------------------------------------------------------------


def clone_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r["part"] == "clone"]


def runs(rows: Sequence[dict[str, Any]]) -> dict[int, dict[int, list[dict[str, Any]]]]:
    """Part (b)'s evaluation rows by setting (expert steps, 0 for pure PG) and seed, in step order."""
    grouped: dict[int, dict[int, list[dict[str, Any]]]] = {}
    for r in rows:
        if r["part"] == "warmstart":
            grouped.setdefault(r["bc_steps"], {}).setdefault(r["seed"], []).append(r)
    return {
        k: {s: sorted(v, key=lambda r: r["rl_steps"]) for s, v in sorted(seeds.items())}
        for k, seeds in sorted(grouped.items())
    }


def solve_point(evaluations: Sequence[dict[str, Any]], threshold: float = THRESHOLD) -> dict[str, Any] | None:
    """The first evaluation whose mean return reached ``threshold`` (None: never, within the budget)."""
    return next((r for r in evaluations if r["score"] >= threshold), None)


def same(printed: float | None, cloned: float | None) -> bool:
    """Whether a warm start's printed action agreement (rounded to 0.1%) is its part (a) clone's."""
    return printed is not None and cloned is not None and abs(printed - cloned) < 1e-3


def summary(rows: Sequence[dict[str, Any]], expert_score: float | None, threshold: float = THRESHOLD) -> dict[str, Any]:
    """The figures the results page quotes: per expert-step count, the clones' spreads over seeds; per part (b)
    setting, steps and seconds to solve, last and best evaluation over seeds."""
    clones = []
    for k in sorted({r["bc_steps"] for r in clone_rows(rows)}):
        at_k = [r for r in clone_rows(rows) if r["bc_steps"] == k]
        clones.append(
            {
                "bc_steps": k,
                "seeds": len(at_k),
                "score": spread(r["score"] for r in at_k),
                "reached_threshold": sum(r["score"] >= threshold for r in at_k),
                "agreement_train": spread(r["agreement_train"] for r in at_k),
                "agreement_heldout": spread(r["agreement_heldout"] for r in at_k),
            }
        )
    by_clone = {(r["bc_steps"], r["seed"]): r for r in clone_rows(rows)}
    warm = []
    for k, seeds in runs(rows).items():
        points = [solve_point(evaluations, threshold) for evaluations in seeds.values()]
        same_clone = [
            same(evals[0]["agreement_train"], by_clone.get((k, s), {}).get("agreement_train"))
            for s, evals in seeds.items()
        ]
        warm.append(
            {
                "setting": setting(k),
                "bc_steps": k,
                "seeds": len(seeds),
                "solved": sum(p is not None for p in points),
                "rl_steps_to_solve": spread(None if p is None else p["rl_steps"] for p in points),
                "env_steps_to_solve": spread(None if p is None else p["rl_steps"] + k for p in points),
                "seconds_to_solve": spread(None if p is None else p["seconds"] for p in points),
                "first_evaluation": spread(e[0]["score"] for e in seeds.values()),
                "last_evaluation": spread(e[-1]["score"] for e in seeds.values()),
                "best_evaluation": spread(max(r["score"] for r in e) for e in seeds.values()),
                "starts_from_part_a_clone": all(same_clone) if k else None,
            }
        )
    return {"threshold": threshold, "expert_score": expert_score, "clones": clones, "warmstart": warm}


# -- pictures ----------------------------------------------------------------------------------------------------


def draw_clones(rows: Sequence[dict[str, Any]], expert_score: float | None, output: Path) -> Path:
    """Clone return and action agreement against expert steps: median over seeds, min–max bars, each seed a dot."""
    from pgplug.interop.plotting import pyplot, save_figure

    plt = pyplot()
    clones = clone_rows(rows)
    ks = sorted({r["bc_steps"] for r in clones})
    fig, (left, right) = plt.subplots(1, 2, figsize=(12.8, 4.8), layout="constrained")
    panels = (
        (left, (("score", "clone", "tab:blue"),), "return (mean of 10 deterministic episodes)"),
        (
            right,
            (
                ("agreement_heldout", "held-out expert states", "tab:green"),
                ("agreement_train", "the training states", "tab:grey"),
            ),
            "action agreement with the expert",
        ),
    )
    for ax, series, ylabel in panels:
        for key, label, colour in series:
            values = [[r[key] for r in clones if r["bc_steps"] == k and r[key] is not None] for k in ks]
            present = [(k, v) for k, v in zip(ks, values) if v]
            if not present:
                continue
            xs = np.array([k for k, _ in present], dtype=float)
            medians = np.array([np.median(v) for _, v in present])
            lows = medians - np.array([min(v) for _, v in present])
            highs = np.array([max(v) for _, v in present]) - medians
            ax.errorbar(
                xs,
                medians,
                yerr=[lows, highs],
                color=colour,
                marker="o",
                capsize=3,
                label=f"{label} (median, min–max over seeds)",
            )
            for k, v in present:
                ax.scatter([k] * len(v), v, color=colour, alpha=0.35, s=12)
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks(ks, [f"{k:,}" for k in ks])
        ax.set_xlabel("expert steps cloned (state, action pairs)")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
    if expert_score is not None:
        left.axhline(expert_score, color="black", linestyle="--", linewidth=1, label=f"expert ({expert_score:.0f})")
    left.set_ylim(0, 520)
    right.set_ylim(0.45, 1.01)
    right.axhline(0.5, color="grey", linestyle=":", linewidth=1, label="chance (two actions)")
    for ax in (left, right):
        ax.legend(loc="lower right", fontsize="small")
    seeds = len({r["seed"] for r in clones})
    fig.suptitle(
        f"Behavioural cloning on {ENV}: a new A2C policy cloned from k expert steps ({seeds} seed"
        + "s" * (seeds != 1)
        + ")"
    )
    return save_figure(fig, output)


def draw_warmstart(
    rows: Sequence[dict[str, Any]], expert_score: float | None, output: Path, threshold: float = THRESHOLD
) -> Path:
    """Evaluation return against RL steps (mean over seeds, min–max band; a warm start's curve begins at (a)'s
    clone of the same seed when it is the same clone) and against wall-clock seconds (each seed its own line:
    their clocks differ)."""
    from pgplug.interop.curves import Curve, summarise
    from pgplug.interop.plotting import pyplot, save_figure

    plt = pyplot()
    by_clone = {(r["bc_steps"], r["seed"]): r["score"] for r in clone_rows(rows)}
    starts = {w["bc_steps"]: w["starts_from_part_a_clone"] for w in summary(rows, expert_score)["warmstart"]}
    fig, (by_steps, by_time) = plt.subplots(1, 2, figsize=(12.8, 4.8), layout="constrained", sharey=True)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, (k, seeds) in enumerate(runs(rows).items()):
        colour, name = colours[index % len(colours)], f"{setting(k)} ({len(seeds)} seed{'s' * (len(seeds) != 1)})"
        curves = []
        for s, evals in seeds.items():
            steps = np.array([r["rl_steps"] for r in evals], dtype=float)
            ys = np.array([r["score"] for r in evals])
            if k and starts.get(k) and (k, s) in by_clone:
                steps, ys = np.insert(steps, 0, 0.0), np.insert(ys, 0, by_clone[(k, s)])
            curves.append(Curve(steps=steps, y=ys))
            timed = [r for r in evals if r["seconds"] is not None]
            by_time.plot([r["seconds"] for r in timed], [r["score"] for r in timed], color=colour, alpha=0.7,
                         linewidth=1, label=name if s == min(seeds) else None)  # fmt: skip
        band = summarise(curves, axis="steps")
        by_steps.plot(band.x / 1e3, band.mean, color=colour, label=name)
        by_steps.fill_between(band.x / 1e3, band.lower, band.upper, color=colour, alpha=0.2, linewidth=0)
    labels = (
        ("A2C steps (thousands; the warm starts' expert steps not counted)", "mean over seeds, min–max band"),
        ("wall-clock seconds (from making the envs: cloning and evaluations included)", "each seed"),
    )
    for ax, (xlabel, what) in zip((by_steps, by_time), labels):
        if expert_score is not None:
            ax.axhline(expert_score, color="black", linestyle="--", linewidth=1, label=f"expert ({expert_score:.0f})")
        ax.axhline(threshold, color="grey", linestyle=":", linewidth=1, label=f"solved ({threshold:.0f})")
        ax.set_xlabel(xlabel)
        ax.set_title(f"evaluation return, {what}", fontsize="medium")
        ax.set_ylim(0, 520)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="lower right", fontsize="small")
    fig.suptitle(f"A2C on {ENV} (configs/a2c.yml): from random weights vs from a behavioural clone")
    return save_figure(fig, output)


# -- main --------------------------------------------------------------------------------------------------------


def run_all(args: argparse.Namespace) -> tuple[list[dict[str, Any]], float | None, list[str]]:
    """Train the expert (unless given), the clones and the A2C runs; rows of ``bc.csv``, the expert's score and
    one command of each kind, for the record."""
    root = common.fresh_folder("bc")
    log = root / "commands.log"
    expert = args.expert
    phase_one = [
        a2c_job(None, 0, seed, common.fresh_folder("bc", f"a2c-scratch-seed{seed}"), args) for seed in args.seeds
    ]
    if expert is None:  # the expert trains beside the runs that do not need it
        phase_one.insert(0, expert_job(root / "expert"))
        expert = root / "expert" / "ppo_cartpole.zip"
    expert = expert.resolve()
    clone_folders = {
        (k, s): common.fresh_folder("bc", f"clone-{k}-seed{s}") for k in args.clone_steps for s in args.seeds
    }
    warm_folders = {
        (k, s): common.fresh_folder("bc", f"a2c-bc{k}-seed{s}") for k in args.warm_steps for s in args.seeds
    }
    phase_two = [clone_job(expert, k, s, folder) for (k, s), folder in clone_folders.items()]
    phase_two += [a2c_job(expert, k, s, folder, args) for (k, s), folder in warm_folders.items()]
    done: dict[str, Done] = {d.label: d for d in common.run_jobs(phase_one, log=log)}
    done |= {d.label: d for d in common.run_jobs(phase_two, log=log)}

    observations, actions = heldout_states(expert, args.heldout_steps)
    import pgplug

    rows, expert_scores = [], []
    for (k, s), folder in clone_folders.items():
        run = clone_run(folder)
        clone = read_clone(run)
        expert_scores.append(clone["expert"])
        model = pgplug.load(run / f"{ENV}.zip", device="cpu")
        rows.append(
            row(
                "clone",
                k,
                s,
                rl_steps=0,
                score=clone["score"],
                agreement_train=clone["agreement_train"],
                agreement_heldout=agreement(model, observations, actions),
            )
        )
    for seed in args.seeds:
        folder = common.RUNS / "bc" / f"a2c-scratch-seed{seed}"
        rows += a2c_rows(common.run_folder(folder, ALGO, ENV), 0, seed)
    for (k, s), folder in warm_folders.items():
        rows += a2c_rows(common.run_folder(folder, ALGO, ENV), k, s, done[f"{setting(k)}, seed {s}"].output)
    examples = [phase_two[0], phase_one[-1]] + ([phase_two[-1]] if args.warm_steps else [])  # bc, scratch, warm
    commands = [shlex.join(job.command) for job in examples]
    expert_score = float(np.mean(expert_scores)) if expert_scores else None
    return rows, expert_score, commands


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--plot-only", action="store_true", help="re-plot from docs/results/bc.csv and bc.json")
    parser.add_argument("--expert", type=Path, help="an expert zip (default: train SB3 PPO, 20k steps)")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--clone-steps", type=int, nargs="+", default=list(CLONE_STEPS), help="(a): expert steps")
    parser.add_argument("--warm-steps", type=int, nargs="+", default=list(WARM_STEPS), help="(b): --bc-steps")
    parser.add_argument("--rl-steps", type=int, default=RL_STEPS, help="(b): A2C steps per run")
    parser.add_argument("--eval-freq", type=int, default=EVAL_FREQ, help="(b): evaluate every N A2C steps")
    parser.add_argument("--eval-episodes", type=int, default=EVAL_EPISODES, help="(b): episodes per evaluation")
    parser.add_argument("--heldout-steps", type=int, default=HELDOUT_STEPS, help="(a): held-out expert states")
    args = parser.parse_args(argv)

    if args.plot_only:
        expert_score = common.read_kept("bc")["expert_score"]
        rows = read_rows(common.RESULTS / "bc.csv")
    else:
        started = time.perf_counter()
        print(f"load average {common.load_average()}", flush=True)
        rows, expert_score, commands = run_all(args)
        result = {
            "claim": "behavioural cloning is the policy gradient with Ψ = 1; a clone warm-starts A2C",
            "env": ENV,
            "settings": {
                "seeds": args.seeds,
                "clone_steps": args.clone_steps,
                "warm_steps": args.warm_steps,
                "rl_steps": args.rl_steps,
                "eval_freq": args.eval_freq,
                "eval_episodes": args.eval_episodes,
                "clone_eval_episodes": CLONE_EVAL_EPISODES,
                "heldout_steps": args.heldout_steps,
                "heldout_seed": HELDOUT_SEED,
                "expert": str(args.expert) if args.expert else "SB3 PPO, 20k steps (benchmarks/bc_warmstart.py)",
            },
            "commands": commands,
            **summary(rows, expert_score),
            "wall_seconds": round(time.perf_counter() - started, 1),
            "load_average_at_end": common.load_average(),
        }
        common.write_csv("bc", rows)
        common.write_json("bc", result)
    print(f"wrote {draw_clones(rows, expert_score, common.image('bc-clone.png'))}")
    print(f"wrote {draw_warmstart(rows, expert_score, common.image('bc-warmstart.png'))}")
    for w in summary(rows, expert_score)["warmstart"]:
        steps = w["rl_steps_to_solve"]["median"]
        print(f"{w['setting']}: solved {w['solved']}/{w['seeds']}, median RL steps to solve {steps}")


if __name__ == "__main__":
    main()
