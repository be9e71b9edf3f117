"""How much causality and a baseline reduce the variance of REINFORCE's gradient, and what that buys.

For each estimator (``full_return``, ``reward_to_go``, ``baseline``) and seed, on CartPole-v1:

1. **Learning**: REINFORCE trains for ``--budget`` env steps; the run reports the step at which the
   mean reward of the last 100 training episodes first reaches ``--target`` (475), or the best such
   mean it reached. Per estimator, the median over seeds.
2. **Gradient variance**: at fixed policy weights, ``--grad-batches`` fresh batches are collected and
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

from pgplug.contracts.registries import make_estimator
from pgplug.contracts.rollout import Rollout
from pgplug.plugins.estimator_math import reward_to_go
from pgplug.plugins.reinforce import REINFORCE

ENV_ID = "CartPole-v1"
ESTIMATORS = ("full_return", "reward_to_go", "baseline")
VALUE_HEAD = ("value_net.", "mlp_extractor.value_net.")


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


# -- gradient variance at fixed weights --------------------------------------------------------


def collect(model: REINFORCE, n_batches: int) -> list[Rollout]:
    """Fresh complete-episode batches from the model's current (fixed) policy."""
    _, callback = model._setup_learn(10**12, None, reset_num_timesteps=True)
    batches = []
    while len(batches) < n_batches:
        rollout = model.collect_rollout(callback)
        assert rollout is not None
        if bool(rollout.mask.any()):
            # The collector reuses its buffers: keep a copy.
            batches.append(Rollout(**{k: _clone(v) for k, v in rollout.__dict__.items()}))
    return batches


def _clone(value):
    if isinstance(value, th.Tensor):
        return value.clone()
    if isinstance(value, dict):
        return {k: _clone(v) for k, v in value.items()}
    return value


def fit_critic(model: REINFORCE, batches: list[Rollout], gamma: float, iterations: int = 500) -> float:
    """Regress the value head on Monte-Carlo reward-to-go; returns the explained variance reached."""
    observations = th.cat([b.flat(b.observations) for b in batches])
    targets = th.cat([b.flat(reward_to_go(b.rewards, _dones(b), gamma)) for b in batches])
    policy = model.policy
    value_params = [p for n, p in policy.named_parameters() if n.startswith(VALUE_HEAD)]
    optimizer = th.optim.Adam(value_params, lr=3e-3)
    for _ in range(iterations):
        loss = th.nn.functional.mse_loss(policy.predict_values(observations).flatten(), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with th.no_grad():
        residual = targets - policy.predict_values(observations).flatten()
    return float(1 - residual.var() / targets.var())


def _dones(batch: Rollout) -> th.Tensor:
    return th.cat([batch.episode_starts[1:], batch.last_dones.reshape(1, -1)])


def policy_gradients(model: REINFORCE, batches: list[Rollout], estimator_name: str) -> th.Tensor:
    """ĝ for every batch, ``[n_batches, n_policy_parameters]``, with Ψ from ``estimator_name`` (not normalised)."""
    estimator = make_estimator(estimator_name)
    policy = model.policy
    params = [p for n, p in policy.named_parameters() if not n.startswith(VALUE_HEAD)]
    gradients = []
    for batch in batches:
        psi = batch.fill_estimate(estimator, model.gamma).advantages
        _, log_prob, _ = policy.evaluate_actions(batch.flat(batch.observations), batch.flat(batch.actions))
        loss = -(batch.flat(psi) * log_prob).mean()
        gradients.append(th.cat([g.flatten() for g in th.autograd.grad(loss, params)]))
    return th.stack(gradients)


def gradient_variance(model: REINFORCE, args: argparse.Namespace) -> tuple[dict[str, float], float, float]:
    """Per estimator, tr Cov(ĝ) at the model's current weights; also the critic's fit and the episode length."""
    fit = fit_critic(model, collect(model, args.grad_batches), model.gamma)
    batches = collect(model, args.grad_batches)
    mean_length = float(np.mean([float(b.mask.sum()) / float(_dones(b)[b.mask].sum()) for b in batches]))
    result = {}
    for name in ESTIMATORS:
        result[name] = float(policy_gradients(model, batches, name).var(dim=0).sum())
    return result, fit, mean_length


def variance_at(seed: int, args: argparse.Namespace, warmup: int) -> tuple[dict[str, float], float, float]:
    """Gradient variance at the initial weights (``warmup=0``) or after ``warmup`` steps of ``baseline``.

    Measured with a ``reward_to_go`` model holding those weights, so that all three estimators see the
    same raw rewards (a critic estimator's collector would add γ·V at time-limit truncations).
    """
    model = make_model("reward_to_go", seed, args, normalize=False)
    if warmup:
        trained = make_model("baseline", seed, args, normalize=True)
        trained.learn(warmup)
        model.policy.load_state_dict(trained.policy.state_dict())
    th.manual_seed(10_000 + seed)
    return gradient_variance(model, args)


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
            result, fit, length = variance_at(seed, args, warmup)
            fits.append(fit)
            lengths.append(length)
            for name in ESTIMATORS:
                variances[point][name].append(result[name])
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
