"""``precision="bf16"`` against float32: the CNN's passes alone, A2C and A3C on Pong end to end, and learning curves.

Four parts (``--part``; default: micro, a2c and a3c):

- ``micro``: SB3's NatureCNN ``CnnPolicy`` on 4×84×84 frames (Pong's), its body timed as pgplug runs it:
  the rollout's step forward at batch 16 (16 envs) under inference mode, and the update's forward + backward
  at batch 80 (16 envs × 5 steps), in float32, float32 on channels-last images, bfloat16 autocast, and
  bfloat16 on channels-last images (what ``precision="bf16"`` runs); plus float32 keeping the rollout's graph
  (five batch-16 forwards with autograd, one backward: pgplug's float32 A2C on a CNN). At 1 and 2 torch threads,
  medians of ``--repeats`` timings, in one subprocess per thread count.
- ``a2c``: pgplug A2C on PongNoFrameskip-v4 (16 envs, CnnPolicy, frame stack 4, SB3's Atari wrappers, the zoo's
  settings: ``throughput.py``'s runs) in float32 and in bf16, against SB3's A2C at its best (1 thread and
  torch's default, the faster: ``sb3_best.py``), rounds in rotating order, medians and per-round ratios.
- ``a3c``: A3C 2 workers × 8 envs on Pong in float32 and bf16 against the same SB3 runs
  (``a3c_throughput.py``'s runs; the ``steady`` rate).
- ``gradients``: A2C trains on Pong in float32 for ``--steps`` agent steps (16 envs, the zoo's settings); every
  ``--every``-th update, the same rollout's gradient is also taken in bf16 (pgplug's ``Bf16Runner``, the same weights
  and objective). Printed: the cosine between the bf16 and the fp32 gradient and their relative difference, next to
  the same two figures for the fp32 gradients of two successive rollouts (the sampling noise every update already
  carries), medians over the first and the second half of the run. bf16 is harmless where its error is far below
  that noise.
- ``parity``: learning curves. A2C on Pong for ``--frames`` frames (1M = 250k agent steps, frame skip 4) with
  ``precision`` fp32 and bf16 over ``--seeds``, one run at a time; every ``--report-every`` steps the mean
  return of the last 20 training episodes (the Monitor's, unclipped), printed side by side. Each run's
  curve is written to ``--out`` (JSON), so runs may be made separately (``--precisions``, ``--seeds``) and
  printed together (``--part parity --print-only``).

    python benchmarks/precision.py --part micro
    python benchmarks/precision.py --part a2c --pairs 3
    python benchmarks/precision.py --part a3c --pairs 2 --steps 20000
    python benchmarks/precision.py --part gradients --steps 100000
    python benchmarks/precision.py --part parity --seeds 0 1 --frames 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import a3c_throughput
import throughput
from sb3_best import SB3_THREADS, best_sb3, pgplug_default_threads, ratios, rotation, thread_label

from pgplug.validation import PRECISIONS

PONG = "PongNoFrameskip-v4"
MICRO_MODES = ("fp32 graph", "fp32", "fp32 cl", "bf16", "bf16 cl")


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# -- micro ---------------------------------------------------------------------------------------


def micro_run(threads: int, repeats: int) -> dict[str, dict[str, float]]:
    """Milliseconds per step forward (batch 16) and per update forward + backward (batch 80), by mode."""
    import numpy as np
    import torch as th
    from gymnasium import spaces
    from stable_baselines3.common.policies import ActorCriticCnnPolicy

    th.set_num_threads(threads)
    th.manual_seed(0)
    policy = ActorCriticCnnPolicy(spaces.Box(0, 255, (4, 84, 84), np.uint8), spaces.Discrete(6), lambda _: 7e-4)
    frames = th.randint(0, 256, (80, 4, 84, 84), dtype=th.uint8)
    actions = th.randint(0, 6, (80,))

    def body(obs: th.Tensor, bf16: bool, channels_last: bool) -> tuple[th.Tensor, th.Tensor]:
        if channels_last:
            obs = obs.contiguous(memory_format=th.channels_last)
        with th.autocast("cpu", dtype=th.bfloat16, enabled=bf16):
            latent_pi, latent_vf = policy.mlp_extractor(policy.extract_features(obs))
        return latent_pi.float(), latent_vf.float()

    def loss(obs: th.Tensor, acts: th.Tensor, bf16: bool, channels_last: bool) -> th.Tensor:
        latent_pi, latent_vf = body(obs, bf16, channels_last)
        log_pmf = th.log_softmax(policy.action_net(latent_pi), -1)
        return policy.value_net(latent_vf).pow(2).mean() - log_pmf.gather(-1, acts[:, None]).mean()

    def step(bf16: bool, channels_last: bool) -> None:
        with th.inference_mode():
            body(frames[:16], bf16, channels_last)

    def update(bf16: bool, channels_last: bool) -> None:
        policy.zero_grad(set_to_none=True)
        loss(frames, actions, bf16, channels_last).backward()

    def graph_update() -> None:  # five batch-16 forwards kept with their graph (the rollout's), one backward
        policy.zero_grad(set_to_none=True)
        sum(loss(frames[i : i + 16], actions[i : i + 16], False, False) for i in range(0, 80, 16)).backward()

    def timed(fn: Any, *args: Any) -> float:
        for _ in range(5):
            fn(*args)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn(*args)
            times.append(time.perf_counter() - start)
        return 1e3 * statistics.median(times)

    results: dict[str, dict[str, float]] = {}
    for mode in MICRO_MODES:
        bf16, channels_last = mode.startswith("bf16"), mode.endswith("cl")
        if mode == "fp32 graph":
            results[mode] = {"step": 0.0, "update": timed(graph_update)}  # the steps' forwards are in the update
        else:
            results[mode] = {
                "step": timed(step, bf16, channels_last),
                "update": timed(update, bf16, channels_last),
            }
        results[mode]["per_rollout"] = 5 * results[mode]["step"] + results[mode]["update"]
    return results


def micro(repeats: int) -> None:
    print(f"NatureCNN CnnPolicy, 4x84x84 frames, 6 actions; medians of {repeats}; load average {load_average()}")
    print("  ms per rollout = 5 step forwards (batch 16, inference) + the update's forward + backward (batch 80)")
    for threads in (1, 2):
        command = [sys.executable, __file__, "--_micro", str(threads), "--repeats", str(repeats)]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        results = json.loads(done.stdout.strip().splitlines()[-1])
        base = results["fp32 graph"]["per_rollout"]
        for mode, r in results.items():
            step = "  (in the update)" if mode == "fp32 graph" else f"{r['step']:6.2f}"
            print(
                f"  {threads} thread{'s' if threads > 1 else ' '} {mode:10s} step16 {step:>6} ms  update80 "
                f"{r['update']:6.2f} ms  per rollout {r['per_rollout']:6.2f} ms  ({base / r['per_rollout']:.2f}x)"
            )


# -- end to end ----------------------------------------------------------------------------------


def a2c(pairs: int, steps: int, seed: int) -> None:
    """Rounds of SB3 at 1 thread and at torch's default, pgplug fp32 and pgplug bf16, in rotating order."""
    setups: list[tuple[str, int, str]] = [("sb3", t, "fp32") for t in SB3_THREADS]
    setups += [("pgplug", 0, "fp32"), ("pgplug", 0, "bf16")]
    sb3: dict[int, list[dict[str, Any]]] = {t: [] for t in SB3_THREADS}
    ours: dict[str, list[dict[str, Any]]] = {"fp32": [], "bf16": []}
    print(f"A2C on {PONG}, 16 envs, {steps} timed steps per run; load average {load_average()}")
    for round_index in range(pairs):
        for side, threads, precision in rotation(setups, round_index):
            result = throughput.run_subprocess(side, PONG, steps, seed, threads, precision=precision)
            (sb3[threads] if side == "sb3" else ours[precision]).append(result)
        line = "  ".join(f"sb3 {thread_label(t)} {sb3[t][-1]['steps_per_s']:.0f}" for t in SB3_THREADS)
        line += "  " + "  ".join(f"pgplug {p} {ours[p][-1]['steps_per_s']:.0f}" for p in ours)
        print(f"  round {round_index + 1}: {line} steps/s  (load {load_average()})", flush=True)
    report({f"sb3 {thread_label(t)}": runs for t, runs in sb3.items()}, ours, sb3, "steps_per_s", "steps_per_cpu_s")


