"""SB3's Atari pipeline against ``--vec-env ale`` (ale-py's ``AtariVectorEnv``): speed and score distributions.

Three parts (``--part``; default speed and scores):

- ``speed``: env steps per second of each pipeline alone, random actions, ``--n-envs`` envs (SB3:
  ``make_atari_env`` + ``VecFrameStack(4)`` over ``DummyVecEnv``, what the zoo gives SB3; pgplug: the ``EnvSpec`` of
  ``pgplug train --vec-env ale``), alternating rounds in fresh processes; steps per CPU-second too, since
  ale-py's threads spend CPU beside the main thread.
- ``scores``: one trained model (``--model``, e.g. the ``final.zip`` of ``benchmarks/a3c_pong_long.py``) plays
  ``--episodes`` whole games on each pipeline (stochastic actions, as rl-baselines3-zoo evaluates Atari, with seeds
  that differ across episodes); the two score distributions, their means' difference with a bootstrap 95% interval,
  and the largest gap between their empirical CDFs (the Kolmogorov–Smirnov statistic). Equal pipelines give
  intervals that cover 0.
- ``groups``: pgplug's A2C learning Pong (the zoo's config, ``benchmarks/throughput.py``'s timed run) on
  ``--vec-env ale`` with its envs in one group against two, where the policy acts for one group while the other's
  emulators step; alternating rounds in fresh processes, in the precision ``pgplug train`` picks on this CPU.

    python benchmarks/atari_vec.py --part speed --pairs 3
    python benchmarks/atari_vec.py --part groups --pairs 5
    python benchmarks/atari_vec.py --part scores --model runs/a3c_pong/final.zip --episodes 30
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from sb3_best import rotation

ENV_ID = "PongNoFrameskip-v4"
PIPELINES = ("sb3", "ale")


def make_env(pipeline: str, n_envs: int, seed: int, env_id: str = ENV_ID) -> Any:
    """The Atari ``VecEnv`` each pipeline builds: SB3's as the zoo builds it, or pgplug's ``vec_env: ale``."""
    if pipeline == "ale":
        from pgplug.runtime.envs import EnvSpec

        return EnvSpec.for_env_id(env_id, n_envs=n_envs, seed=seed, vec_env="ale").make_vec_env()
    import ale_py
    import gymnasium as gym
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.vec_env import VecFrameStack

    gym.register_envs(ale_py)
    return VecFrameStack(make_atari_env(env_id, n_envs=n_envs, seed=seed), n_stack=4)


def speed_run(pipeline: str, n_envs: int, steps: int, seed: int) -> dict[str, float]:
    """Random-action steps/s (wall and per CPU-second of this process, threads included) after 200 warm-up steps."""
    env = make_env(pipeline, n_envs, seed)
    rng = np.random.default_rng(seed)
    env.reset()
    n_actions = env.action_space.n

    def step_many(count: int) -> None:
        for _ in range(count):
            env.step(rng.integers(n_actions, size=n_envs))

    step_many(200)
    start, start_cpu = time.perf_counter(), time.process_time()
    step_many(steps)
    wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    env.close()
    return {"steps_per_s": steps * n_envs / wall, "steps_per_cpu_s": steps * n_envs / cpu}


def speed(pairs: int, n_envs: int, steps: int, seed: int) -> dict[str, Any]:
    """Alternating rounds of both pipelines in fresh processes; medians and the ale/sb3 ratio per round."""
    runs: dict[str, list[dict[str, float]]] = {p: [] for p in PIPELINES}
    for round_index in range(pairs):
        for pipeline in rotation(PIPELINES, round_index):
            command = [sys.executable, __file__, "--_speed", pipeline, "--n-envs", str(n_envs)]
            command += ["--steps", str(steps), "--seed", str(seed + round_index)]
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            runs[pipeline].append(json.loads(done.stdout.strip().splitlines()[-1]))
        line = "  ".join(f"{p} {runs[p][-1]['steps_per_s']:7.0f}" for p in PIPELINES)
        print(f"  round {round_index + 1}: {line} env steps/s", flush=True)
    ratios = {
        unit: [a[unit] / s[unit] for a, s in zip(runs["ale"], runs["sb3"])]
        for unit in ("steps_per_s", "steps_per_cpu_s")
    }
    result = {
        "n_envs": n_envs,
        "medians": {p: {u: statistics.median(r[u] for r in runs[p]) for u in runs[p][0]} for p in PIPELINES},
        "ratio_wall": statistics.median(ratios["steps_per_s"]),
        "ratio_cpu": statistics.median(ratios["steps_per_cpu_s"]),
        "ratios_wall": ratios["steps_per_s"],
    }
    for pipeline in PIPELINES:
        medians = result["medians"][pipeline]
        print(f"  {pipeline}: {medians['steps_per_s']:.0f} env steps/s, {medians['steps_per_cpu_s']:.0f} per CPU-s")
    print(f"  ale / sb3: {result['ratio_wall']:.2f} wall, {result['ratio_cpu']:.2f} per CPU-second")
    return result


GROUPINGS = (1, 2)


def groups_run(groups: int, steps: int, seed: int) -> dict[str, Any]:
    """``throughput.py``'s timed pgplug A2C run on Pong with ``vec_env: ale`` in ``groups`` groups."""
    from throughput import run_one

    from pgplug.runtime import ale_vector
    from pgplug.runtime.precision_choice import choose_precision

    ale_vector.DEFAULT_GROUPS = groups  # read by EnvSpec when it builds the AleVecEnv
    probe = make_env("ale", 1, seed)
    from pgplug import A2C

    precision = choose_precision(A2C("CnnPolicy", probe, device="cpu").policy, fast=True)[0]
    probe.close()
    return {**run_one("pgplug", ENV_ID, steps, seed, 0, precision=precision, vec_env="ale"), "precision": precision}


