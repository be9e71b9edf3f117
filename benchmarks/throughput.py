"""Throughput of pgplug's A2C against Stable-Baselines3's A2C, same config, alternating A/B runs.

Each run is a fresh subprocess (no shared thread pools, caches or allocator state) that builds the
env and the model, warms up for a few updates, then times ``learn(--steps)``. Runs alternate
SB3, pgplug, pgplug, SB3, ... so that load from other processes hits both sides alike; the figures
are medians over ``--pairs`` pairs, and each ratio is the median of the per-pair ratios. Steps per
second are given in wall time and in the process's CPU time: on a shared machine the CPU-time
figure is the stable one (other processes' load barely moves it).

Inside each run, timers around ``env.step``, the rollout forward passes (actions and values for
each step, V(last obs) and timeout bootstraps) and the update (estimator + loss + backward +
optimizer step) split the time; "other" is everything else (obs copies, buffer writes, callbacks,
episode bookkeeping, logging): pgplug's target is ≤ 5%. The timers read ``perf_counter`` (the runs
are single-threaded, so wall time is the process's time, and a preemption lands in each part in
proportion to its length): ``process_time`` is a system call here, ~0.6 µs, and with two per
timed call (13 calls per CartPole update) the timers alone were 2% of a run. What the timers still
cost is measured before each run (a timed no-op against a bare one) and taken out of the split, to
the part it landed in; it is printed as "timers", outside the 100%.

SB3 runs at its best and pgplug at its defaults (``sb3_best.py``): each round runs SB3 at one torch thread,
SB3 at torch's default and pgplug at the thread count ``pgplug train`` chooses, in rotating order; SB3's faster
setting by median is its best for the env, and the ratios are pgplug's over it, round by round. Both SB3
figures are printed. Each side gets its envs as its users do: SB3's ``make_vec_env`` (``make_atari_env`` and
``VecFrameStack`` for Atari) for SB3, the same pipeline built by ``pgplug train``'s ``EnvSpec`` for pgplug (so
pgplug's env speed paths count, as they do for its users).

    python benchmarks/throughput.py                      # both envs, 3 rounds
    python benchmarks/throughput.py --env CartPole-v1 --pairs 5 --steps 40000
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from sb3_best import SB3_THREADS, apply_threads, best_sb3, pgplug_default_threads, ratios, rotation, thread_label

from pgplug.validation import PRECISIONS

# The zoo's A2C hyperparameters (rl-baselines3-zoo hyperparams/a2c.yml); the rest are A2C defaults.
CONFIGS: dict[str, dict[str, Any]] = {
    "CartPole-v1": {"n_envs": 8, "policy": "MlpPolicy", "atari": False, "kwargs": {"ent_coef": 0.0}, "steps": 40_000},
    "PongNoFrameskip-v4": {
        "n_envs": 16,
        "policy": "CnnPolicy",
        "atari": True,
        "kwargs": {"ent_coef": 0.01, "vf_coef": 0.25},
        "steps": 4_000,
    },
}
WARMUP_UPDATES = 5


def make_env(env_id: str, n_envs: int, atari: bool, seed: int, side: str = "sb3", vec_env: str = "dummy"):
    """The envs each side gets by default: SB3's ``make_vec_env``/``make_atari_env`` + ``VecFrameStack`` (as the zoo
    builds them for SB3), and for pgplug the same pipeline as ``pgplug train --vec-env VEC_ENV`` builds it (its
    ``EnvSpec``)."""
    from stable_baselines3.common.env_util import make_atari_env, make_vec_env
    from stable_baselines3.common.vec_env import VecFrameStack

    if side == "pgplug":
        from pgplug.runtime.envs import EnvSpec

        return EnvSpec.for_env_id(env_id, n_envs=n_envs, seed=seed, vec_env=vec_env).make_vec_env()
    if atari:
        import ale_py
        import gymnasium as gym

        gym.register_envs(ale_py)
        return VecFrameStack(make_atari_env(env_id, n_envs=n_envs, seed=seed), n_stack=4)
    return make_vec_env(env_id, n_envs=n_envs, seed=seed)


class Timers:
    """Accumulated time of the wrapped callables, by part, and the number of calls timed."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {"env": 0.0, "forward": 0.0, "update": 0.0}
        self.calls: dict[str, int] = dict.fromkeys(self.seconds, 0)

    def wrap(self, part: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        seconds, calls, clock = self.seconds, self.calls, time.perf_counter

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = clock()
            try:
                return fn(*args, **kwargs)
            finally:
                seconds[part] += clock() - start
                calls[part] += 1

        return timed

    def reset(self) -> None:
        for part in self.seconds:
            self.seconds[part], self.calls[part] = 0.0, 0


def timer_cost(repeats: int = 7, calls: int = 20_000) -> tuple[float, float]:
    """Seconds one timed call adds (inside its timed interval, outside it), best of ``repeats``.

    Measured on a no-op: ``inside`` is the timed interval minus the bare call, ``outside`` the rest
    of the wrapper. In a run the cache is colder, so this under-corrects rather than over-corrects.
    """

    def noop() -> None:
        return None

    timers = Timers()
    timed = timers.wrap("env", noop)
    inside, outside = float("inf"), float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            noop()
        bare = (time.perf_counter() - start) / calls
        timers.reset()
        start = time.perf_counter()
        for _ in range(calls):
            timed()
        wrapped = (time.perf_counter() - start) / calls
        interval = timers.seconds["env"] / calls
        inside, outside = min(inside, interval - bare), min(outside, wrapped - interval)
    return max(inside, 0.0), max(outside, 0.0)


def split(timers: Timers, elapsed: float, cost: tuple[float, float]) -> dict[str, float]:
    """Shares of the run's time by part, "other" the rest, with the timers' own cost taken out."""
    inside, outside = cost
    calls = sum(timers.calls.values())
    untimed = elapsed - calls * (inside + outside)  # the run's time without the timers
    shares = {part: (timers.seconds[part] - timers.calls[part] * inside) / untimed for part in timers.seconds}
    shares["other"] = 1.0 - sum(shares.values())
    shares["timers"] = calls * (inside + outside) / elapsed
    return shares


def instrument_sb3(model: Any, timers: Timers) -> None:
    model.env.step = timers.wrap("env", model.env.step)
    # collect_rollouts calls policy(obs) -> nn.Module.__call__ -> self.forward: the instance attribute wins.
    model.policy.forward = timers.wrap("forward", model.policy.forward)
    model.policy.predict_values = timers.wrap("forward", model.policy.predict_values)  # V(last obs), timeouts
    model.train = timers.wrap("update", model.train)  # SB3 computes advantages in collect_rollouts (tiny)


def instrument_pgplug(model: Any, timers: Timers) -> None:
    model.env.step = timers.wrap("env", model.env.step)
    if hasattr(model.env, "recv_group"):  # stepped group by group: the env's time is the wait for a group
        model.env.recv_group = timers.wrap("env", model.env.recv_group)
    runner = model.runner  # the policy runner the collector steps with: the instance attributes win
    runner.act = timers.wrap("forward", runner.act)
    runner.values = timers.wrap("forward", runner.values)  # V(last obs) and timeout bootstraps
    buffer = model.rollout_buffer  # the estimator runs in its compute_returns_and_advantage, as SB3's GAE does
    buffer.compute_returns_and_advantage = timers.wrap("update", buffer.compute_returns_and_advantage)
    model.train = timers.wrap("update", model.train)


def step_observer() -> Any:
    """A callback that looks at every step and changes nothing (``--callback``): the per-step callback
    protocol (``update_locals``, ``on_step``) then runs, as it does under an EvalCallback."""
    from stable_baselines3.common.callbacks import BaseCallback

    class StepObserver(BaseCallback):
        def _on_step(self) -> bool:
            return self.locals["dones"] is not None

    return StepObserver()


def run_one(
    side: str,
    env_id: str,
    steps: int,
    seed: int,
    threads: int,
    callback: bool = False,
    precision: str = "fp32",
    vec_env: str = "dummy",
) -> dict[str, Any]:
    """One timed run in this process: build, warm up, time ``learn(steps)``.

    :param threads: torch threads; 0 is each side's default: torch's for SB3, the count ``pgplug train`` chooses
        for pgplug
    :param precision: pgplug's ``precision`` (``benchmarks/precision.py`` compares them)
    :param vec_env: pgplug's env pipeline (``dummy``; ``ale`` for Atari ids)
    """
    config = CONFIGS[env_id]
    env = make_env(env_id, config["n_envs"], config["atari"], seed, side, vec_env)
    kwargs: dict[str, Any] = dict(config["kwargs"])
    if config["atari"]:
        from stable_baselines3.common.sb2_compat.rmsprop_tf_like import RMSpropTFLike

        kwargs["policy_kwargs"] = {"optimizer_class": RMSpropTFLike, "optimizer_kwargs": {"eps": 1e-5}}
    if side == "sb3":
        from stable_baselines3 import A2C
    else:
        from pgplug import A2C  # type: ignore[attr-defined]

        kwargs["precision"] = precision
    model = A2C(config["policy"], env, seed=seed, device="cpu", **kwargs)
    threads = apply_threads(threads) if side == "sb3" or threads else pgplug_default_threads(model.policy)
    cost = timer_cost()
    timers = Timers()
    (instrument_sb3 if side == "sb3" else instrument_pgplug)(model, timers)
    n_steps = model.n_steps * config["n_envs"]
    model.learn(WARMUP_UPDATES * n_steps)
    timers.reset()
    start, start_cpu = time.perf_counter(), time.process_time()
    model.learn(steps, callback=step_observer() if callback else None, reset_num_timesteps=False)
    elapsed, elapsed_cpu = time.perf_counter() - start, time.process_time() - start_cpu
    env.close()
    return {
        "side": side,
        "steps_per_s": steps / elapsed,
        "steps_per_cpu_s": steps / elapsed_cpu,
        "shares": split(timers, elapsed, cost),
        "threads": threads,
    }


def run_subprocess(
    side: str,
    env_id: str,
    steps: int,
    seed: int,
    threads: int,
    callback: bool = False,
    precision: str = "fp32",
    vec_env: str = "dummy",
) -> dict[str, Any]:
    command = [sys.executable, __file__, "--_run", side, "--env", env_id, "--steps", str(steps), "--seed", str(seed)]
    if callback:
        command.append("--callback")
    command += ["--threads", str(threads), "--precision", precision, "--vec-env", vec_env]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"the {side} run failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def describe(label: str, result: dict[str, Any]) -> str:
    return (
        f"{label} {result['steps_per_s']:6.0f} ({result['steps_per_cpu_s']:6.0f} per CPU s, "
        f"other {100 * result['shares']['other']:4.1f}%)"
    )


def benchmark(
    env_id: str,
    pairs: int,
    steps: int,
    seed: int,
    callback: bool = False,
    precision: str = "fp32",
    vec_env: str = "dummy",
) -> None:
    """``pairs`` rounds of SB3 at each of ``SB3_THREADS`` and pgplug at its defaults, in rotating order."""
    setups = [("sb3", threads) for threads in SB3_THREADS] + [("pgplug", 0)]
    sb3: dict[int, list[dict[str, Any]]] = {threads: [] for threads in SB3_THREADS}
    pgplug: list[dict[str, Any]] = []
    for round_index in range(pairs):
        for side, threads in rotation(setups, round_index):
            result = run_subprocess(side, env_id, steps, seed, threads, callback, precision, vec_env)
            (sb3[threads] if side == "sb3" else pgplug).append(result)
        line = "  ".join(describe(f"sb3 {thread_label(t)} ({sb3[t][-1]['threads']})", sb3[t][-1]) for t in sb3)
        print(f"  round {round_index + 1}: {line}  {describe('pgplug', pgplug[-1])} steps/s", flush=True)
    best = best_sb3(sb3)
    print(
        f"{env_id}: medians of {pairs} rounds, {steps} timed steps per run"
        + (", a no-op per-step callback" if callback else "")
        + f"; pgplug {precision}, {vec_env} envs"
        + f"; SB3 at its best: {thread_label(best)}"
    )
    sides = [(f"sb3 {thread_label(t)}", runs) for t, runs in sb3.items()] + [("pgplug", pgplug)]
    for label, runs in sides:
        shares = {part: statistics.median(r["shares"][part] for r in runs) for part in runs[0]["shares"]}
        parts = "  ".join(f"{part} {100 * share:4.1f}%" for part, share in shares.items() if part != "timers")
        timed = f"timers {100 * shares['timers']:.1f}%, taken out"
        wall = statistics.median(r["steps_per_s"] for r in runs)
        cpu = statistics.median(r["steps_per_cpu_s"] for r in runs)
        print(
            f"  {label:20s} {runs[0]['threads']} thr {wall:8.0f} steps/s  {cpu:8.0f} steps/CPU-s   "
            f"time: [{parts}]  ({timed})"
        )
    for unit, label in (("steps_per_s", "wall"), ("steps_per_cpu_s", "CPU")):
        for threads in SB3_THREADS:
            values = ratios(pgplug, sb3[threads], unit)
            best_mark = " <- SB3 at its best" if threads == best else ""
            print(
                f"  ratio pgplug/sb3 {thread_label(threads):15s} ({label:4s} time): {statistics.median(values):.2f}"
                f"  (rounds: {', '.join(f'{v:.2f}' for v in values)}){best_mark}"
            )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", choices=sorted(CONFIGS), action="append", help="env id (repeatable; default: all)")
    parser.add_argument("--pairs", type=int, default=3, help="rounds of SB3 (1 thread, default) and pgplug (default 3)")
    parser.add_argument("--steps", type=int, help="timed env steps per run (default: per env)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)  # an SB3 run's threads
    parser.add_argument(
        "--callback", action="store_true", help="time learn() with a no-op per-step callback on both sides"
    )
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32", help="pgplug's precision (default fp32)")
    parser.add_argument("--vec-env", choices=("dummy", "ale"), default="dummy", help="pgplug's envs (default dummy)")
    parser.add_argument("--_run", choices=("sb3", "pgplug"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    env_ids = args.env or list(CONFIGS)
    if args._run:
        steps = args.steps or CONFIGS[env_ids[0]]["steps"]
        run = run_one(
            args._run, env_ids[0], steps, args.seed, args.threads, args.callback, args.precision, args.vec_env
        )
        print(json.dumps(run))
        return
    for env_id in env_ids:
        steps = args.steps or CONFIGS[env_id]["steps"]
        benchmark(env_id, args.pairs, steps, args.seed, args.callback, args.precision, args.vec_env)


if __name__ == "__main__":
    main()