def a3c(pairs: int, steps: int, seed: int) -> None:
    """Rounds of SB3 A2C (16 envs) at 1 thread and torch's default, A3C 2×8 fp32 and bf16, in rotating order."""
    setups: list[tuple[str, int, str]] = [("sb3-pong-16", t, "fp32") for t in SB3_THREADS]
    setups += [("a3c-pong-2x8", 0, "fp32"), ("a3c-pong-2x8", 0, "bf16")]
    sb3: dict[int, list[dict[str, Any]]] = {t: [] for t in SB3_THREADS}
    ours: dict[str, list[dict[str, Any]]] = {"fp32": [], "bf16": []}
    print(f"A3C 2 workers x 8 envs on {PONG}, {steps} steps per run (steady rate); load average {load_average()}")
    for round_index in range(pairs):
        for name, threads, precision in rotation(setups, round_index):
            result = a3c_throughput.run_subprocess(name, steps, seed, threads, precision)
            (sb3[threads] if name.startswith("sb3") else ours[precision]).append(result)
        line = "  ".join(f"sb3 {thread_label(t)} {sb3[t][-1]['steady']:.0f}" for t in SB3_THREADS)
        line += "  " + "  ".join(f"a3c {p} {ours[p][-1]['steady']:.0f}" for p in ours)
        print(f"  round {round_index + 1}: {line} steps/s  (load {load_average()})", flush=True)
    report({f"sb3 {thread_label(t)}": runs for t, runs in sb3.items()}, ours, sb3, "steady", "per_cpu_s")