def compare_groups(pairs: int, steps: int, seed: int) -> dict[str, Any]:
    """Alternating rounds of one group and two in fresh processes; medians and the per-round ratio."""
    runs: dict[int, list[dict[str, Any]]] = {g: [] for g in GROUPINGS}
    for round_index in range(pairs):
        for groups in rotation(GROUPINGS, round_index):
            command = [sys.executable, __file__, "--_groups", str(groups), "--learn-steps", str(steps)]
            command += ["--seed", str(seed)]
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            runs[groups].append(json.loads(done.stdout.strip().splitlines()[-1]))
        line = "  ".join(f"{g} group{'s' * (g > 1)} {runs[g][-1]['steps_per_s']:5.0f}" for g in GROUPINGS)
        print(f"  round {round_index + 1}: {line} steps/s", flush=True)
    ratios = [two["steps_per_s"] / one["steps_per_s"] for one, two in zip(runs[1], runs[2])]
    result: dict[str, Any] = {"precision": runs[1][0]["precision"], "ratios": ratios}
    for groups in GROUPINGS:
        wall = statistics.median(r["steps_per_s"] for r in runs[groups])
        cpu = statistics.median(r["steps_per_cpu_s"] for r in runs[groups])
        env = statistics.median(r["shares"]["env"] for r in runs[groups])
        result[f"groups_{groups}"] = {"steps_per_s": wall, "steps_per_cpu_s": cpu, "env_share": env}
        label = f"{groups} group{'s' * (groups > 1)}"
        print(f"  {label}: {wall:.0f} steps/s, {cpu:.0f} per CPU-s, waiting on envs {env:.0%}")
    print(f"  2 groups / 1: {statistics.median(ratios):.2f} (rounds: {', '.join(f'{r:.2f}' for r in ratios)})")
    return result


