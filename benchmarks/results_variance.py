"""Results §1: each estimator's policy-gradient variance on CartPole-v1 and Acrobot-v1, initial and trained weights.

**The lecture's claim**: every estimator after vanilla REINFORCE lowers the variance of the policy gradient, in
the order full return > reward-to-go (causality) > baseline (a state-dependent V(s) subtracted) > TD (the
critic's one-step bootstrap, biased by its errors); GAE(λ) moves between TD (λ = 0) and the Monte-Carlo
baseline (λ = 1).

**What is measured**: four runs of ``pgplug variance`` (docs/variance.md): each env at the initial weights of a
new A2C model and at those of an A2C model trained by ``pgplug train`` (CartPole-v1 50,000 steps, Acrobot-v1
100,000 steps, seed 0; the final model, with its VecNormalize statistics for Acrobot). At fixed weights, K paired
batches of 4 complete episodes; on each, every estimator's gradient of the policy term: ``full_return``,
``reward_to_go``, ``baseline`` (each also with the γ^t factor, ``gamma_t=true``, but ``full_return``, which has
it already), ``td`` and ``gae`` with λ in 0, 0.5, 0.9, 0.95, 0.99, 1. Reported per estimator: tr Cov(ĝ), its
ratio to ``full_return``'s on the same batches, the cosine of the mean gradient with a reference (``baseline``
over 5·K other batches) and the signal-to-noise ratio, each with a 95% bootstrap interval.

Writes ``docs/results/variance.json`` (the four runs' reports, the commands, the trained models' evaluations and
whether the ordering held), ``docs/results/variance.csv`` (a row per env × weights × estimator) and, in
``docs/images/results/``, ``variance-cartpole.png`` and ``variance-acrobot.png`` (tr Cov ÷ full_return's with
its interval, initial and trained side by side) and ``variance-gae-lambda.png`` (tr Cov ÷ full_return's and
the cosine against λ, all four runs). About 7 minutes on 2 cores at the defaults.

    make results-variance                                # or: python benchmarks/results_variance.py
    python benchmarks/results_variance.py --plot-only    # redraw the pictures from docs/results/variance.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import results_common as common
from results_common import Job, pgplug_command, run_jobs, solved, train_job

#: The envs: the A2C training budget of the trained weights, how often it evaluates, and its solved threshold.
ENVS: dict[str, dict[str, float]] = {
    "CartPole-v1": {"steps": 50_000, "eval_freq": 10_000, "threshold": 475.0},
    "Acrobot-v1": {"steps": 100_000, "eval_freq": 20_000, "threshold": -100.0},
}
WEIGHTS = ("initial", "trained")
LAMBDAS = ("0", "0.5", "0.9", "0.95", "0.99", "1")
#: The estimators every run measures, as ``pgplug variance --estimators`` takes them.
ESTIMATORS = (
    "full_return",
    "reward_to_go",
    "reward_to_go:gamma_t=true",
    "baseline",
    "baseline:gamma_t=true",
    "td",
    *(f"gae:gae_lambda={lam}" for lam in LAMBDAS),
)
#: The lecture's ordering, highest variance first.
ORDER = ("full_return", "reward_to_go", "baseline", "td")
ALGO = "a2c"  # the trained weights' algorithm; the initial ones are a new model of it (the same networks)
SEED = 0


def model_path(folder: Path, env: str) -> Path:
    """The final model ``pgplug train`` saved for ``env`` in ``folder``."""
    return common.run_folder(folder, ALGO, env) / f"{env}.zip"


def variance_job(env: str, weights: str, output: Path, args: argparse.Namespace, model: Path | None) -> Job:
    """``pgplug variance`` of every estimator in :data:`ESTIMATORS` at the initial weights or at ``model``'s."""
    command = pgplug_command(
        "variance", "--env", env, "--estimators", *ESTIMATORS, "--batches", str(args.batches),
        "--reference-batches", str(args.reference_batches), "--seed", str(args.seed), "--num-threads", "1",
        "--json", str(output),
    )  # fmt: skip
    command += ["--weights", str(model)] if model is not None else ["--algo", ALGO]
    if args.critic_batches is not None:
        command += ["--critic-batches", str(args.critic_batches)]
    if args.critic_iterations is not None:
        command += ["--critic-iterations", str(args.critic_iterations)]
    if args.bootstrap is not None:
        command += ["--bootstrap", str(args.bootstrap)]
    return Job(f"variance {env} {weights}", command)