def report(
    theirs: dict[str, list[dict[str, Any]]],
    ours: dict[str, list[dict[str, Any]]],
    sb3: dict[int, list[dict[str, Any]]],
    key: str,
    cpu_key: str,
) -> None:
    """Medians of each setting, and pgplug's per-round ratios over SB3 at its best and bf16's over fp32."""
    best = best_sb3(sb3, key)
    for label, runs in [*theirs.items(), *((f"pgplug {p}", runs) for p, runs in ours.items())]:
        wall, cpu = statistics.median(r[key] for r in runs), statistics.median(r[cpu_key] for r in runs)
        print(f"  {label:22s} {wall:7.0f} steps/s  {cpu:7.0f} steps/CPU-s")
    for precision, runs in ours.items():
        values = ratios(runs, sb3[best], key)
        print(
            f"  ratio pgplug {precision}/sb3 at its best ({thread_label(best)}): {statistics.median(values):.2f}"
            f"  (rounds: {', '.join(f'{v:.2f}' for v in values)})"
        )
    values = ratios(ours["bf16"], ours["fp32"], key)
    print(f"  ratio bf16/fp32: {statistics.median(values):.2f}  (rounds: {', '.join(f'{v:.2f}' for v in values)})")


# -- gradient agreement ---------------------------------------------------------------------------


def zoo_pong_a2c(seed: int, precision: str) -> tuple[Any, Any]:
    """pgplug's A2C on Pong, 16 envs, with the zoo's settings, on the threads ``pgplug train`` would choose."""
    from stable_baselines3.common.sb2_compat.rmsprop_tf_like import RMSpropTFLike

    from pgplug import A2C  # type: ignore[attr-defined]
    from pgplug.runtime.envs import EnvSpec

    env = EnvSpec.for_env_id(PONG, n_envs=16, seed=seed).make_vec_env()
    model = A2C(
        "CnnPolicy",
        env,
        ent_coef=0.01,
        vf_coef=0.25,
        policy_kwargs={"optimizer_class": RMSpropTFLike, "optimizer_kwargs": {"eps": 1e-5}},
        seed=seed,
        device="cpu",
        precision=precision,
    )
    pgplug_default_threads(model.policy)
    return env, model


