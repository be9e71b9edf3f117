"""Sample efficiency: env steps until the solved threshold, pgplug A2C per estimator vs SB3 A2C.

Every ``--eval-freq`` env steps the deterministic policy is evaluated on ``--eval-episodes``
episodes of a separate env (SB3's ``EvalCallback``); a run is solved at the first evaluation whose
mean reward reaches the threshold (CartPole-v1 475, Acrobot-v1 -100) and stops there
(``StopTrainingOnRewardThreshold``). Unsolved runs show ``-`` (not solved within ``--budget``).
Hyperparameters are rl-baselines3-zoo's A2C ones; each estimator keeps its own defaults
(``nstep`` n=None, ``gae`` λ=0.95; SB3's A2C uses gae_lambda=1.0, i.e. pgplug's ``nstep``).

    python benchmarks/learning.py                                   # 2 envs × (estimators + SB3) × 3 seeds
    python benchmarks/learning.py --env CartPole-v1 --seeds 0 --budget 50000 --estimators gae
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch as th
from stable_baselines3.common.callbacks import EvalCallback, StopTrainingOnRewardThreshold
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

ENVS: dict[str, dict[str, Any]] = {
    # threshold: gymnasium's reward_threshold; the rest: the zoo's hyperparams/a2c.yml.
    "CartPole-v1": {
        "threshold": 475.0,
        "n_envs": 8,
        "normalize": False,
        "kwargs": {"ent_coef": 0.0},
        "budget": 200_000,
    },
    "Acrobot-v1": {
        "threshold": -100.0,
        "n_envs": 16,
        "normalize": True,
        "kwargs": {"ent_coef": 0.0},
        "budget": 300_000,
    },
}
SB3 = "sb3"


def make_envs(env_id: str, seed: int) -> tuple[VecEnv, VecEnv]:
    config = ENVS[env_id]
    train_env = make_vec_env(env_id, n_envs=config["n_envs"], seed=seed)
    eval_env = make_vec_env(env_id, n_envs=1, seed=seed + 10_000)
    if config["normalize"]:  # EvalCallback copies the training statistics into the eval env
        train_env = VecNormalize(train_env)
        eval_env = VecNormalize(eval_env, training=False, norm_reward=False)
    return train_env, eval_env


def steps_to_solve(env_id: str, learner: str, seed: int, budget: int, eval_freq: int, eval_episodes: int) -> int | None:
    """Env steps at the first evaluation that reaches the threshold, or None within ``budget``."""
    config = ENVS[env_id]
    train_env, eval_env = make_envs(env_id, seed)
    if learner == SB3:
        from stable_baselines3 import A2C

        model = A2C("MlpPolicy", train_env, seed=seed, **config["kwargs"])
    else:
        from pgplug import A2C  # type: ignore[attr-defined]

        model = A2C("MlpPolicy", train_env, seed=seed, estimator=learner, **config["kwargs"])
    stop = StopTrainingOnRewardThreshold(reward_threshold=config["threshold"])
    evaluate = EvalCallback(
        eval_env,
        callback_on_new_best=stop,
        eval_freq=max(eval_freq // config["n_envs"], 1),  # EvalCallback counts vec-env steps
        n_eval_episodes=eval_episodes,
        verbose=0,
    )
    model.learn(budget, callback=evaluate)
    solved = evaluate.best_mean_reward >= config["threshold"]
    train_env.close()
    eval_env.close()
    return model.num_timesteps if solved else None


def main(argv: list[str] | None = None) -> None:
    from pgplug import A2C  # type: ignore[attr-defined]

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", choices=sorted(ENVS), action="append", help="env id (repeatable; default: all)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--estimators", nargs="+", help="pgplug estimators (default: every one A2C accepts)")
    parser.add_argument("--no-sb3", action="store_true", help="skip the SB3 A2C baseline")
    parser.add_argument("--budget", type=int, help="env steps per run (default: per env)")
    parser.add_argument("--eval-freq", type=int, default=5_000, help="env steps between evaluations")
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    args = parser.parse_args(argv)
    th.set_num_threads(args.threads)
    learners = list(args.estimators or A2C.compatible_estimators()) + ([] if args.no_sb3 else [SB3])
    for env_id in args.env or list(ENVS):
        budget = args.budget or ENVS[env_id]["budget"]
        print(f"{env_id}: env steps to mean eval reward >= {ENVS[env_id]['threshold']:g} (budget {budget})")
        for learner in learners:
            start = time.perf_counter()
            results = [
                steps_to_solve(env_id, learner, seed, budget, args.eval_freq, args.eval_episodes) for seed in args.seeds
            ]
            solved = [r for r in results if r is not None]
            median = f"{statistics.median(solved):>9,.0f}" if len(solved) == len(results) else "        -"
            cells = "  ".join(f"{r:>9,}" if r is not None else "        -" for r in results)
            name = "SB3 A2C" if learner == SB3 else f"pgplug A2C {learner}"
            print(
                f"  {name:22s} median {median}   seeds: {cells}   "
                f"({len(solved)}/{len(results)} solved, {time.perf_counter() - start:.0f} s)",
                flush=True,
            )


if __name__ == "__main__":
    main()