def training_steps(env: str, args: argparse.Namespace) -> int:
    return int(args.train_steps if args.train_steps is not None else ENVS[env]["steps"])


def training_job(env: str, folder: Path, args: argparse.Namespace) -> Job:
    """``pgplug train --algo a2c`` of the trained weights (the config's hyperparameters), evaluated on the way."""
    steps = training_steps(env, args)
    eval_freq = int(min(ENVS[env]["eval_freq"], steps))
    return train_job(f"train {ALGO} {env}", folder, ALGO, env, seed=args.seed, steps=steps, eval_freq=eval_freq)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Train the A2C models and run the four measurements, two at a time: the long ones (a trained CartPole
    policy's and an initial Acrobot policy's episodes last about 500 steps) side by side."""
    folder = common.fresh_folder("variance")
    log = folder / "commands.log"
    train = {env: training_job(env, folder / env, args) for env in args.envs}
    output = {(env, weights): folder / f"{env}-{weights}.json" for env in args.envs for weights in WEIGHTS}
    initial = {env: variance_job(env, "initial", output[env, "initial"], args, None) for env in args.envs}
    # The trainings first (CartPole's is quick), then the initial weights, Acrobot's (the long one) first: one
    # worker measures it while the other trains Acrobot and measures CartPole.
    first = [*train.values(), *reversed(initial.values())]
    started = time.perf_counter()
    done = {d.label: d for d in run_jobs(first, args.jobs, log)}
    trained = {
        env: variance_job(env, "trained", output[env, "trained"], args, model_path(folder / env, env))
        for env in args.envs
    }
    done |= {d.label: d for d in run_jobs(list(trained.values()), args.jobs, log)}
    runs = []
    for env in args.envs:
        run_dir = common.run_folder(folder / env, ALGO, env)
        reached = solved(run_dir, ENVS[env]["threshold"])
        training = {
            "command": " ".join(train[env].command),
            "steps": training_steps(env, args),
            "seconds": round(done[train[env].label].seconds, 1),
            "threshold": ENVS[env]["threshold"],
            "reached_at_steps": reached.steps,
            "last_evaluation": reached.final,
            "best_evaluation": reached.best,
        }
        for weights in WEIGHTS:
            job = initial[env] if weights == "initial" else trained[env]
            runs.append(
                {
                    "env": env,
                    "weights": weights,
                    "model": None if weights == "initial" else common.shown(model_path(folder / env, env)),
                    "training": None if weights == "initial" else training,
                    "command": " ".join(job.command),
                    "seconds": round(done[job.label].seconds, 1),
                    "report": json.loads(output[env, weights].read_text()),
                }
            )
    return {
        "claim": "tr Cov(ĝ): full_return > reward_to_go > baseline > td; gae(λ) between td (λ=0) and baseline (λ=1)",
        "settings": {
            "estimators": list(ESTIMATORS),
            "batches": args.batches,
            "reference_batches": args.reference_batches,
            "critic_batches": args.critic_batches or args.batches,
            "critic_iterations": args.critic_iterations or 500,
            "bootstrap": args.bootstrap or 1000,
            "seed": args.seed,
            "algo": ALGO,
            "parallel_jobs": args.jobs,
            "load_average_at_end": common.load_average(),
        },
        "seconds": round(time.perf_counter() - started, 1),
        "runs": runs,
    }


# -- reading the reports --------------------------------------------------------------------------------


def entries(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The report's estimators by label (``gae:gae_lambda=0.9``), as ``pgplug variance`` wrote them."""
    return report["estimators"]


