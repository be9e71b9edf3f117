"""Results §3: actor-critic advantage estimators (td, n-step, GAE) under A2C on four classic-control tasks.

The lecture's claim: a critic lets the policy gradient bootstrap instead of waiting for whole episodes, and the
estimators trade bias for variance along one axis (``td``: one step, low variance, biased by the critic;
``nstep``: n steps; ``gae``: an exponential mix of all of them), so that all of them learn these tasks, with
A2C reaching the scores rl-baselines3-zoo publishes for it.

What is measured: ``pgplug train --algo a2c`` with configs/a2c.yml's settings for each env (rl-baselines3-zoo's
hyperparameters: CartPole-v1, Acrobot-v1 and MountainCar-v0, the latter two under VecNormalize, and
LunarLander-v3, the zoo's LunarLander-v2) and each estimator setting, several seeds, every run its own
``pgplug train`` evaluated every few thousand steps (5 deterministic episodes). Per env × estimator: the steps
(and wall-clock seconds) to the first evaluation at the threshold (CartPole 475, Acrobot −100, MountainCar −110,
LunarLander 200), the last and the best evaluation, against the zoo's published A2C score.

Estimator settings that compute the same advantages on the rollouts used are run once (docs/estimators.md,
Identities): ``nstep n=1`` is ``td`` on every rollout, and ``nstep n=k`` with k ≥ ``n_steps`` (the rollout's
length; 5 in the zoo's configs) is ``nstep n=None``. With the zoo's ``n_steps`` 5 that leaves td, nstep n=None
(= n=5) and gae λ=0.95. ``--n-steps 20`` makes n=5 differ from n=None, at the price of leaving the zoo's settings;
n=1 is td whatever the rollout.

Budgets (all within 25 minutes on 2 cores): CartPole 150k and Acrobot 200k steps of the zoo's 500k (A2C is
expected to solve both well before; the curves show whether the runs had levelled off); MountainCar 400k of the
zoo's 1M (the zoo's own run ends at −111, short of −110); LunarLander the zoo's 200k. The output says which
budget each env got against the zoo's. Writes ``docs/results/actor_critic.json`` (settings, summary, every run's
evaluations) and ``.csv`` (a row per env × estimator × seed) and ``docs/images/results/actor-critic-curves.png``,
and prints a summary table.

    python benchmarks/results_actor_critic.py                    # make results-actor_critic; ≤ 22 min on 2 cores
    python benchmarks/results_actor_critic.py --plot-only        # redraw and reprint from the JSON
    python benchmarks/results_actor_critic.py --envs CartPole-v1 --seeds 0 1 2 3 4 --steps CartPole-v1=500000
    python benchmarks/results_actor_critic.py --n-steps 20       # rollouts long enough for n=5 and n=None to differ
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from results_common import (
    JOBS,
    REPO,
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
from results_common import EstimatorSetting as Setting

NAME = "actor_critic"
PICTURE = "actor-critic-curves.png"
ALGO = "a2c"
#: A2C's own ``n_steps`` (plugins/a2c.py), for configs/a2c.yml's entries that do not set it.
A2C_DEFAULT_N_STEPS = 5
ZOO_BENCHMARK = "benchmark.md at DLR-RM/rl-baselines3-zoo@22e3ff24"
CONFIGS = REPO / "configs"


@dataclass(frozen=True)
class Env:
    """One task: its threshold, the budget and evaluation period used here, and the zoo's published A2C score.

    :param seconds_per_kstep: CPU seconds of 1,000 training steps (``pgplug train -n N`` against ``-n 800``,
        children's CPU time, at nice 19 beside a 2-worker A3C run: conservative), for the time estimate
    :param seconds_per_evaluation: CPU seconds of one evaluation of 5 episodes of a good policy (guessed from the
        same rates: one env, batch-1 forward passes)
    """

    id: str
    threshold: float
    steps: int
    eval_freq: int
    zoo_id: str
    zoo_mean: float
    zoo_std: float
    zoo_steps: int
    seconds_per_kstep: float
    seconds_per_evaluation: float


ENVS = (
    Env("CartPole-v1", 475.0, 150_000, 10_000, "CartPole-v1", 500.000, 0.000, 500_000, 0.101, 0.6),
    Env("Acrobot-v1", -100.0, 200_000, 10_000, "Acrobot-v1", -83.353, 17.213, 500_000, 0.165, 0.4),
    Env("MountainCar-v0", -110.0, 400_000, 20_000, "MountainCar-v0", -111.263, 24.087, 1_000_000, 0.125, 0.3),
    Env("LunarLander-v3", 200.0, 200_000, 20_000, "LunarLander-v2", 155.751, 80.419, 200_000, 0.606, 3.0),
)
ENV_BY_ID = {env.id: env for env in ENVS}
#: CPU seconds of one ``pgplug train`` process before it trains (imports, envs, model), measured at nice 19.
STARTUP_SECONDS = 5.5


SETTINGS = (
    Setting("td", "td"),
    Setting("nstep n=1", "nstep", ("n=1",)),
    Setting("nstep n=5", "nstep", ("n=5",)),
    Setting("nstep n=None", "nstep", ("n=null",)),
    Setting("gae λ=0.95", "gae", ("gae_lambda=0.95",)),
)
SETTING_BY_LABEL = {s.label: s for s in SETTINGS}


# -- which settings compute the same thing ------------------------------------------------------------------


def equivalent(setting: Setting, n_steps: int) -> tuple[str, str | None]:
    """The canonical form of ``setting`` on rollouts of ``n_steps`` steps (docs/estimators.md, Identities), and
    why it reduces to it (None when it is its own)."""
    kwargs = setting.parsed()
    if n_steps == 1 and setting.estimator in ("td", "nstep", "gae"):
        return "td", None if setting.estimator == "td" else "with 1-step rollouts every estimator here is td"
    if setting.estimator == "nstep":
        n = kwargs.get("n")
        if n == 1:
            return "td", "nstep with n=1 is td on every rollout: G(1) = r + γ(1 − d)V(s')"
        if n is None:
            return "nstep n=None", None
        if n >= n_steps:
            return "nstep n=None", (
                f"nstep looks at most n_steps = {n_steps} steps ahead (to the rollout's end), so n={n} ≥ {n_steps} "
                "is n=None"
            )
        return f"nstep n={n}", None
    if setting.estimator == "gae":
        lam = float(kwargs.get("gae_lambda", 0.95))
        if lam == 0.0:
            return "td", "gae with λ=0 is td"
        if lam == 1.0:
            return "nstep n=None", "gae with λ=1 is nstep n=None"
        return f"gae λ={lam:g}", None
    return setting.label, None


def distinct(settings: Sequence[Setting], n_steps: int) -> tuple[list[Setting], list[dict[str, str]]]:
    """The settings to run, one of each group that computes the same advantages and targets (the one that is
    the group's canonical form, e.g. ``nstep n=None`` rather than ``nstep n=5``, else the first), and one
    ``{estimator, same_as, why}`` for each one left out."""
    kept: dict[str, tuple[Setting, str | None]] = {}
    left_out: list[tuple[Setting, str, str | None]] = []
    for setting in settings:
        canonical, why = equivalent(setting, n_steps)
        if canonical not in kept:
            kept[canonical] = (setting, why)
        elif why is None and kept[canonical][1] is not None:
            left_out.append((*kept[canonical], canonical))
            kept[canonical] = (setting, why)
        else:
            left_out.append((setting, why, canonical))
    skipped = []
    for setting, why, canonical in left_out:
        same = kept[canonical][0].label
        skipped.append({"estimator": setting.label, "same_as": same, "why": why or f"the same as {same}"})
    return [setting for setting, _ in kept.values()], skipped


def config_entry(env_id: str, algo: str = ALGO) -> dict[str, Any]:
    """configs/<algo>.yml's hyperparameters for ``env_id`` (its own entry, else ``default``)."""
    from pgplug.interop.config import load_config_file, select_entry

    return select_entry(load_config_file(CONFIGS / f"{algo}.yml"), env_id, atari=False)[1]


def config_n_steps(env_id: str) -> int:
    """The rollout length ``pgplug train --algo a2c`` uses for ``env_id``."""
    return int(config_entry(env_id).get("n_steps", A2C_DEFAULT_N_STEPS))


# -- running -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Planned:
    env: Env
    setting: Setting
    seed: int
    steps: int
    folder: Path
    job: Job


def plan(
    envs: Sequence[Env],
    settings: Sequence[Setting],
    seeds: Sequence[int],
    steps: dict[str, int],
    n_steps: int | None,
    eval_episodes: int,
    root: Path,
) -> tuple[list[Planned], dict[str, list[dict[str, str]]]]:
    """One job per env × distinct setting × seed (longest envs first, so that the two job slots end together),
    and the settings left out per env."""
    planned, skipped = [], {}
    for env in sorted(envs, key=lambda e: -expected_seconds(e, steps[e.id])):
        rollout = n_steps or config_n_steps(env.id)
        kept, skipped[env.id] = distinct(settings, rollout)
        for setting in kept:
            for seed in seeds:
                folder = root / env.id / setting.slug / f"seed_{seed}"
                job = train_job(
                    f"{env.id} {setting.label} seed {seed}", folder, ALGO, env.id, seed=seed, steps=steps[env.id],
                    eval_freq=eval_freq(env, steps[env.id]), eval_episodes=eval_episodes, estimator=setting.estimator,
                    estimator_kwargs=setting.kwargs, hyperparams=[f"n_steps={n_steps}"] if n_steps else (),
                )  # fmt: skip
                planned.append(Planned(env, setting, seed, steps[env.id], folder, job))
    return planned, skipped


def eval_freq(env: Env, steps: int) -> int:
    """The env's evaluation period, or the budget when that is shorter (a smoke run still evaluates once)."""
    return min(env.eval_freq, steps)


def expected_seconds(env: Env, steps: int) -> float:
    """One run's CPU seconds: start-up, training at the measured rate, and its evaluations."""
    return (
        STARTUP_SECONDS
        + steps / 1000 * env.seconds_per_kstep
        + steps / eval_freq(env, steps) * env.seconds_per_evaluation
    )


def estimate_minutes(planned: Sequence[Planned], jobs: int = JOBS) -> float:
    """Wall-clock minutes with ``jobs`` runs at a time, one core each."""
    return sum(expected_seconds(p.env, p.steps) for p in planned) / jobs / 60


# -- reading the runs back -----------------------------------------------------------------------------------


def read_result(p: Planned) -> tuple[dict[str, Any], dict[str, Any]]:
    """The CSV row of one finished run and its evaluation curve."""
    from pgplug.interop.curves import read_run

    run = run_folder(p.folder, ALGO, p.env.id)
    reached = solved(run, p.env.threshold)
    evaluations = read_run(run).evaluations
    row = {
        "env": p.env.id,
        "estimator": p.setting.label,
        "seed": p.seed,
        "steps_budget": p.steps,
        "solved_steps": reached.steps,
        "solved_seconds": None if reached.seconds is None else round(reached.seconds, 2),
        "final": reached.final,
        "best": reached.best,
        "evaluations": 0 if evaluations is None else len(evaluations.y),
        "run": shown(run),
    }
    curve = {
        "env": p.env.id,
        "estimator": p.setting.label,
        "seed": p.seed,
        "steps": [] if evaluations is None else [int(s) for s in evaluations.steps],
        "mean": [] if evaluations is None else [float(y) for y in evaluations.y],
    }
    return row, curve


def summarise_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per env × estimator (in the rows' order): runs, how many solved, and the spread over seeds of the steps
    and seconds to solve (unsolved runs counted as ``missing``), the final and the best evaluation."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["env"], row["estimator"]), []).append(row)
    summary = []
    for (env_id, label), group in groups.items():
        env = ENV_BY_ID.get(env_id)
        summary.append(
            {
                "env": env_id,
                "estimator": label,
                "runs": len(group),
                "solved": sum(r["solved_steps"] is not None for r in group),
                "steps_budget": group[0]["steps_budget"],
                "steps_to_solve": spread(r["solved_steps"] for r in group),
                "seconds_to_solve": spread(r["solved_seconds"] for r in group),
                "final": spread(r["final"] for r in group),
                "best": spread(r["best"] for r in group),
                "zoo_mean": None if env is None else env.zoo_mean,
                "zoo_std": None if env is None else env.zoo_std,
                "zoo_steps": None if env is None else env.zoo_steps,
            }
        )
    return summary


# -- the summary table and the picture ------------------------------------------------------------------------


def thousands(value: float | None) -> str:
    """``150k``, ``1M``; ``—`` for None."""
    if value is None:
        return "—"
    return f"{value / 1e6:g}M" if value >= 1e6 and value % 100_000 == 0 else f"{value / 1000:.0f}k"


def skipped_lines(skipped: dict[str, list[dict[str, str]]]) -> list[str]:
    """One line per setting left out, naming the envs it was left out for."""
    envs: dict[tuple[str, str, str], list[str]] = {}
    for env_id, left_out in skipped.items():
        for item in left_out:
            envs.setdefault((item["estimator"], item["same_as"], item["why"]), []).append(env_id)
    every = set(skipped)
    return [
        f"{estimator} not run ({'every env' if set(ids) == every else ', '.join(ids)}), the same as {same}: {why}"
        for (estimator, same, why), ids in envs.items()
    ]


def table(summary: Sequence[dict[str, Any]], skipped: dict[str, list[dict[str, str]]]) -> str:
    """The summary as aligned text: one line per env × estimator, then the settings left out and why."""
    header = ("env", "estimator", "solved", "steps to solve: median [min–max]", "final: mean ± std", "best", "zoo A2C")
    # best: the highest evaluation of any seed
    lines = []
    for s in summary:
        steps, final, best = s["steps_to_solve"], s["final"], s["best"]
        to_solve = "—"
        if steps["n"]:
            to_solve = f"{thousands(steps['median'])} [{thousands(steps['min'])}–{thousands(steps['max'])}]"
        zoo = "—"
        if s["zoo_mean"] is not None:
            zoo = f"{s['zoo_mean']:.1f} ± {s['zoo_std']:.1f} ({thousands(s['zoo_steps'])})"
        lines.append(
            (
                s["env"],
                s["estimator"],
                f"{s['solved']}/{s['runs']} in {thousands(s['steps_budget'])}",
                to_solve,
                "—" if final["n"] == 0 else f"{final['mean']:.1f} ± {final['std']:.1f}",
                "—" if best["n"] == 0 else f"{best['max']:.1f}",
                zoo,
            )
        )
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]
    text = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in [header, *lines]]
    return "\n".join(text + skipped_lines(skipped))


def draw(curves: Sequence[dict[str, Any]], output: Path) -> Path:
    """One panel per env: per estimator the mean evaluation over seeds with its min–max band against steps, the
    zoo's published A2C score (dashed) and the threshold (dotted)."""
    from pgplug.interop.curves import Curve, summarise
    from pgplug.interop.plotting import pyplot, save_figure

    plt = pyplot()
    envs = list(dict.fromkeys(c["env"] for c in curves))
    labels = list(dict.fromkeys(c["estimator"] for c in curves))
    colours = {label: f"C{i}" for i, label in enumerate(labels)}
    columns = min(len(envs), 2) or 1
    rows = max(-(-len(envs) // columns), 1)
    fig, axes = plt.subplots(rows, columns, figsize=(6.4 * columns, 4.2 * rows), layout="constrained", squeeze=False)
    for ax in axes.flat[len(envs) :]:
        ax.set_visible(False)
    for ax, env_id in zip(axes.flat, envs):
        env = ENV_BY_ID.get(env_id)
        budget = 0
        for label in labels:
            runs = [c for c in curves if c["env"] == env_id and c["estimator"] == label and c["steps"]]
            if not runs:
                continue
            band = summarise([Curve(np.array(c["steps"], float), np.array(c["mean"], float)) for c in runs])
            budget = max(budget, int(band.x[-1]))
            ax.plot(band.x / 1000, band.mean, color=colours[label], label=f"{label} (mean, min–max over seeds)")
            ax.fill_between(band.x / 1000, band.lower, band.upper, color=colours[label], alpha=0.2, linewidth=0)
        title = env_id
        if env is not None:
            ax.axhline(
                env.zoo_mean,
                color="grey",
                linestyle="--",
                linewidth=1,
                label="rl-baselines3-zoo A2C, published (at its budget)",
            )
            ax.axhline(env.threshold, color="black", linestyle=":", linewidth=0.8, label="threshold")
            title += f": {thousands(budget)} steps here, the zoo's {thousands(env.zoo_steps)}"
        ax.set_title(title, fontsize="medium")
        ax.set_xlim(left=0)
        ax.set_xlabel("steps (thousands)")
        ax.set_ylabel("evaluation return (5 episodes)")
        ax.grid(True, alpha=0.3)
    handles: dict[str, Any] = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    fig.legend(handles.values(), handles.keys(), loc="outside lower center", ncol=3, fontsize="small", frameon=False)
    fig.suptitle("A2C with actor-critic estimators (configs/a2c.yml, rl-baselines3-zoo's hyperparameters)")
    return save_figure(fig, output)


# -- the command ---------------------------------------------------------------------------------------------


def parse_steps(items: Iterable[str], envs: Sequence[Env]) -> dict[str, int]:
    """``--steps 100000`` (every env) or ``--steps CartPole-v1=100000 ...``, over the defaults."""
    steps = {env.id: env.steps for env in envs}
    for item in items:
        key, _, value = item.rpartition("=")
        if key and key not in steps:
            raise SystemExit(f"--steps {item}: {key} is not one of {', '.join(steps)}")
        for env_id in [key] if key else steps:
            steps[env_id] = int(float(value))
    return steps


def settings_record(args: argparse.Namespace, envs: Sequence[Env], steps: dict[str, int]) -> dict[str, Any]:
    return {
        "algo": ALGO,
        "seeds": args.seeds,
        "eval_episodes": args.eval_episodes,
        "n_steps": {env.id: args.n_steps or config_n_steps(env.id) for env in envs},
        "budgets": {
            env.id: {"steps": steps[env.id], "zoo_steps": env.zoo_steps, "eval_freq": eval_freq(env, steps[env.id])}
            for env in envs
        },
        "references": {
            env.id: {"zoo_env": env.zoo_id, "mean": env.zoo_mean, "std": env.zoo_std, "steps": env.zoo_steps}
            for env in envs
        },
        "reference_source": ZOO_BENCHMARK,
        "thresholds": {env.id: env.threshold for env in envs},
    }


def share(part: float, whole: float) -> str:
    """``40%``; ``0.4%`` below 1%."""
    return f"{part / whole:.0%}" if part >= whole / 100 else f"{part / whole:.1%}"


def budget_lines(record: dict[str, Any]) -> list[str]:
    """Which budget each env got against the zoo's."""
    return [
        f"{env_id}: {b['steps']:,} steps here ({share(b['steps'], b['zoo_steps'])} of the zoo's {b['zoo_steps']:,}), "
        f"an evaluation every {b['eval_freq']:,}"
        for env_id, b in record["budgets"].items()
    ]


def train(args: argparse.Namespace) -> dict[str, Any]:
    envs = [ENV_BY_ID[e] for e in args.envs]
    steps = parse_steps(args.steps, envs)
    settings = [SETTING_BY_LABEL[label] for label in args.estimators]
    before = load_average()
    root = fresh_folder(NAME)
    planned, skipped = plan(envs, settings, args.seeds, steps, args.n_steps, args.eval_episodes, root)
    skipped = {env.id: skipped[env.id] for env in envs}  # in the table's order
    record = settings_record(args, envs, steps)
    for line in budget_lines(record):
        print(line)
    for line in skipped_lines(skipped):
        print(line)
    print(
        f"{len(planned)} runs, {JOBS} at a time: about {estimate_minutes(planned):.0f} minutes at the rates measured "
        f"beside another run, less on a quiet machine (load average now {before})",
        flush=True,
    )
    started = time.perf_counter()
    run_jobs([p.job for p in planned], log=root / "jobs.log")
    results = [read_result(p) for p in planned]
    order = {(e.id, s.label): i for i, (e, s) in enumerate((e, s) for e in envs for s in settings)}
    results.sort(key=lambda r: (order[(r[0]["env"], r[0]["estimator"])], r[0]["seed"]))
    rows, curves = [r for r, _ in results], [c for _, c in results]
    return {
        "section": "§3 actor-critic estimators",
        "command": "python benchmarks/results_actor_critic.py " + " ".join(sys.argv[1:]),
        "settings": record,
        "skipped": skipped,
        "minutes": round((time.perf_counter() - started) / 60, 1),
        "load_average_before": before,
        "load_average_after": load_average(),
        "summary": summarise_rows(rows),
        "rows": rows,
        "curves": curves,
    }


def report(result: dict[str, Any]) -> None:
    """Draw the picture and print the table (after training, or from the JSON with ``--plot-only``)."""
    output = draw(result["curves"], image(PICTURE))
    print(f"wrote {shown(output)}")
    for line in budget_lines(result["settings"]):
        print(line)
    print(table(result["summary"], result["skipped"]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default 0 1 2)")
    parser.add_argument(
        "--steps",
        nargs="+",
        default=[],
        metavar="[ENV=]N",
        help="training steps per run: N for every env or ENV=N for one (defaults: "
        + ", ".join(f"{e.id} {e.steps:,}" for e in ENVS)
        + ")",
    )
    parser.add_argument("--envs", nargs="+", default=[e.id for e in ENVS], choices=[e.id for e in ENVS])
    parser.add_argument(
        "--estimators", nargs="+", default=[s.label for s in SETTINGS], choices=[s.label for s in SETTINGS],
        metavar="LABEL", help="estimator settings (default: all of " + ", ".join(repr(s.label) for s in SETTINGS) + ")",
    )  # fmt: skip
    parser.add_argument(
        "--n-steps", type=int, default=None, help="rollout length for every env (default: configs/a2c.yml's, 5)"
    )
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
