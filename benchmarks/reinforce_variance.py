"""How much causality and a baseline reduce the variance of REINFORCE's gradient, and what that buys.

For each estimator (``full_return``, ``reward_to_go``, ``baseline``) and seed, on CartPole-v1:

1. **Learning**: REINFORCE trains for ``--budget`` env steps; the run reports the step at which the
   mean reward of the last 100 training episodes first reaches ``--target`` (475), or the best such
   mean it reached. Per estimator, the median over seeds.
2. **Gradient variance**, with pgplug's variance lab (:mod:`pgplug.interop.variance`, the command
   ``pgplug variance``): at fixed policy weights, ``--grad-batches`` fresh batches are collected and
   each estimator's policy-gradient vector ĝ = ∇θ −mean(log π(a|s) Ψ) is computed on the *same*
   batches (a paired comparison); ĝ is the gradient of the policy term of the loss pgplug minimises
   (a mean over the batch's steps). Reported: tr Cov(ĝ) = E‖ĝ − E ĝ‖² and its ratio to
   ``full_return``'s. The baseline's critic is first fitted to Monte-Carlo returns of the fixed
   policy on separate batches, since a baseline is only as good as its V(s). Measured at the initial
   weights, and at the weights after ``--warmup`` steps of training with ``baseline`` (and advantage
   normalisation), where episodes are longer and the differences larger.

Advantage normalisation is off by default (``--normalize-advantage`` turns it on for the learning
runs): centring Ψ is itself a batch-mean baseline and would blur the comparison.

    python benchmarks/reinforce_variance.py --seeds 0 1 2 --budget 150000
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch as th
from rich.console import Console
from rich.table import Table
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env

from pgplug.interop.variance import EstimatorSpec, VarianceReport, VarianceSettings, measure, measured_policy
from pgplug.plugins.reinforce import REINFORCE

ENV_ID = "CartPole-v1"
ESTIMATORS = ("full_return", "reward_to_go", "baseline")


class ReachTarget(BaseCallback):
    """Tracks the mean reward of the last 100 training episodes; stops learning once it reaches ``target``.

    Before 100 episodes have ended, ``best_mean`` counts the episodes there are (the target needs 100).
    """

    def __init__(self, target: float) -> None:
        super().__init__()
        self.target = target
        self.reached_at: int | None = None
        self.best_mean = float("-inf")

    def _on_rollout_end(self) -> None:
        episodes = self.model.ep_info_buffer
        if not episodes:
            return
        mean = float(np.mean([e["r"] for e in episodes]))
        self.best_mean = max(self.best_mean, mean)
        if len(episodes) == episodes.maxlen and mean >= self.target and self.reached_at is None:
            self.reached_at = self.num_timesteps

    def _on_step(self) -> bool:
        return self.reached_at is None


@dataclass
class Run:
    estimator: str
    seed: int
    reached_at: int | None
    best_mean: float
    steps: int
    updates: int
    seconds: float


def make_model(estimator: str, seed: int, args: argparse.Namespace, normalize: bool) -> REINFORCE:
    env = make_vec_env(ENV_ID, n_envs=args.n_envs, seed=seed)
    return REINFORCE(
        "MlpPolicy",
        env,
        learning_rate=args.learning_rate,
        estimator=estimator,
        normalize_advantage=normalize,
        seed=seed,
    )


def learning_run(estimator: str, seed: int, args: argparse.Namespace) -> Run:
    start = time.perf_counter()
    model = make_model(estimator, seed, args, args.normalize_advantage)
    tracker = ReachTarget(args.target)
    model.learn(args.budget, callback=tracker)
    return Run(
        estimator,
        seed,
        tracker.reached_at,
        tracker.best_mean,
        model.num_timesteps,
        model._n_updates,
        time.perf_counter() - start,
    )


# -- gradient variance at fixed weights: pgplug's variance lab (pgplug.interop.variance) ------------


def variance_at(seed: int, args: argparse.Namespace, warmup: int) -> VarianceReport:
    """The variance lab at the initial weights (``warmup=0``) or after ``warmup`` steps of ``baseline``."""
    model = make_model("baseline", seed, args, normalize=True)
    if warmup:
        model.learn(warmup)
    env = model.get_env()
    assert env is not None
    settings = VarianceSettings(batches=args.grad_batches, seed=10_000 + seed, reference_batches=args.grad_batches)
    policy = measured_policy(model, env, ENV_ID)
    return measure(policy, env, model.gamma, [EstimatorSpec(name) for name in ESTIMATORS], settings, ENV_ID)


# -- report ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default: 0 1 2)")
    parser.add_argument("--budget", type=int, default=150_000, help="env steps per learning run (default: 150000)")
    parser.add_argument("--target", type=float, default=475.0, help="100-episode mean reward to reach (475)")
    parser.add_argument("--n-envs", type=int, default=4, help="parallel envs; one episode each per update (4)")
    parser.add_argument("--learning-rate", type=float, default=3e-3, help="Adam learning rate (3e-3)")
    parser.add_argument("--normalize-advantage", action="store_true", help="standardise Ψ in the learning runs")
    parser.add_argument("--grad-batches", type=int, default=30, help="batches per gradient-variance estimate (30)")
    parser.add_argument("--warmup", type=int, default=20_000, help="steps of training before the 2nd measurement")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1)")
    args = parser.parse_args(argv)
    th.set_num_threads(args.threads)
    console = Console()
    console.print(f"[bold]REINFORCE on {ENV_ID}[/]: {' '.join(sys.argv)}")

    runs: list[Run] = []
    table = Table(title=f"Learning runs (budget {args.budget} steps, target 100-episode mean {args.target:g})")
    for column in ("estimator", "seed", f"steps to {args.target:g}", "best 100-ep mean", "updates", "time (s)"):
        table.add_column(column, justify="left" if column == "estimator" else "right")
    for name in ESTIMATORS:
        for seed in args.seeds:
            run = learning_run(name, seed, args)
            runs.append(run)
            reached = f"{run.reached_at:,}" if run.reached_at is not None else "—"
            table.add_row(name, str(seed), reached, f"{run.best_mean:.1f}", str(run.updates), f"{run.seconds:.0f}")
            console.print(f"  {name} seed {seed}: {reached} (best {run.best_mean:.1f})")
    console.print(table)

    summary = Table(title=f"Learning: median over seeds {args.seeds}")
    summary.add_column("estimator")
    summary.add_column(f"median steps to {args.target:g}", justify="right")
    summary.add_column("median best 100-ep mean", justify="right")
    for name in ESTIMATORS:
        mine = [r for r in runs if r.estimator == name]
        median = statistics.median(r.reached_at if r.reached_at is not None else float("inf") for r in mine)
        shown = f"{median:,.0f}" if median != float("inf") else f"> {args.budget:,}"
        summary.add_row(name, shown, f"{statistics.median(r.best_mean for r in mine):.1f}")
    console.print(summary)

    points = {"initial weights": 0, f"after {args.warmup:,} steps": args.warmup}
    variances: dict[str, dict[str, list[float]]] = {p: {n: [] for n in ESTIMATORS} for p in points}
    notes = Table(title="Fixed policies at which the gradient variance is measured (mean over seeds)")
    for column in ("weights", "mean episode length", "critic explained variance"):
        notes.add_column(column, justify="right")
    for point, warmup in points.items():
        fits, lengths = [], []
        for seed in args.seeds:
            report = variance_at(seed, args, warmup)
            fits.append(report.critic_explained_variance)
            lengths.append(report.mean_episode_length)
            for name in ESTIMATORS:
                variances[point][name].append(report.estimators[name].trace_cov)
        notes.add_row(point, f"{np.mean(lengths):.1f}", f"{np.mean(fits):.2f}")
    console.print(notes)

    spread = Table(
        title=f"Gradient variance: tr Cov(ĝ) over {args.grad_batches} batches of {args.n_envs} episodes "
        "(mean over seeds)"
    )
    for column in ("weights", "estimator", "tr Cov(ĝ)", "÷ full_return"):
        spread.add_column(column, justify="left" if column in ("weights", "estimator") else "right")
    for point in points:
        full = variances[point]["full_return"]
        for name in ESTIMATORS:
            mine = variances[point][name]
            ratio = np.mean([v / f for v, f in zip(mine, full)])
            spread.add_row(point, name, f"{np.mean(mine):.3g}", f"{ratio:.3f}")
        spread.add_section()
    console.print(spread)


if __name__ == "__main__":
    main()