def plain(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The estimators measured without arguments, by name."""
    return {e["estimator"]: e for e in entries(report).values() if not e.get("kwargs")}


def gae_sweep(report: dict[str, Any]) -> list[tuple[float, dict[str, Any]]]:
    """``(λ, entry)`` of every ``gae`` measured with an explicit ``gae_lambda``, by λ."""
    sweep = [
        (float(e["kwargs"]["gae_lambda"]), e)
        for e in entries(report).values()
        if e["estimator"] == "gae" and set(e.get("kwargs") or {}) == {"gae_lambda"}
    ]
    return sorted(sweep, key=lambda pair: pair[0])


def short_name(entry: dict[str, Any]) -> str:
    """A tick label: ``reward-to-go γᵗ``, ``GAE λ=0.9``."""
    names = {"full_return": "full return", "reward_to_go": "reward-to-go", "baseline": "baseline", "td": "TD"}
    kwargs = dict(entry.get("kwargs") or {})
    name = entry["estimator"]
    text = f"GAE λ={kwargs.pop('gae_lambda')}" if name == "gae" and "gae_lambda" in kwargs else names.get(name, name)
    if kwargs.pop("gamma_t", False):
        text += " γᵗ"
    return text + "".join(f" {k}={v}" for k, v in kwargs.items())


def ordering(report: dict[str, Any]) -> dict[str, Any]:
    """Whether tr Cov falls along :data:`ORDER` (point estimates), each step's factor, and whether the two
    estimators' intervals of the ratio to full_return are apart (a conservative check of the step)."""
    measured = plain(report)
    names = [n for n in ORDER if n in measured]
    steps = []
    for higher, lower in itertools.pairwise(names):
        a, b = measured[higher], measured[lower]
        factor = a["trace_cov"] / b["trace_cov"] if b["trace_cov"] else float("inf")
        ci_a, ci_b = (a.get("ci") or {}).get("ratio_to_full_return"), (b.get("ci") or {}).get("ratio_to_full_return")
        apart = None if not ci_a or not ci_b or None in (*ci_a, *ci_b) else bool(ci_b[1] < ci_a[0])
        steps.append({"higher": higher, "lower": lower, "factor": factor, "held": factor > 1, "intervals_apart": apart})
    return {
        "order": names,
        "held": bool(steps) and all(s["held"] for s in steps),
        "ratio_to_full_return": {n: measured[n]["ratio_to_full_return"] for n in names},
        "steps": steps,
    }


def rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """A CSV row per env × weights × estimator."""
    table = []
    for run in result["runs"]:
        report = run["report"]
        for label, e in entries(report).items():
            ci = e.get("ci") or {}
            row = {
                "env": run["env"],
                "weights": run["weights"],
                "estimator": label,
                "name": e["estimator"],
                "gae_lambda": (e.get("kwargs") or {}).get("gae_lambda", ""),
                "gamma_t": bool((e.get("kwargs") or {}).get("gamma_t", False)),
            }
            for statistic in ("trace_cov", "ratio_to_full_return", "cosine_to_reference", "snr"):
                low, high = ci.get(statistic) or (None, None)
                row |= {statistic: e.get(statistic), f"{statistic}_low": low, f"{statistic}_high": high}
            row |= {
                "batches": report["batches"],
                "mean_episode_length": report["mean_episode_length"],
                "critic_explained_variance": report["critic"]["explained_variance"],
            }
            table.append(row)
    return table


def run_of(result: dict[str, Any], env: str, weights: str) -> dict[str, Any] | None:
    return next((r for r in result["runs"] if r["env"] == env and r["weights"] == weights), None)


# -- pictures ----------------------------------------------------------------------------------------------


def colour_of(entry: dict[str, Any], colours: list[str]) -> str:
    families = ("full_return", "reward_to_go", "baseline", "td", "gae")
    name = entry["estimator"]
    return colours[families.index(name) % len(colours)] if name in families else colours[-1]


def draw_env(result: dict[str, Any], env: str, output: Path) -> Path:
    """tr Cov ÷ full_return's per estimator (log scale, bootstrap interval), a panel per weights."""
    from pgplug.interop.plotting import pyplot, save_figure

    plt = pyplot()
    runs = [r for w in WEIGHTS if (r := run_of(result, env, w)) is not None]
    fig, axes = plt.subplots(
        1, len(runs), figsize=(6.4 * len(runs), 5.2), squeeze=False, sharey=True, layout="constrained"
    )
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, run in zip(axes[0], runs):
        report = run["report"]
        shown_entries = list(entries(report).values())
        for i, e in enumerate(shown_entries):
            value = e.get("ratio_to_full_return")
            if value is None or not np.isfinite(value) or value <= 0:
                continue
            ax.bar(i, value, color=colour_of(e, colours), alpha=0.75 if not e.get("kwargs") else 0.45)
            interval = (e.get("ci") or {}).get("ratio_to_full_return")
            if interval and None not in interval:
                low, high = interval
                ax.errorbar(i, value, yerr=[[max(value - low, 0)], [max(high - value, 0)]], color="black", capsize=3)
        ax.set_xticks(np.arange(len(shown_entries)), [short_name(e) for e in shown_entries], rotation=40, ha="right")
        ax.set_yscale("log")
        ax.set_ylabel("tr Cov(ĝ) ÷ full return's (same batches)")
        ax.grid(True, axis="y", alpha=0.3)
        fit = report["critic"]["explained_variance"]
        held = "held" if ordering(report)["held"] else "not held"
        ax.set_title(
            f"{run['weights']} weights: episodes of {report['mean_episode_length']:.0f} steps, critic R² "
            f"{'–' if fit is None else f'{fit:.2f}'}\nfull return > reward-to-go > baseline > TD: {held}",
            fontsize="medium",
        )
    first = runs[0]["report"] if runs else {"batches": "?", "seed": "?"}
    fig.suptitle(
        f"Gradient variance on {env}: {first['batches']} paired batches, seed {first['seed']}, 95% bootstrap intervals"
    )
    return save_figure(fig, output)


def draw_lambda(result: dict[str, Any], output: Path) -> Path:
    """GAE(λ): tr Cov ÷ full_return's and the cosine to the reference against λ, a line per env × weights."""
    from pgplug.interop.plotting import pyplot, save_figure

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12.8, 4.8), layout="constrained")
    lambdas = sorted({lam for run in result["runs"] for lam, _ in gae_sweep(run["report"])})
    position = {lam: i for i, lam in enumerate(lambdas)}
    styles = {"initial": "--", "trained": "-"}
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    envs = list(dict.fromkeys(run["env"] for run in result["runs"]))
    for run in result["runs"]:
        sweep = gae_sweep(run["report"])
        if not sweep:
            continue
        colour = colours[envs.index(run["env"]) % len(colours)]
        xs = np.array([position[lam] for lam, _ in sweep], dtype=float)
        for ax, statistic in zip(axes, ("ratio_to_full_return", "cosine_to_reference")):
            ys = np.array([np.nan if e.get(statistic) is None else e[statistic] for _, e in sweep], dtype=float)
            intervals = [(e.get("ci") or {}).get(statistic) or (None, None) for _, e in sweep]
            lows = np.array([np.nan if lo is None else lo for lo, _ in intervals], dtype=float)
            highs = np.array([np.nan if hi is None else hi for _, hi in intervals], dtype=float)
            label = f"{run['env']}, {run['weights']} weights"
            ax.plot(xs, ys, styles.get(run["weights"], "-"), color=colour, marker="o", label=label)
            ax.fill_between(xs, lows, highs, color=colour, alpha=0.12, linewidth=0)
    ticks = [f"{lam:g}" for lam in lambdas]
    for ax, ylabel, log in (
        (axes[0], "tr Cov(ĝ) ÷ full return's", True),
        (axes[1], "cosine of mean ĝ with the reference (baseline)", False),
    ):
        ax.set_xticks(np.arange(len(lambdas)), ticks)
        ax.set_xlabel("λ (λ = 0 is TD, λ = 1 the Monte-Carlo baseline)")
        ax.set_ylabel(ylabel)
        if log:
            ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=4, fontsize="small", frameon=False)
    fig.suptitle("GAE(λ) on the same batches: variance and direction (bands: 95% bootstrap intervals)")
    return save_figure(fig, output)


