"""Pure policy gradient vs behavioural-cloning warm start: A2C learning curves on CartPole-v1.

For each seed, A2C runs with the hyperparameters of ``configs/a2c.yml`` (what ``pgplug train``
uses, learning rate 7e-4 included) on the same seeded envs:

- **pure PG**: A2C from random weights;
- **BC k + PG**: first ``pgplug.interop.bc.clone_expert`` on k expert steps (one run per ``--bc-steps``
  value; 10 epochs of the PG loss at Ψ = 1), then the same A2C training: what
  ``pgplug train --bc-warmstart EXPERT --bc-steps k`` does.

Each model is evaluated (``--eval-episodes`` deterministic episodes, the same seeded env for all)
after 0, 2k, 5k, 10k and 20k A2C steps; the table shows the mean over seeds (± the spread across
seeds). The steps count RL training only: the warm-started runs also consumed k steps of the
expert. The expert is an SB3 PPO model (``--expert``), by default trained here (20k steps of rl-zoo-like
settings; the tests use an analytic expert instead, ``tests/cartpole_expert.py``, whose behaviour does
not depend on the CPU).

    python benchmarks/bc_warmstart.py --seeds 0 1 2 3 4 --markdown
    python benchmarks/bc_warmstart.py --save-expert runs/expert     # only train the expert, save ppo_cartpole.zip
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch as th
from rich.console import Console
from rich.table import Table

import pgplug
from pgplug.interop import config as cfg
from pgplug.interop.bc import clone_expert
from pgplug.interop.evaluation import evaluate
from pgplug.runtime.envs import EnvSpec

ENV_ID = "CartPole-v1"


def train_expert(folder: Path) -> Path:
    """SB3 PPO on CartPole-v1, 20k steps of rl-zoo-like settings (scored 500 when the docs' table was measured)."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    expert = PPO(
        "MlpPolicy",
        make_vec_env(ENV_ID, n_envs=8, seed=0),
        n_steps=32,
        batch_size=256,
        gae_lambda=0.8,
        gamma=0.98,
        n_epochs=20,
        learning_rate=1e-3,
        seed=0,
        device="cpu",
    )
    expert.learn(20_000)
    expert.save(folder / "ppo_cartpole")
    return folder / "ppo_cartpole.zip"


def a2c_from_config(seed: int):
    """A2C with ``configs/a2c.yml``'s CartPole-v1 entry, as ``pgplug train --algo a2c`` builds it."""
    from pgplug import A2C

    _, hyperparams = cfg.select_entry(cfg.load_config_file(cfg.builtin_config_path("a2c")), ENV_ID, False)
    run_config = cfg.prepare(A2C, hyperparams, "a2c")
    env = EnvSpec(ENV_ID, n_envs=run_config.n_envs, seed=seed).make_vec_env()
    return A2C(env=env, **run_config.algorithm_kwargs, seed=seed, device="cpu")


def learning_curve(expert: object, seed: int, bc_steps: int, args: argparse.Namespace) -> list[float]:
    """Eval returns at each checkpoint of one A2C run, warm-started on ``bc_steps`` expert steps (0: none)."""
    model = a2c_from_config(seed)
    if bc_steps:
        clone_expert(model, expert, n_steps=bc_steps, seed=seed)
    curve, done = [], 0
    for checkpoint in args.checkpoints:
        if checkpoint > done:
            model.learn(checkpoint - done, reset_num_timesteps=done == 0)
            done = checkpoint
        curve.append(evaluate(model, ENV_ID, n_episodes=args.eval_episodes, seed=10_000 + seed).mean)
    model.get_env().close()
    return curve


def cell(values: list[float]) -> str:
    mean = statistics.fmean(values)
    return f"{mean:.0f}" if len(values) == 1 else f"{mean:.0f} ± {statistics.pstdev(values):.0f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--expert", type=Path, help="expert zip (default: train SB3 PPO for 20k steps)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--checkpoints", type=int, nargs="+", default=[0, 2_000, 5_000, 10_000, 20_000])
    parser.add_argument(
        "--bc-steps", type=int, nargs="+", default=[2_000, 10_000], help="expert steps cloned, one run each"
    )
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--markdown", action="store_true", help="also print the table as Markdown")
    parser.add_argument(
        "--save-expert", type=Path, metavar="FOLDER", help="only train the expert into FOLDER/ppo_cartpole.zip"
    )
    args = parser.parse_args(argv)
    th.set_num_threads(1)
    if args.save_expert:
        args.save_expert.mkdir(parents=True, exist_ok=True)
        print(f"saved {train_expert(args.save_expert)}")
        return
    console = Console()
    start = time.monotonic()
    with tempfile.TemporaryDirectory() as folder:
        expert_path = args.expert or train_expert(Path(folder))
        expert = pgplug.load(expert_path, device="cpu")
        expert_score = evaluate(expert, ENV_ID, n_episodes=args.eval_episodes, seed=10_000).mean
        variants = {"pure PG": 0, **{f"BC {k:,} + PG": k for k in args.bc_steps}}
        curves = {
            name: [learning_curve(expert, seed, bc_steps, args) for seed in args.seeds]
            for name, bc_steps in variants.items()
        }
    headers = ["A2C steps", *(f"{c:,}" for c in args.checkpoints)]
    rows = [
        [name, *(cell([c[i] for c in runs]) for i in range(len(args.checkpoints)))] for name, runs in curves.items()
    ]
    title = (
        f"{ENV_ID}: mean eval return over seeds {args.seeds} ({args.eval_episodes} episodes each); "
        f"expert {expert_score:.0f}"
    )
    table = Table(title=title, title_justify="left")
    for header in headers:
        table.add_column(header, justify="right" if header != headers[0] else "left")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    for name, runs in curves.items():
        console.print(f"{name}: " + "; ".join(" ".join(f"{v:.0f}" for v in c) for c in runs), highlight=False)
    console.print(f"wall time {time.monotonic() - start:.0f} s", highlight=False)
    if args.markdown:
        print("\n| " + " | ".join(headers) + " |")
        print("| " + " | ".join(["---"] + ["---:"] * len(args.checkpoints)) + " |")
        for row in rows:
            print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