def cosine(a: Any, b: Any) -> float:
    import torch as th

    return float(th.nn.functional.cosine_similarity(a, b, dim=0))


def gradients_run(steps: int, every: int, seed: int) -> list[dict[str, float]]:
    """The fp32 run, with the bf16 gradient of every ``every``-th update's rollout beside its fp32 one."""
    import torch as th

    from pgplug.runtime.fast_runners import Bf16Runner, FastRunner
    from pgplug.runtime.gradient import compute_gradients

    env, model = zoo_pong_a2c(seed, "fp32")
    params = list(model.policy.parameters())
    fp32, bf16 = FastRunner(model.policy), Bf16Runner(model.policy)
    samples: list[dict[str, float]] = []
    previous: list[Any] = []  # the last update's fp32 gradient
    update = model.update

    def gradient(runner: Any, rollout: Any) -> Any:
        compute_gradients(runner, model.objective_for_update(), rollout, params, None)
        return th.cat([p.grad.flatten() for p in params])

    def compared_update(rollout: Any) -> Any:
        if model._n_updates % every == 0 or (previous and model._n_updates % every == 1):
            g32 = gradient(fp32, rollout)
            if previous and model._n_updates % every == 1:
                # two rollouts, nearly the same weights: the sampling noise
                samples[-1]["noise_cos"] = cosine(previous[0], g32)
                samples[-1]["noise_rel_diff"] = float((previous[0] - g32).norm() / g32.norm())
            if model._n_updates % every == 0:
                g16 = gradient(bf16, rollout)
                difference = float((g16 - g32).norm() / g32.norm())
                samples.append(
                    {
                        "steps": model.num_timesteps,
                        "bf16_cos": cosine(g16, g32),
                        "rel_diff": difference,
                        "norm_ratio": float(g16.norm() / g32.norm()),
                    }
                )
                previous[:] = [g32]
        return update(rollout)

    model.update = compared_update  # type: ignore[method-assign]
    model.learn(steps)
    env.close()
    return samples


