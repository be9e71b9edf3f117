"""torch threads for a CNN policy: one thread against torch's default, A2C CnnPolicy on Pong with 16 envs.

Decided the idle-cores rule of ``pgplug.runtime.threads`` (CNN policies without ``--num-threads``).
Each run is a fresh subprocess that builds the env and pgplug's A2C (the zoo's Atari settings), warms up a few
updates, then times ``learn(--steps)``. Runs alternate (1, default), (default, 1), ... so that load from other
processes hits both alike; the figures are medians over ``--pairs`` pairs, and the ratio is the median of the
per-pair ratios.

    python benchmarks/threads_cnn.py                      # 3 pairs of 1,600 steps
    python benchmarks/threads_cnn.py --pairs 5 --steps 3200
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

WARMUP_UPDATES = 3


def one_run(threads: int, steps: int) -> dict[str, float]:
    """Build, warm up and time one learner in this process; ``threads`` 0 keeps torch's default."""
    import time

    import ale_py
    import gymnasium as gym
    import torch
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.vec_env import VecFrameStack

    from pgplug import A2C

    gym.register_envs(ale_py)
    if threads > 0:
        torch.set_num_threads(threads)
    env = VecFrameStack(make_atari_env("PongNoFrameskip-v4", n_envs=16, seed=0), 4)
    model = A2C("CnnPolicy", env, ent_coef=0.01, vf_coef=0.25, seed=0, device="cpu")
    model.learn(WARMUP_UPDATES * model.n_steps * model.n_envs)
    start, cpu = time.perf_counter(), time.process_time()
    model.learn(steps, reset_num_timesteps=False)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {"threads": torch.get_num_threads(), "steps_per_s": steps / wall, "cpu_s_per_kstep": 1000 * cpu / steps}


def run_in_subprocess(threads: int, steps: int) -> dict[str, float]:
    code = (
        "import json, sys; sys.path.insert(0, 'benchmarks'); from threads_cnn import one_run; "
        f"print(json.dumps(one_run({threads}, {steps})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=1600, help="timed steps per run (after the warm-up)")
    args = parser.parse_args()
    one, default, ratios = [], [], []
    for pair in range(args.pairs):
        order = (1, 0) if pair % 2 == 0 else (0, 1)
        results = {t: run_in_subprocess(t, args.steps) for t in order}
        one.append(results[1]["steps_per_s"])
        default.append(results[0]["steps_per_s"])
        ratios.append(results[1]["steps_per_s"] / results[0]["steps_per_s"])
        print(
            f"pair {pair + 1}: 1 thread {results[1]['steps_per_s']:6.0f} steps/s "
            f"({results[1]['cpu_s_per_kstep']:.2f} CPU s/1k steps)   "
            f"default ({results[0]['threads']:.0f} threads) {results[0]['steps_per_s']:6.0f} steps/s "
            f"({results[0]['cpu_s_per_kstep']:.2f} CPU s/1k steps)",
            flush=True,
        )
    print(
        f"median: 1 thread {statistics.median(one):.0f} steps/s, default {statistics.median(default):.0f} steps/s, "
        f"1 thread / default {statistics.median(ratios):.2f}"
    )


if __name__ == "__main__":
    main()