def play(model_path: Path, pipeline: str, episodes: int, seed: int) -> list[float]:
    """Whole-game scores of the model on one env of ``pipeline`` (Monitor's raw score, stochastic actions)."""
    from stable_baselines3.common.evaluation import evaluate_policy

    from pgplug import A2C  # type: ignore[attr-defined]

    env = make_env(pipeline, 1, seed)
    model = A2C.load(model_path, device="cpu")
    scores, _ = evaluate_policy(model, env, n_eval_episodes=episodes, deterministic=False, return_episode_rewards=True)
    env.close()
    return [float(s) for s in scores]


def compare(a: list[float], b: list[float], resamples: int = 10_000, seed: int = 0) -> dict[str, float]:
    """Difference of means b − a with a bootstrap 95% interval, and the Kolmogorov–Smirnov statistic."""
    rng = np.random.default_rng(seed)
    xa, xb = np.asarray(a), np.asarray(b)
    diffs = rng.choice(xb, (resamples, len(xb))).mean(1) - rng.choice(xa, (resamples, len(xa))).mean(1)
    grid = np.union1d(xa, xb)
    cdf_a = np.searchsorted(np.sort(xa), grid, side="right") / len(xa)
    cdf_b = np.searchsorted(np.sort(xb), grid, side="right") / len(xb)
    low, high = np.percentile(diffs, [2.5, 97.5])
    return {
        "difference": float(xb.mean() - xa.mean()),
        "low": float(low),
        "high": float(high),
        "ks": float(np.abs(cdf_a - cdf_b).max()),
    }


def scores(model_path: Path, episodes: int, seed: int) -> dict[str, Any]:
    """Both pipelines' score distributions for one model, and how far apart they are."""
    played = {pipeline: play(model_path, pipeline, episodes, seed) for pipeline in PIPELINES}
    result = {"model": str(model_path), "episodes": episodes, "scores": played, **compare(played["sb3"], played["ale"])}
    for pipeline, values in played.items():
        print(f"  {pipeline}: {np.mean(values):+.2f} ± {np.std(values):.2f} over {len(values)} games")
    print(
        f"  ale − sb3: {result['difference']:+.2f} (95% bootstrap interval {result['low']:+.2f} .. "
        f"{result['high']:+.2f}); KS statistic {result['ks']:.2f}"
    )
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", nargs="+", choices=("speed", "scores", "groups"), default=["speed", "scores"])
    parser.add_argument("--pairs", type=int, default=3, help="speed: rounds (default 3)")
    parser.add_argument("--n-envs", type=int, default=16, help="speed: envs per pipeline (default 16, the zoo's)")
    parser.add_argument("--steps", type=int, default=2000, help="speed: timed vec-env steps per run (default 2000)")
    parser.add_argument("--learn-steps", type=int, default=8000, help="groups: timed agent steps per run (8000)")
    parser.add_argument("--model", type=Path, help="scores: a trained Pong model (.zip)")
    parser.add_argument("--episodes", type=int, default=30, help="scores: games per pipeline (default 30)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--_speed", choices=PIPELINES, help=argparse.SUPPRESS)
    parser.add_argument("--_groups", type=int, choices=GROUPINGS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._speed:
        print(json.dumps(speed_run(args._speed, args.n_envs, args.steps, args.seed)))
        return
    if args._groups:
        print(json.dumps(groups_run(args._groups, args.learn_steps, args.seed)))
        return
    results: dict[str, Any] = {}
    if "speed" in args.part:
        print(f"speed: {args.n_envs} envs of {ENV_ID}, random actions, {args.steps} steps per run")
        results["speed"] = speed(args.pairs, args.n_envs, args.steps, args.seed)
    if "scores" in args.part:
        if args.model is None:
            raise SystemExit("--part scores needs --model MODEL.zip (a trained Pong model)")
        print(f"scores: {args.model} on {ENV_ID}, {args.episodes} games per pipeline")
        results["scores"] = scores(args.model, args.episodes, args.seed)
    if "groups" in args.part:
        print(f"groups: pgplug A2C on {ENV_ID}, 16 envs of vec_env ale, {args.learn_steps} timed steps per run")
        results["groups"] = compare_groups(args.pairs, args.learn_steps, args.seed)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
