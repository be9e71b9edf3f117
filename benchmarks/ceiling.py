"""The 2-core ceiling: what env, forward passes and update cost per agent step, and each learner's share of it.

An on-policy learner does three kinds of work per agent step: stepping the env, the rollout's forward passes and
its share of the update (estimator, loss, backward, optimizer step). Their costs, in core-milliseconds per agent
step, are read off a single-threaded pgplug A2C run (``throughput.py``'s timers around ``VecEnv.step``, the
runner's forward passes and the update; one thread, so wall time is core time), and imply a ceiling no learner
can pass on this machine without making one of them cheaper:

    ceiling (steps/s) = cores × 1000 / (env + forward + update)   [core-ms per agent step]

It assumes all three spread perfectly over the cores with nothing else (no bookkeeping, no waiting). Each round
also runs SB3's A2C at one torch thread and at torch's default, pgplug's A2C at its defaults and A3C (2 workers),
in rotating order, and prints each one's steps/s as a share of the ceiling measured in the same round.

    python benchmarks/ceiling.py --env PongNoFrameskip-v4 --rounds 3
    python benchmarks/ceiling.py --env CartPole-v1 --rounds 5
    python benchmarks/ceiling.py --env PongNoFrameskip-v4 --precision bf16   # pgplug's runs in bf16
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from typing import Any

import a3c_throughput
import throughput
from sb3_best import SB3_THREADS, best_sb3, rotation, thread_label

from pgplug.validation import PRECISIONS

#: env id -> the A3C setup of a3c_throughput.py run beside the A2C ones (2 workers, the same envs in all)
A3C_SETUPS = {"PongNoFrameskip-v4": "a3c-pong-2x8", "CartPole-v1": "a3c-cartpole-2x4"}
PARTS = ("env", "forward", "update")


def costs(result: dict[str, Any]) -> dict[str, float]:
    """Core-ms per agent step of each part, from a single-threaded instrumented run's shares and rate."""
    ms_per_step = 1000.0 / result["steps_per_s"]
    return {part: result["shares"][part] * ms_per_step for part in PARTS}


def ceiling(parts: dict[str, float], cores: int) -> float:
    """Steps/s when the parts' core time spreads perfectly over ``cores``."""
    return cores * 1000.0 / sum(parts.values())


def run(
    setup: tuple[str, int], env_id: str, steps: int, a3c_steps: int, seed: int, precision: str = "fp32"
) -> dict[str, Any]:
    """One fresh-subprocess run: an A2C side of throughput.py, or the A3C setup of a3c_throughput.py; pgplug's
    runs (the instrumented one too, so the ceiling is that of the work pgplug does) in ``precision``."""
    side, threads = setup
    if side == "a3c":
        result = a3c_throughput.run_subprocess(A3C_SETUPS[env_id], a3c_steps, seed, 0, precision)
        return {"steps_per_s": result["steady"], "threads": result["threads"]}
    return throughput.run_subprocess(side, env_id, steps, seed, threads, precision=precision)


def label(setup: tuple[str, int]) -> str:
    side, threads = setup
    if side == "sb3":
        return f"SB3 A2C, {thread_label(threads)}"
    if side == "a3c":
        return "pgplug A3C, 2 workers, defaults"
    return "pgplug A2C, 1 thread (costs)" if threads == 1 else "pgplug A2C, defaults"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", choices=sorted(A3C_SETUPS), default="PongNoFrameskip-v4")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of all runs, rotating order (default 3)")
    parser.add_argument("--steps", type=int, help="timed steps of an A2C run (default: throughput.py's)")
    parser.add_argument("--a3c-steps", type=int, help="steps of the A3C run (default: a3c_throughput.py's)")
    parser.add_argument("--cores", type=int, default=len(os.sched_getaffinity(0)), help="cores of the ceiling")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32", help="pgplug's precision (default fp32)")
    args = parser.parse_args(argv)
    steps = args.steps or throughput.CONFIGS[args.env]["steps"]
    a3c_steps = args.a3c_steps or a3c_throughput.DEFAULT_STEPS[args.env]
    setups = [("pgplug", 1), *(("sb3", t) for t in SB3_THREADS), ("pgplug", 0), ("a3c", 0)]
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {setup: [] for setup in setups}
    ceilings: list[float] = []
    for round_index in range(args.rounds):
        for setup in rotation(setups, round_index):
            runs[setup].append(run(setup, args.env, steps, a3c_steps, args.seed + round_index, args.precision))
        parts = costs(runs[("pgplug", 1)][-1])
        ceilings.append(ceiling(parts, args.cores))
        shares = "  ".join(f"{label(s)} {runs[s][-1]['steps_per_s'] / ceilings[-1]:.0%}" for s in setups)
        print(f"round {round_index + 1}: ceiling {ceilings[-1]:.0f} steps/s;  {shares}", flush=True)

    parts = {p: statistics.median(costs(r)[p] for r in runs[("pgplug", 1)]) for p in PARTS}
    total = sum(parts.values())
    print(f"\n{args.env}: medians of {args.rounds} rounds (load average now {os.getloadavg()[0]:.1f})")
    print(f"cost per agent step, core-ms (pgplug A2C, one thread, {args.precision}):")
    for part in PARTS:
        print(f"  {part:8s} {parts[part]:7.3f}  ({parts[part] / total:5.1%})")
    print(f"  {'total':8s} {total:7.3f}")
    print(
        f"ceiling on {args.cores} cores: {statistics.median(ceilings):.0f} steps/s (per round: "
        f"{', '.join(f'{c:.0f}' for c in ceilings)})"
    )
    best = best_sb3({t: runs[("sb3", t)] for t in SB3_THREADS})
    print(f"{'learner':34s} {'threads':>7s} {'steps/s':>8s} {'share of ceiling':>17s}   per round")
    for setup in setups:
        rates = [r["steps_per_s"] for r in runs[setup]]
        per_round = [rate / c for rate, c in zip(rates, ceilings, strict=True)]
        mark = "  <- SB3 at its best" if setup == ("sb3", best) else ""
        print(
            f"{label(setup):34s} {runs[setup][0]['threads']:>7} {statistics.median(rates):8.0f} "
            f"{statistics.median(per_round):17.0%}   {', '.join(f'{x:.0%}' for x in per_round)}{mark}"
        )


if __name__ == "__main__":
    sys.exit(main())