def draw_all(result: dict[str, Any]) -> list[Path]:
    pictures = []
    for env in dict.fromkeys(run["env"] for run in result["runs"]):
        name = env.split("-")[0].lower()
        pictures.append(draw_env(result, env, common.image(f"variance-{name}.png")))
    pictures.append(draw_lambda(result, common.image("variance-gae-lambda.png")))
    for picture in pictures:
        print(f"wrote {common.shown(picture)}")
    return pictures


# -- the summary -----------------------------------------------------------------------------------------------


def summary_lines(result: dict[str, Any]) -> list[str]:
    """Per run: whether the ordering held, with each step's factor; the γ^t variants and the GAE sweep."""
    lines = []
    for run in result["runs"]:
        report = run["report"]
        check = ordering(report)
        steps = ", ".join(
            f"{s['higher']}÷{s['lower']} {s['factor']:.3g}" + ("" if s["intervals_apart"] else " (intervals overlap)")
            for s in check["steps"]
        )
        ratios = ", ".join(f"{n} {r:.3g}" for n, r in check["ratio_to_full_return"].items() if r is not None)
        lines.append(
            f"{run['env']} {run['weights']} weights (episodes {report['mean_episode_length']:.0f} steps): "
            f"{' > '.join(check['order'])} {'HELD' if check['held'] else 'NOT HELD'}"
        )
        lines.append(f"    factors: {steps}")
        lines.append(f"    tr Cov ÷ full_return: {ratios}")
        measured = entries(report)
        variants = [
            f"{e['estimator']} γᵗ÷plain {e['trace_cov'] / plain(report)[e['estimator']]['trace_cov']:.3g}"
            for e in measured.values()
            if (e.get("kwargs") or {}).get("gamma_t") and plain(report).get(e["estimator"], {}).get("trace_cov")
        ]
        if variants:
            lines.append(f"    γᵗ: {', '.join(variants)}")
        sweep = gae_sweep(report)
        if sweep:
            lines.append(
                "    gae λ: "
                + ", ".join(
                    f"{lam:g}: {e['ratio_to_full_return']:.3g} (cos {e['cosine_to_reference']:.3f})" for lam, e in sweep
                )
            )
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plot-only", action="store_true", help="redraw from docs/results/variance.json; no runs")
    parser.add_argument(
        "--envs", nargs="+", choices=list(ENVS), default=list(ENVS), help="envs to measure (default: both)"
    )
    parser.add_argument("--batches", "-K", type=int, default=30, help="K, paired batches per measurement (30)")
    parser.add_argument("--reference-batches", type=int, default=150, help="batches of the reference gradient (150)")
    parser.add_argument("--critic-batches", type=int, help="batches the critic is fitted on (pgplug's default: K)")
    parser.add_argument("--critic-iterations", type=int, help="Adam steps of the critic's fit (pgplug's: 500)")
    parser.add_argument("--bootstrap", type=int, help="bootstrap resamples (pgplug's default: 1000)")
    parser.add_argument(
        "--train-steps", type=int, help="A2C steps of the trained weights, every env (default: CartPole 50k, "
        "Acrobot 100k)"
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=SEED, help="seed of the training and of the measurements (0)")
    parser.add_argument("--jobs", type=int, default=common.JOBS, help="commands run at a time (2)")
    args = parser.parse_args(argv)
    if args.plot_only:
        result = common.read_kept("variance")
    else:
        result = measure(args)
        result["ordering"] = [
            {"env": r["env"], "weights": r["weights"], **ordering(r["report"])} for r in result["runs"]
        ]
        common.write_json("variance", result)
        common.write_csv("variance", rows(result))
    draw_all(result)
    print("\n".join(summary_lines(result)))
    if "seconds" in result:
        print(f"measured in {result['seconds']:.0f} s (load average {result['settings'].get('load_average_at_end')})")


if __name__ == "__main__":
    main()
