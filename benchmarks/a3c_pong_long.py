"""A long A3C run on Pong (not for CI): a fixed frame budget, the learning curve to CSV and tensorboard.

Settings are the zoo's A2C Atari ones (rl-baselines3-zoo hyperparams/a2c.yml: n_steps 5, ent_coef
0.01, vf_coef 0.25, RMSpropTFLike eps 1e-5, lr 7e-4) with the envs spread over the workers
(default 2 × 8 = the zoo's 16). ``PongNoFrameskip-v4`` goes through SB3's Atari wrappers, which
repeat each action for 4 frames, so ``--frames`` F is F / 4 agent steps. The zoo trains 1e7 steps
(4e7 frames); Pong is usually won (mean episode reward > 18) well before.

Written to ``--out``:

- ``episodes.csv``: one row per finished training episode (wall time, counter, worker, reward, length);
- ``progress.csv`` and tensorboard events: SB3's logger (rollout/ep_rew_mean, time/fps, train/*, a3c/*);
- ``evaluations.npz`` (with ``--eval-every``), checkpoints every ``--save-every`` steps, ``final.zip``.
  Ctrl-C stops the workers and saves ``interrupted.zip``.

    python benchmarks/a3c_pong_long.py --frames 40000000 --out runs/a3c_pong
    python benchmarks/a3c_pong_long.py --precision bf16 --hours 2.5 --eval-every 250000 --eval-episodes 5 \
        --stop-at 18 --out runs/a3c_pong_bf16   # issue 16's run: +18 within 2.5 hours on 2 cores
    tensorboard --logdir runs/a3c_pong
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path
from typing import Any

from pgplug.validation import PRECISIONS

ENV_ID = "PongNoFrameskip-v4"
FRAME_SKIP = 4


def make_episode_logger(path: Path) -> Any:
    from stable_baselines3.common.callbacks import BaseCallback

    class EpisodeLog(BaseCallback):
        """Appends each finished episode that a worker reports to a CSV file (flushed as it goes)."""

        def _on_training_start(self) -> None:
            new = not path.exists()
            self.file = path.open("a", newline="")
            self.writer = csv.writer(self.file)
            if new:
                self.writer.writerow(["wall_time", "timesteps", "worker", "reward", "length"])
            self.start = time.time()

        def _on_rollout_end(self) -> None:
            report = self.locals.get("report")
            if not report:
                return
            for episode in report["episodes"]:
                row = [f"{time.time() - self.start:.1f}", self.num_timesteps, self.locals["worker"]]
                self.writer.writerow([*row, episode["r"], episode["l"]])
            self.file.flush()

        def _on_step(self) -> bool:
            return True

        def _on_training_end(self) -> None:
            self.file.close()

    return EpisodeLog()


def make_time_limit(hours: float) -> Any:
    """Ends training (``on_step`` returns False, as SB3's stopping callbacks do) ``hours`` after it began."""
    from stable_baselines3.common.callbacks import BaseCallback

    class TimeLimit(BaseCallback):
        def _on_training_start(self) -> None:
            self.deadline = time.time() + hours * 3600

        def _on_step(self) -> bool:
            if time.time() < self.deadline:
                return True
            print(f"time limit: {hours} h reached at {self.num_timesteps:,} steps")
            return False

    return TimeLimit()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=float, default=40e6, help="frame budget (default 4e7 = 1e7 agent steps)")
    parser.add_argument("--out", type=Path, default=Path("runs/a3c_pong"), help="output folder")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--envs-per-worker", type=int, default=8)
    parser.add_argument("--t-max", type=int, default=5)
    parser.add_argument("--learning-rate", type=float, default=7e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save-every", type=int, default=500_000, help="checkpoint every N agent steps")
    parser.add_argument("--eval-every", type=int, default=0, help="evaluate every N agent steps (0: never)")
    parser.add_argument("--eval-episodes", type=int, default=3)
    parser.add_argument("--log-interval", type=int, default=500, help="logger dump every N updates")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32", help="the workers' precision")
    parser.add_argument("--vec-env", choices=("dummy", "ale"), default="dummy", help="the workers' Atari envs")
    parser.add_argument("--hours", type=float, default=0.0, help="stop after this many hours of training (0: never)")
    parser.add_argument("--stop-at", type=float, help="stop once an evaluation's mean score reaches this")
    args = parser.parse_args(argv)

    import torch as th
    from stable_baselines3.common.callbacks import CheckpointCallback, EvalCallback, StopTrainingOnRewardThreshold
    from stable_baselines3.common.logger import configure
    from stable_baselines3.common.sb2_compat.rmsprop_tf_like import RMSpropTFLike

    from pgplug import A3C  # type: ignore[attr-defined]
    from pgplug.runtime.envs import EnvSpec

    th.set_num_threads(1)  # the main process logs and evaluates; the workers do the training
    args.out.mkdir(parents=True, exist_ok=True)
    steps = int(args.frames) // FRAME_SKIP
    model = A3C(
        "CnnPolicy",
        EnvSpec.for_env_id(ENV_ID, vec_env=args.vec_env),
        n_workers=args.workers,
        n_envs_per_worker=args.envs_per_worker,
        t_max=args.t_max,
        learning_rate=args.learning_rate,
        ent_coef=0.01,
        vf_coef=0.25,
        policy_kwargs={"optimizer_class": RMSpropTFLike, "optimizer_kwargs": {"eps": 1e-5}},
        seed=args.seed,
        precision=args.precision,
        callback_lag=None,  # the workers train on while the main process evaluates (no pause per evaluation)
    )
    model.set_logger(configure(str(args.out), ["stdout", "csv", "tensorboard"]))
    # Callback frequencies count on_step calls: one per worker vec-env step (envs_per_worker agent steps).
    per_call = args.envs_per_worker
    callbacks: list[Any] = [
        make_episode_logger(args.out / "episodes.csv"),
        CheckpointCallback(max(args.save_every // per_call, 1), str(args.out / "checkpoints"), name_prefix="a3c_pong"),
    ]
    if args.hours:
        callbacks.append(make_time_limit(args.hours))
    if args.eval_every:
        eval_env = EnvSpec.for_env_id(ENV_ID)(1, 10_000 + args.seed)
        reached = None if args.stop_at is None else StopTrainingOnRewardThreshold(args.stop_at, verbose=1)
        callbacks.append(
            EvalCallback(
                eval_env,
                eval_freq=max(args.eval_every // per_call, 1),
                n_eval_episodes=args.eval_episodes,
                log_path=str(args.out),
                callback_on_new_best=reached,
            )
        )
    print(
        f"A3C on {ENV_ID}: {args.workers} workers × {args.envs_per_worker} envs, {args.precision}, {args.vec_env} envs,"
        f" {steps:,} steps → {args.out}"
    )
    start = time.time()
    try:
        model.learn(steps, callback=callbacks, log_interval=args.log_interval, progress_bar=True)
    except KeyboardInterrupt:
        model.save(args.out / "interrupted.zip")
        print(f"interrupted at {model.num_timesteps:,} steps; saved {args.out / 'interrupted.zip'}")
        return
    model.save(args.out / "final.zip")
    hours = (time.time() - start) / 3600
    print(f"done: {model.num_timesteps:,} steps in {hours:.2f} h; saved {args.out / 'final.zip'}")


if __name__ == "__main__":
    main()
