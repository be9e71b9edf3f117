"""Wall-clock time to solve CartPole-v1: A3C against Stable-Baselines3's A2C.

"Solved" means an ``EvalCallback`` evaluation (``--eval-episodes`` deterministic episodes on a
separate env) with mean reward ≥ 475, which ``StopTrainingOnRewardThreshold`` turns into the end of
``learn``. Both sides use the zoo's A2C hyperparameters for CartPole-v1 (rl-baselines3-zoo
hyperparams/a2c.yml: 8 envs, ent_coef 0.0, otherwise SB3's A2C defaults: lr 7e-4, n_steps 5, RMSprop);
A3C spreads the 8 envs over 2 workers × 4 (``t_max`` 5). Evaluations run every ``--eval-every`` env
steps; in A3C they run in the main process while the workers keep training, in SB3 they pause it.

Each run is a fresh subprocess; seeds alternate the order (SB3 first, then A3C first, ...). The time
counts ``learn`` only (A3C's includes starting its workers). A run that hits ``--max-steps``
unsolved counts as its time at the cap, so the ratio is then a lower bound for that seed.

    python benchmarks/a3c_solve_time.py --seeds 0 1 2 --max-steps 300000
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


def run_one(side: str, seed: int, max_steps: int, eval_every: int, eval_episodes: int) -> dict[str, Any]:
    import torch as th
    from stable_baselines3.common.callbacks import EvalCallback, StopTrainingOnRewardThreshold
    from stable_baselines3.common.env_util import make_vec_env

    th.set_num_threads(1)  # A3C workers use one thread each; on 2 busy cores it is SB3's fastest setting too
    if side == "sb3":
        from stable_baselines3 import A2C

        n_envs_per_call = 8
        model: Any = A2C("MlpPolicy", make_vec_env("CartPole-v1", n_envs=8, seed=seed), seed=seed, **ZOO_CARTPOLE)
    else:
        from pgplug import A3C  # type: ignore[attr-defined]

        n_envs_per_call = 4
        model = A3C("MlpPolicy", "CartPole-v1", n_workers=2, n_envs_per_worker=4, t_max=5, seed=seed, **ZOO_CARTPOLE)
    # eval_freq counts on_step calls: one per vec-env step (8 env steps in SB3, 4 in an A3C worker).
    evaluation = EvalCallback(
        make_vec_env("CartPole-v1", n_envs=1, seed=10_000 + seed),
        eval_freq=max(eval_every // n_envs_per_call, 1),
        n_eval_episodes=eval_episodes,
        callback_on_new_best=StopTrainingOnRewardThreshold(THRESHOLD),
        verbose=0,
    )
    start = time.perf_counter()
    model.learn(max_steps, callback=evaluation)
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
    parser.add_argument("--_run", choices=("sb3", "a3c"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._run:
        result = run_one(args._run, args.seeds[0], args.max_steps, args.eval_every, args.eval_episodes)
        print(json.dumps(result))
        return

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"CartPole-v1 time to eval mean ≥ {THRESHOLD:.0f} (load avg at start {os.getloadavg()[0]:.1f})")
    for column in ("seed", "side", "solved", "steps", "seconds", "best eval"):
        table.add_column(column, justify="right")
    ratios = []
    for index, seed in enumerate(args.seeds):
        results = {}
        for side in ("sb3", "a3c") if index % 2 == 0 else ("a3c", "sb3"):
            results[side] = run_subprocess(side, seed, args)
            r = results[side]
            solved = "yes" if r["solved"] else "no (cap)"
            table.add_row(str(seed), side, solved, str(r["steps"]), f"{r['seconds']:.1f}", f"{r['best']:.0f}")
        ratios.append(results["sb3"]["seconds"] / results["a3c"]["seconds"])
    console = Console() if sys.stdout.isatty() else Console(width=120)
    console.print(table)
    console.print(
        f"speed-up (SB3 time / A3C time): median {statistics.median(ratios):.2f}× "
        f"(per seed: {', '.join(f'{r:.2f}' for r in ratios)}; load avg now {os.getloadavg()[0]:.1f})"
    )


if __name__ == "__main__":
    main()