def gradients(steps: int, every: int, seed: int) -> None:
    print(f"A2C on {PONG} in float32, {steps} steps; one update in {every}: its rollout also differentiated in bf16")
    command = [sys.executable, __file__, "--_gradients", "--steps", str(steps), "--every", str(every)]
    done = subprocess.run([*command, "--seed", str(seed)], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"the gradients run failed:\n{done.stderr}")
    samples = [s for s in json.loads(done.stdout.strip().splitlines()[-1]) if "noise_cos" in s]
    halves = (samples[: len(samples) // 2], samples[len(samples) // 2 :])
    for name, part in zip(("first half", "second half"), halves):
        if not part:
            continue
        keys = ("bf16_cos", "rel_diff", "norm_ratio", "noise_cos", "noise_rel_diff")
        median = {key: statistics.median(s[key] for s in part) for key in keys}
        print(
            f"  {name:11s} (steps {part[0]['steps']}-{part[-1]['steps']}, {len(part)} updates, medians):\n"
            f"    bf16 vs fp32, the same rollout:  cos {median['bf16_cos']:.4f}  |difference| / |fp32| "
            f"{median['rel_diff']:.3f}  |bf16| / |fp32| {median['norm_ratio']:.3f}\n"
            f"    fp32, two successive rollouts:   cos {median['noise_cos']:.4f}  |difference| / |fp32| "
            f"{median['noise_rel_diff']:.3f}"
        )


# -- learning-curve parity -----------------------------------------------------------------------


def parity_run(precision: str, seed: int, frames: int, report_every: int) -> dict[str, Any]:
    """One A2C run on Pong with the zoo's settings; the curve of mean training-episode returns."""
    from stable_baselines3.common.callbacks import BaseCallback

    env, model = zoo_pong_a2c(seed, precision)
    curve: list[dict[str, float]] = []
    start = time.perf_counter()

    class Curve(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps >= len(curve) * report_every or self.num_timesteps >= frames // 4:
                returns = [info["r"] for info in list(model.ep_info_buffer)[-20:]]
                curve.append(
                    {
                        "steps": self.num_timesteps,
                        "seconds": time.perf_counter() - start,
                        "return": statistics.mean(returns) if returns else float("nan"),
                        "episodes": len(model.ep_info_buffer),
                    }
                )
            return True

    model.learn(frames // 4, callback=Curve())
    env.close()
    seconds = time.perf_counter() - start
    return {"precision": precision, "seed": seed, "frames": frames, "curve": curve, "seconds": seconds}


def parity(precisions: list[str], seeds: list[int], frames: int, report_every: int, out: Path, run: bool) -> None:
    results = json.loads(out.read_text()) if out.exists() else {}
    for seed in seeds if run else []:
        for precision in precisions:
            print(f"training {precision} seed {seed}: {frames} frames (load average {load_average()})", flush=True)
            command = [sys.executable, __file__, "--_parity", precision, "--seeds", str(seed)]
            command += ["--frames", str(frames), "--report-every", str(report_every)]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                sys.exit(f"the {precision} seed {seed} run failed:\n{done.stderr}")
            results[f"{precision} seed {seed}"] = json.loads(done.stdout.strip().splitlines()[-1])
            out.write_text(json.dumps(results, indent=1))
    if not results:
        return
    labels = sorted(results)
    print("A2C on Pong: mean return of the last 20 training episodes, by agent step (frames = 4 x steps)")
    print(f"  {'steps':>8s}  " + "  ".join(f"{label:>13s}" for label in labels))
    rows = max(len(r["curve"]) for r in results.values())
    for i in range(rows):
        cells = []
        for label in labels:
            curve = results[label]["curve"]
            cells.append(f"{curve[i]['return']:13.1f}" if i < len(curve) else " " * 13)
        steps = next(r["curve"][i]["steps"] for r in results.values() if i < len(r["curve"]))
        print(f"  {steps:8d}  " + "  ".join(cells))
    print("  minutes " + "  ".join(f"{results[label]['seconds'] / 60:13.1f}" for label in labels))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--part", nargs="+", choices=("micro", "a2c", "a3c", "gradients", "parity"), default=["micro", "a2c", "a3c"]
    )
    parser.add_argument("--pairs", type=int, default=3, help="rounds of the end-to-end comparisons (default 3)")
    parser.add_argument("--steps", type=int, help="timed steps per end-to-end run (default: 4000 A2C, 20000 A3C)")
    parser.add_argument("--repeats", type=int, default=30, help="timings per micro-benchmark figure (default 30)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="parity: seeds (default 0 1)")
    parser.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS))
    parser.add_argument("--frames", type=int, default=1_000_000, help="parity: frames per run (default 1M)")
    parser.add_argument("--report-every", type=int, default=25_000, help="parity: agent steps between curve points")
    parser.add_argument("--out", type=Path, default=Path("precision_parity.json"), help="parity: the curves' file")
    parser.add_argument("--print-only", action="store_true", help="parity: print the curves in --out, train nothing")
    parser.add_argument("--_micro", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--every", type=int, default=10, help="gradients: compare every N-th update (default 10)")
    parser.add_argument("--_parity", choices=PRECISIONS, help=argparse.SUPPRESS)
    parser.add_argument("--_gradients", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._micro:
        print(json.dumps(micro_run(args._micro, args.repeats)))
        return
    if args._gradients:
        print(json.dumps(gradients_run(args.steps or 100_000, args.every, args.seed)))
        return
    if args._parity:
        print(json.dumps(parity_run(args._parity, args.seeds[0], args.frames, args.report_every)))
        return
    if "micro" in args.part:
        micro(args.repeats)
    if "a2c" in args.part:
        a2c(args.pairs, args.steps or 4_000, args.seed)
    if "a3c" in args.part:
        a3c(args.pairs, args.steps or 20_000, args.seed)
    if "gradients" in args.part:
        gradients(args.steps or 100_000, args.every, args.seed)
    if "parity" in args.part:
        parity(args.precisions, args.seeds, args.frames, args.report_every, args.out, run=not args.print_only)


if __name__ == "__main__":
    main()
