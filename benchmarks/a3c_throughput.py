"""Env steps per second of A3C against Stable-Baselines3's A2C, and A3C's scaling with workers.

Comparisons (each a series of rounds in rotating order; the ratio is the median of the per-round ratios,
so load from other processes hits every side alike). SB3 runs at its best and pgplug at its defaults
(``sb3_best.py``): each round runs SB3 at one torch thread and at torch's default, and the ratio is taken against
the faster of the two by median, SB3's best for the workload; A3C's workers take the threads A3C chooses
(``A3C.worker_threads``):

- ``pong``: SB3 A2C with the zoo's Atari settings (16 envs, n_steps 5, ent_coef 0.01, vf_coef 0.25,
  RMSpropTFLike eps 1e-5) vs A3C with the same settings, 2 workers × 8 envs. Target ≥ 1.5× (issue 16).
- ``cartpole``: SB3 A2C (8 envs, zoo settings) vs A3C 2 workers × 4 envs. Target ≥ 1.5×.
- ``scaling``: A3C 1 worker vs 2 workers (4 envs each, CartPole). Target ≥ 1.8×.
- ``paper``: A3C 2 workers × 1 env (the paper's setting), vs SB3 on CartPole, for reference only.

Each run is a fresh subprocess that builds the model and times ``learn(--steps)``. Two rates are
reported: ``wall`` (steps / the whole ``learn``, which for A3C includes starting the worker
processes) and ``steady`` (steps / time from 20% of the budget, or later once every A3C worker runs,
to 90% of it, read from a callback's clock): the targets are about ``steady``, what matters for a
long run. Short runs on a busy machine are noisy: compare ratios, not absolute rates. The
``idle-core ratio`` divides each side's steps per CPU-second (its processes' and threads' CPU time
over the same window, so other load barely moves it) times the cores it can use (A3C: its workers;
SB3: its threads): the ratio to expect on a machine whose cores are free.

    python benchmarks/a3c_throughput.py --bench cartpole scaling --steps 40000 --pairs 3
    python benchmarks/a3c_throughput.py --bench pong --steps 20000 --pairs 3
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

from sb3_best import SB3_THREADS, apply_threads, best_sb3, pgplug_default_threads, ratios, rotation, thread_label

from pgplug.validation import PRECISIONS

ATARI_ID, CARTPOLE_ID = "PongNoFrameskip-v4", "CartPole-v1"

#: name -> (env id, algorithm, settings). Atari settings are the zoo's (rl-baselines3-zoo hyperparams/a2c.yml).
ATARI_KWARGS = {"ent_coef": 0.01, "vf_coef": 0.25}
CARTPOLE_KWARGS = {"ent_coef": 0.0}
SETUPS: dict[str, dict[str, Any]] = {
    "sb3-pong-16": {"env": ATARI_ID, "algo": "sb3", "n_envs": 16, "kwargs": ATARI_KWARGS},
    "a3c-pong-2x8": {"env": ATARI_ID, "algo": "a3c", "n_workers": 2, "n_envs": 8, "kwargs": ATARI_KWARGS},
    "sb3-cartpole-8": {"env": CARTPOLE_ID, "algo": "sb3", "n_envs": 8, "kwargs": CARTPOLE_KWARGS},
    "a3c-cartpole-2x4": {"env": CARTPOLE_ID, "algo": "a3c", "n_workers": 2, "n_envs": 4, "kwargs": CARTPOLE_KWARGS},
    "a3c-cartpole-1x4": {"env": CARTPOLE_ID, "algo": "a3c", "n_workers": 1, "n_envs": 4, "kwargs": CARTPOLE_KWARGS},
    "a3c-cartpole-2x1": {"env": CARTPOLE_ID, "algo": "a3c", "n_workers": 2, "n_envs": 1, "kwargs": CARTPOLE_KWARGS},
}
#: bench -> (A, B, target ratio B/A or None)
BENCHES: dict[str, tuple[str, str, float | None]] = {
    "pong": ("sb3-pong-16", "a3c-pong-2x8", 1.5),
    "cartpole": ("sb3-cartpole-8", "a3c-cartpole-2x4", 1.5),
    "scaling": ("a3c-cartpole-1x4", "a3c-cartpole-2x4", 1.8),
    "paper": ("sb3-cartpole-8", "a3c-cartpole-2x1", None),
}
DEFAULT_STEPS = {ATARI_ID: 20_000, CARTPOLE_ID: 40_000}


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


def run_one(
    name: str, steps: int, seed: int, sb3_threads: int, precision: str = "fp32", vec_env: str = "dummy"
) -> dict[str, Any]:
    """One timed ``learn`` in this process; returns the rates as a dict.

    :param sb3_threads: an SB3 run's torch threads (0: torch's default)
    :param precision: A3C's ``precision`` (``benchmarks/precision.py`` compares them)
    :param vec_env: A3C's workers' env pipeline on Atari (``dummy``, or ``ale``: ale-py's ``AtariVectorEnv``)
    """
    from stable_baselines3.common.callbacks import BaseCallback

    setup = SETUPS[name]
    kwargs: dict[str, Any] = dict(setup["kwargs"], seed=seed, device="cpu")
    atari = setup["env"] == ATARI_ID
    if atari:
        from stable_baselines3.common.sb2_compat.rmsprop_tf_like import RMSpropTFLike

        kwargs["policy_kwargs"] = {"optimizer_class": RMSpropTFLike, "optimizer_kwargs": {"eps": 1e-5}}
    policy = "CnnPolicy" if atari else "MlpPolicy"
    worker_threads = 0  # A3C's
    if setup["algo"] == "sb3":
        from stable_baselines3 import A2C
        from stable_baselines3.common.env_util import make_atari_env, make_vec_env
        from stable_baselines3.common.vec_env import VecFrameStack

        sb3_threads = apply_threads(sb3_threads)
        if atari:
            import ale_py
            import gymnasium as gym

            gym.register_envs(ale_py)
            env = VecFrameStack(make_atari_env(ATARI_ID, n_envs=setup["n_envs"], seed=seed), n_stack=4)
        else:
            env = make_vec_env(setup["env"], n_envs=setup["n_envs"], seed=seed)
        model: Any = A2C(policy, env, n_steps=5, **kwargs)
    else:
        from pgplug import A3C  # type: ignore[attr-defined]
        from pgplug.runtime.envs import EnvSpec

        model = A3C(
            policy,
            EnvSpec.for_env_id(setup["env"], vec_env=vec_env) if atari else setup["env"],
            n_workers=setup["n_workers"],
            n_envs_per_worker=setup["n_envs"],
            t_max=5,
            precision=precision,
            **kwargs,
        )
        pgplug_default_threads(model.policy)  # the driver's, as pgplug train chooses them
        worker_threads = model.worker_threads()  # chosen now, as learn() will

    n_workers = setup.get("n_workers", 1)

    class Clock(BaseCallback):
        """Times the steady part of the run (on_step runs once per vec-env step).

        It starts at 20% of the budget, or later, once every A3C worker has reported a rate (the
        workers' start-ups are staggered), and ends at 90% of the budget.
        """

        def __init__(self) -> None:
            super().__init__()
            self.start: tuple[float, int, float] | None = None
            self.end: tuple[float, int, float] | None = None
            self.workers: list[float] = []  # A3C's per-worker steps/s at the end of the window

        def all_running(self) -> bool:
            if setup["algo"] != "a3c":
                return True
            return sum(key.startswith("worker ") for key in self.model.live_metrics()) == n_workers

        def _on_step(self) -> bool:
            if self.start is None and self.num_timesteps >= 0.2 * steps and self.all_running():
                self.start = (time.perf_counter(), self.num_timesteps, cpu_seconds())
            if self.start is not None and self.end is None and self.num_timesteps >= 0.9 * steps:
                self.end = (time.perf_counter(), self.num_timesteps, cpu_seconds())
                if setup["algo"] == "a3c":  # SB3's A2C has no live metrics
                    self.workers = [v for k, v in self.model.live_metrics().items() if k.startswith("worker ")]
            return True

    clock = Clock()
    start = time.perf_counter()
    model.learn(steps, callback=clock)
    wall = time.perf_counter() - start
    if clock.start is None or clock.end is None or clock.end[1] <= clock.start[1]:
        raise SystemExit(f"{name}: the workers never all ran between 20% and 90% of {steps} steps; raise --steps")
    (t0, n0, c0), (t1, n1, c1) = clock.start, clock.end
    return {
        "name": name,
        "steps": model.num_timesteps,
        "wall_s": wall,
        "wall": model.num_timesteps / wall,
        "steady": (n1 - n0) / (t1 - t0),
        "per_cpu_s": (n1 - n0) / (c1 - c0),
        "workers": clock.workers,
        "time_shares": model.worker_time_shares() if setup["algo"] == "a3c" else {},
        "cores": n_workers * worker_threads if setup["algo"] == "a3c" else sb3_threads,
        "threads": worker_threads if setup["algo"] == "a3c" else sb3_threads,
    }


def run_subprocess(
    name: str, steps: int, seed: int, sb3_threads: int, precision: str = "fp32", vec_env: str = "dummy"
) -> dict[str, Any]:
    command = [sys.executable, __file__, "--_run", name, "--steps", str(steps), "--seed", str(seed)]
    command += ["--sb3-threads", str(sb3_threads), "--precision", precision, "--vec-env", vec_env]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"run {name} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def console() -> Any:
    """A rich console wide enough for the tables when the output is a file or a pipe."""
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=150)


def bench(
    name: str, pairs: int, steps: int | None, seed: int, precision: str = "fp32", vec_env: str = "dummy"
) -> dict[str, Any]:
    """Rounds of the bench's setups in rotating order (an SB3 setup at each of ``SB3_THREADS``); per-round ratios
    of steady rates against A at its best."""
    from rich.table import Table

    a, b, target = BENCHES[name]
    steps = steps or DEFAULT_STEPS[SETUPS[a]["env"]]
    a_threads = SB3_THREADS if SETUPS[a]["algo"] == "sb3" else (0,)
    setups = [(a, threads) for threads in a_threads] + [(b, 0)]
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {setup: [] for setup in setups}
    table = Table(title=f"{name}: {b} vs {a}, {steps} steps per run (load avg at start {os.getloadavg()[0]:.1f})")
    columns = ("round", "run", "threads", "steady steps/s", "per worker", "steps per CPU-s", "wall steps/s", "wall s")
    for column in columns:
        table.add_column(column, justify="right")
    for round_index in range(pairs):
        for setup in rotation(setups, round_index):
            result = run_subprocess(setup[0], steps, seed + round_index, setup[1], precision, vec_env)
            runs[setup].append(result)
            table.add_row(
                str(round_index + 1),
                setup[0],
                str(result["threads"]),
                f"{result['steady']:.0f}",
                " / ".join(f"{rate:.0f}" for rate in result["workers"]) or "—",
                f"{result['per_cpu_s']:.0f}",
                f"{result['wall']:.0f}",
                f"{result['wall_s']:.1f}",
            )
    console().print(table)
    for setup, results in runs.items():
        if results[0]["time_shares"]:
            shares = {
                k: statistics.median(r["time_shares"].get(k, 0.0) for r in results) for k in results[0]["time_shares"]
            }
            print(f"{setup[0]}: workers' time, medians: " + ", ".join(f"{k} {v:.1%}" for k, v in shares.items()))
    best = best_sb3({threads: runs[(a, threads)] for threads in a_threads}, "steady")
    ours, theirs = runs[(b, 0)], runs[(a, best)]
    # What the ratio would be on idle cores: each side's CPU efficiency times the cores it can use.
    for run in (*ours, *theirs):
        run["idle_core_rate"] = run["per_cpu_s"] * run["cores"]
    return {
        "bench": name,
        "a": a if len(a_threads) == 1 else f"{a} ({thread_label(best)}, its best)",
        "b": b,
        "a_by_threads": {thread_label(t): statistics.median(r["steady"] for r in runs[(a, t)]) for t in a_threads},
        "a_steady": statistics.median(r["steady"] for r in theirs),
        "b_steady": statistics.median(r["steady"] for r in ours),
        "ratio": statistics.median(ratios(ours, theirs, "steady")),
        "ratios": ratios(ours, theirs, "steady"),
        "wall_ratio": statistics.median(ratios(ours, theirs, "wall")),
        "cpu_ratio": statistics.median(ratios(ours, theirs, "per_cpu_s")),
        "cpu_bound": statistics.median(ratios(ours, theirs, "idle_core_rate")),
        "target": target,
    }


def summary(results: list[dict[str, Any]]) -> None:
    from rich.table import Table

    table = Table(title=f"A3C throughput: median of per-round ratios (load avg now {os.getloadavg()[0]:.1f})")
    columns = ("bench", "B / A", "A steps/s by threads", "B steps/s", "ratio (steady)", "per round", "ratio (wall)")
    for column in (*columns, "ratio (CPU)", "idle-core ratio", "target"):
        table.add_column(column, justify="right")
    for r in results:
        target = "—" if r["target"] is None else f"≥ {r['target']:.1f}× {'✓' if r['ratio'] >= r['target'] else '✗'}"
        table.add_row(
            r["bench"],
            f"{r['b']} / {r['a']}",
            ", ".join(f"{label} {rate:.0f}" for label, rate in r["a_by_threads"].items()),
            f"{r['b_steady']:.0f}",
            f"{r['ratio']:.2f}×",
            ", ".join(f"{x:.2f}" for x in r["ratios"]),
            f"{r['wall_ratio']:.2f}×",
            f"{r['cpu_ratio']:.2f}×",
            f"{r['cpu_bound']:.2f}×",
            target,
        )
    console().print(table)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", nargs="+", choices=list(BENCHES), default=list(BENCHES), help="comparisons to run")
    parser.add_argument("--steps", type=int, help="env steps per run (default: 20000 on Pong, 40000 on CartPole)")
    parser.add_argument("--pairs", type=int, default=3, help="rounds per comparison (default 3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sb3-threads", type=int, default=0, help=argparse.SUPPRESS)  # an SB3 run's threads
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32", help="A3C's precision (default fp32)")
    parser.add_argument("--vec-env", choices=("dummy", "ale"), default="dummy", help="A3C's Atari envs (default dummy)")
    parser.add_argument("--_run", choices=list(SETUPS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._run:
        print(json.dumps(run_one(args._run, args.steps, args.seed, args.sb3_threads, args.precision, args.vec_env)))
        return
    summary([bench(name, args.pairs, args.steps, args.seed, args.precision, args.vec_env) for name in args.bench])


if __name__ == "__main__":
    main()
