"""Recurrent policies: what an LSTM costs in env steps per second, and what it buys on a memory task.

Two parts, one run:

- ``throughput``: steps/s on ``CartPole-v1`` with 8 envs (A3C: 2 workers × 4) of pgplug's A2C and
  A3C with ``MlpPolicy`` and with ``MlpLstmPolicy``, and of sb3-contrib's ``RecurrentPPO`` for
  reference, twice: A2C-like (n_steps 5, one epoch, one batch: one gradient step per rollout, as
  A2C) and with its defaults (n_steps 128, 10 epochs of batches of 128). Each run is a fresh
  subprocess timing ``learn(--steps)``; the runs go round-robin, ``--repeats`` times, and the
  table shows medians. ``steady`` is steps/s from 20% to 90% of the budget (after A3C's workers
  have all started), ``per CPU-s`` divides by the CPU time of the run's processes (other load
  barely moves it; A3C's two workers spend two cores' worth).
- ``curves``: deterministic evaluation reward (``--eval-episodes`` episodes) on
  ``pgplug/CueMemory-v0`` at a few checkpoints, for A2C with ``MlpPolicy``, A2C with
  ``MlpLstmPolicy`` and A3C (2 worker processes × 4 envs) with ``MlpLstmPolicy``; 8 envs, 6 steps per
  rollout, lr 1e-3, ent_coef 0.01, an LSTM of 32 units. Weights are snapshotted at each checkpoint
  during training and evaluated afterwards, so evaluation neither slows nor races the workers. A
  feed-forward policy can only score 0 on average (±0.1 over 100 episodes); a remembering one, 1.

    python benchmarks/recurrent.py                                   # both parts, modest settings
    python benchmarks/recurrent.py --part throughput --steps 40000 --repeats 3 --lstm-hidden-size 64
    python benchmarks/recurrent.py --part curves --seeds 0 1 2 3 4 --checkpoints 2000 5000 10000 20000
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

CARTPOLE_ID = "CartPole-v1"
CUE_ID = "pgplug.toy_envs:pgplug/CueMemory-v0"

#: throughput setup -> (library, policy, settings); 8 envs for every setup
SETUPS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "A2C MlpPolicy": ("a2c", "MlpPolicy", {"n_steps": 5}),
    "A2C MlpLstmPolicy": ("a2c", "MlpLstmPolicy", {"n_steps": 5}),
    "A3C MlpPolicy": ("a3c", "MlpPolicy", {"t_max": 5}),
    "A3C MlpLstmPolicy": ("a3c", "MlpLstmPolicy", {"t_max": 5}),
    "RecurrentPPO A2C-like": ("rppo", "MlpLstmPolicy", {"n_steps": 5, "batch_size": 40, "n_epochs": 1}),
    "RecurrentPPO defaults": ("rppo", "MlpLstmPolicy", {}),
}
N_ENVS, N_WORKERS = 8, 2

#: learning-curve learner -> (algorithm, policy)
LEARNERS: dict[str, tuple[str, str]] = {
    "A2C MlpPolicy": ("a2c", "MlpPolicy"),
    "A2C MlpLstmPolicy": ("a2c", "MlpLstmPolicy"),
    "A3C MlpLstmPolicy": ("a3c", "MlpLstmPolicy"),
}
CUE_KWARGS: dict[str, Any] = {"learning_rate": 1e-3, "ent_coef": 0.01}
#: CueMemory's rollout length (A2C's n_steps, A3C's t_max) and LSTM
CUE_ROLLOUT = 6
CUE_LSTM_KWARGS: dict[str, Any] = {"lstm_hidden_size": 32}


def console() -> Any:
    """A rich console wide enough for the tables when the output is a file or a pipe."""
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=150)


def cpu_seconds() -> float:
    """CPU time of this process (all threads) and of its live children (A3C's workers), from /proc."""
    import multiprocessing

    ticks = os.sysconf("SC_CLK_TCK")
    total = time.process_time()
    for child in multiprocessing.active_children():
        try:
            with open(f"/proc/{child.pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total


# -- throughput -------------------------------------------------------------------------------


def build_throughput_model(name: str, seed: int, lstm_hidden_size: int | None) -> Any:
    from stable_baselines3.common.env_util import make_vec_env

    library, policy, settings = SETUPS[name]
    policy_kwargs = {"lstm_hidden_size": lstm_hidden_size} if "Lstm" in policy and lstm_hidden_size else {}
    common = {"seed": seed, "device": "cpu", "policy_kwargs": policy_kwargs, **settings}
    if library == "a3c":
        from pgplug import A3C  # type: ignore[attr-defined]

        return A3C(policy, CARTPOLE_ID, n_workers=N_WORKERS, n_envs_per_worker=N_ENVS // N_WORKERS, **common)
    env = make_vec_env(CARTPOLE_ID, n_envs=N_ENVS, seed=seed)
    if library == "a2c":
        from pgplug import A2C  # type: ignore[attr-defined]

        return A2C(policy, env, **common)
    from sb3_contrib import RecurrentPPO

    return RecurrentPPO(policy, env, **common)


def run_throughput(name: str, steps: int, seed: int, lstm_hidden_size: int | None) -> dict[str, Any]:
    """One timed ``learn`` in this process (one torch thread); returns its rates."""
    import torch as th
    from stable_baselines3.common.callbacks import BaseCallback

    th.set_num_threads(1)
    model = build_throughput_model(name, seed, lstm_hidden_size)
    a3c = SETUPS[name][0] == "a3c"

    class Clock(BaseCallback):
        """Marks (time, steps, CPU time) at 20% of the budget (once all A3C workers run) and at 90%."""

        def __init__(self) -> None:
            super().__init__()
            self.marks: list[tuple[float, int, float]] = []

        def running(self) -> bool:
            return not a3c or sum(key.startswith("worker ") for key in self.model.live_metrics()) == N_WORKERS

        def _on_step(self) -> bool:
            fraction = self.num_timesteps / steps
            starts = not self.marks and fraction >= 0.2 and self.running()
            if starts or (len(self.marks) == 1 and fraction >= 0.9):
                self.marks.append((time.perf_counter(), self.num_timesteps, cpu_seconds()))
            return True

    clock = Clock()
    start = time.perf_counter()
    model.learn(steps, callback=clock)
    wall = time.perf_counter() - start
    if len(clock.marks) < 2 or clock.marks[1][1] <= clock.marks[0][1]:
        raise SystemExit(f"{name}: no steady window between 20% and 90% of {steps} steps; raise --steps")
    (t0, n0, c0), (t1, n1, c1) = clock.marks
    return {"wall": model.num_timesteps / wall, "steady": (n1 - n0) / (t1 - t0), "per_cpu_s": (n1 - n0) / (c1 - c0)}


def throughput(steps: int, repeats: int, seed: int, lstm_hidden_size: int | None) -> None:
    from rich.table import Table

    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in SETUPS}
    for repeat in range(repeats):
        for name in SETUPS:
            command = [sys.executable, __file__, "--_run", name, "--steps", str(steps), "--seed", str(seed + repeat)]
            if lstm_hidden_size:
                command += ["--lstm-hidden-size", str(lstm_hidden_size)]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise SystemExit(f"run {name} failed:\n{done.stderr}")
            runs[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"  {name:24s} run {repeat + 1}: {runs[name][-1]['steady']:7.0f} steps/s", flush=True)

    lstm = f"LSTM {lstm_hidden_size or 256} units"
    title = (
        f"{CARTPOLE_ID}, {N_ENVS} envs (A3C {N_WORKERS}×{N_ENVS // N_WORKERS}), {lstm}: median of {repeats} "
        f"runs of {steps} steps, one torch thread per process (load avg now {os.getloadavg()[0]:.1f})"
    )
    table = Table(title=title)
    for column in ("learner", "steady steps/s", "steps per CPU-s", "wall steps/s", "vs A2C MlpPolicy (steady)"):
        table.add_column(column, justify="right")
    medians = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in runs.items()}
    base = medians["A2C MlpPolicy"]["steady"]
    for name, m in medians.items():
        row = (f"{m['steady']:.0f}", f"{m['per_cpu_s']:.0f}", f"{m['wall']:.0f}", f"{m['steady'] / base:.2f}×")
        table.add_row(name, *row)
    console().print(table)


# -- learning curves --------------------------------------------------------------------------


def build_cue_model(learner: str, seed: int) -> Any:
    from stable_baselines3.common.env_util import make_vec_env

    algo, policy = LEARNERS[learner]
    policy_kwargs = dict(CUE_LSTM_KWARGS) if "Lstm" in policy else {}
    common = {"seed": seed, "device": "cpu", "policy_kwargs": policy_kwargs, **CUE_KWARGS}
    if algo == "a3c":
        from pgplug import A3C  # type: ignore[attr-defined]

        workers = {"n_workers": N_WORKERS, "n_envs_per_worker": N_ENVS // N_WORKERS}
        return A3C(policy, CUE_ID, **workers, t_max=CUE_ROLLOUT, **common)
    from pgplug import A2C  # type: ignore[attr-defined]

    return A2C(policy, make_vec_env(CUE_ID, n_envs=N_ENVS, seed=seed), n_steps=CUE_ROLLOUT, **common)


def curve(learner: str, seed: int, checkpoints: list[int], eval_episodes: int) -> list[float]:
    """Evaluation reward of the weights at each checkpoint of one training run."""
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy

    model = build_cue_model(learner, seed)

    class Snapshots(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.states: list[dict[str, Any]] = []

        def _on_step(self) -> bool:
            if len(self.states) < len(checkpoints) and self.num_timesteps >= checkpoints[len(self.states)]:
                self.states.append({k: v.detach().clone() for k, v in self.model.policy.state_dict().items()})
            return True

    snapshots = Snapshots()
    model.learn(max(checkpoints), callback=snapshots)
    rewards = []
    for state in snapshots.states:
        model.policy.load_state_dict(state)
        env = make_vec_env(CUE_ID, n_envs=1, seed=10_000 + seed)
        mean, _ = evaluate_policy(model, env, n_eval_episodes=eval_episodes, deterministic=True)
        rewards.append(float(mean))
    return rewards


def curves(seeds: list[int], checkpoints: list[int], eval_episodes: int) -> None:
    import torch as th
    from rich.table import Table

    th.set_num_threads(1)
    results: dict[str, list[list[float]]] = {}
    for learner in LEARNERS:
        start = time.perf_counter()
        results[learner] = [curve(learner, seed, checkpoints, eval_episodes) for seed in seeds]
        print(f"  {learner:20s} {len(seeds)} seeds in {time.perf_counter() - start:.0f} s", flush=True)
    table = Table(
        title="pgplug/CueMemory-v0: eval reward by env steps",
        caption=f"mean over seeds {', '.join(map(str, seeds))} (per seed); {eval_episodes} deterministic episodes",
    )
    table.add_column("learner")
    for checkpoint in checkpoints:
        table.add_column(f"{checkpoint:,}", justify="right")
    for learner, per_seed in results.items():
        cells = []
        for column in zip(*per_seed, strict=True):
            cells.append(f"{statistics.mean(column):+.2f} ({' '.join(f'{x:+.1f}' for x in column)})")
        table.add_row(learner, *cells)
    console().print(table)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", nargs="+", choices=["throughput", "curves"], default=["throughput", "curves"])
    parser.add_argument("--steps", type=int, default=20_000, help="env steps per throughput run (default 20000)")
    parser.add_argument("--repeats", type=int, default=2, help="throughput runs per setup (default 2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first throughput repeat")
    parser.add_argument(
        "--lstm-hidden-size", type=int, help="LSTM units of the throughput runs (default: sb3-contrib's 256)"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="learning-curve seeds")
    parser.add_argument("--checkpoints", type=int, nargs="+", default=[2_000, 4_000, 6_000, 8_000, 10_000, 15_000])
    parser.add_argument("--eval-episodes", type=int, default=100)
    parser.add_argument("--_run", choices=list(SETUPS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._run:
        print(json.dumps(run_throughput(args._run, args.steps, args.seed, args.lstm_hidden_size)))
        return
    if "throughput" in args.part:
        throughput(args.steps, args.repeats, args.seed, args.lstm_hidden_size)
    if "curves" in args.part:
        curves(args.seeds, sorted(args.checkpoints), args.eval_episodes)


if __name__ == "__main__":
    main()
