"""Wall-clock time to solve CartPole-v1: A3C against Stable-Baselines3's A2C.

"Solved" means an ``EvalCallback`` evaluation (``--eval-episodes`` deterministic episodes on a
separate env) with mean reward ≥ 475, which ``StopTrainingOnRewardThreshold`` turns into the end of
``learn``. SB3's A2C uses the zoo's hyperparameters for CartPole-v1 (rl-baselines3-zoo
hyperparams/a2c.yml: 8 envs, ent_coef 0.0, otherwise SB3's A2C defaults: lr 7e-4, n_steps 5,
RMSprop); A3C uses its entry in pgplug's ``configs/a3c.yml`` (what ``pgplug train --algo a3c``
uses), with ``--a3c-hyperparams key=value`` overrides for tuning. Evaluations run every
``--eval-every`` env steps; in A3C they run in the main process, and the workers pause when they get
more than ``callback_lag`` steps ahead of them (as SB3 pauses training to evaluate).

Each run is a fresh subprocess; seeds alternate the order (SB3 first, then A3C first, ...). The time
counts building the model and ``learn`` (A3C's includes starting its forkserver and workers; both
sides import torch before the clock starts). A run that hits ``--max-steps`` unsolved counts as its
time at the cap, so the ratio is then a lower bound for that seed.

    python benchmarks/a3c_solve_time.py --seeds 0 1 2 3 4 --max-steps 300000
    python benchmarks/a3c_solve_time.py --a3c-hyperparams learning_rate=1e-3 n_envs_per_worker=8
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

THRESHOLD = 475.0
ZOO_CARTPOLE = {"ent_coef": 0.0, "learning_rate": 7e-4}


def a3c_model(seed: int, overrides: list[str]) -> Any:
    """A3C as ``pgplug train --algo a3c --env CartPole-v1 --hyperparams ...`` would build it."""
    from pgplug import A3C  # type: ignore[attr-defined]
    from pgplug.interop.config import builtin_config_path, load_config_file, parse_assignments, prepare, select_entry

    path = builtin_config_path("a3c")
    assert path is not None
    _, hyperparams = select_entry(load_config_file(path), "CartPole-v1", atari=False)
    hyperparams.update(parse_assignments(overrides))
    config = prepare(A3C, hyperparams, "a3c")
    return A3C(env="CartPole-v1", seed=seed, **config.algorithm_kwargs)


def run_one(side: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    import torch as th
    from stable_baselines3.common.callbacks import EvalCallback, StopTrainingOnRewardThreshold
    from stable_baselines3.common.env_util import make_vec_env

    th.set_num_threads(1)  # A3C workers use one thread each; on 2 busy cores it is SB3's fastest setting too
    start = time.perf_counter()
    if side == "sb3":
        from stable_baselines3 import A2C

        model: Any = A2C("MlpPolicy", make_vec_env("CartPole-v1", n_envs=8, seed=seed), seed=seed, **ZOO_CARTPOLE)
        n_envs_per_call = 8
    else:
        model = a3c_model(seed, args.a3c_hyperparams)
        n_envs_per_call = model.n_envs_per_worker
    # eval_freq counts on_step calls: one per vec-env step (8 env steps in SB3, n_envs_per_worker in A3C).
    evaluation = EvalCallback(
        make_vec_env("CartPole-v1", n_envs=1, seed=10_000 + seed),
        eval_freq=max(args.eval_every // n_envs_per_call, 1),
        n_eval_episodes=args.eval_episodes,
        callback_on_new_best=StopTrainingOnRewardThreshold(THRESHOLD),
        verbose=0,
    )
    model.learn(args.max_steps, callback=evaluation)
    seconds = time.perf_counter() - start
    return {
        "side": side,
        "seed": seed,
        "seconds": seconds,
        "steps": model.num_timesteps,
        "solved": evaluation.best_mean_reward >= THRESHOLD,
        "best": evaluation.best_mean_reward,
    }


def run_subprocess(side: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    command = [sys.executable, __file__, "--_run", side, "--seeds", str(seed), "--max-steps", str(args.max_steps)]
    command += ["--eval-every", str(args.eval_every), "--eval-episodes", str(args.eval_episodes)]
    command += ["--a3c-hyperparams", *args.a3c_hyperparams]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"run {side} (seed {seed}) failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--max-steps", type=int, default=300_000, help="step budget per run (default 300000)")
    parser.add_argument("--eval-every", type=int, default=5_000, help="env steps between evaluations (default 5000)")
    parser.add_argument("--eval-episodes", type=int, default=10, help="episodes per evaluation (default 10)")
    parser.add_argument(
        "--a3c-hyperparams", nargs="*", default=[], metavar="KEY=VALUE", help="overrides of configs/a3c.yml's entry"
    )
    parser.add_argument(
        "--sides", nargs="+", choices=("sb3", "a3c"), default=["sb3", "a3c"], help="run only these (e.g. to tune A3C)"
    )
    parser.add_argument("--_run", choices=("sb3", "a3c"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._run:
        result = run_one(args._run, args.seeds[0], args)
        print(json.dumps(result))
        return

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"CartPole-v1 time to eval mean ≥ {THRESHOLD:.0f} (load avg at start {os.getloadavg()[0]:.1f})")
    for column in ("seed", "side", "solved", "steps", "seconds", "best eval"):
        table.add_column(column, justify="right")
    ratios, seconds = [], {side: [] for side in args.sides}
    for index, seed in enumerate(args.seeds):
        results = {}
        for side in args.sides if index % 2 == 0 else args.sides[::-1]:
            results[side] = r = run_subprocess(side, seed, args)
            seconds[side].append(r["seconds"])
            solved = "yes" if r["solved"] else "no (cap)"
            table.add_row(str(seed), side, solved, str(r["steps"]), f"{r['seconds']:.1f}", f"{r['best']:.0f}")
        if len(results) == 2:
            ratios.append(results["sb3"]["seconds"] / results["a3c"]["seconds"])
    console = Console() if sys.stdout.isatty() else Console(width=120)
    console.print(table)
    medians = ", ".join(f"{side} {statistics.median(s):.1f} s" for side, s in seconds.items())
    console.print(f"median time to solve: {medians} (load avg now {os.getloadavg()[0]:.1f})")
    if ratios:
        console.print(
            f"speed-up (SB3 time / A3C time): median {statistics.median(ratios):.2f}× "
            f"(per seed: {', '.join(f'{r:.2f}' for r in ratios)})"
        )


if __name__ == "__main__":
    main()
