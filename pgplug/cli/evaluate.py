"""``pgplug eval`` (alias ``enjoy``, as in rl-baselines3-zoo): play a saved model and report its episode returns.

Any zip :func:`pgplug.load` opens works: pgplug's REINFORCE/A2C/A3C, SB3's A2C and PPO, RecurrentPPO,
gym-era files. The env is built as pgplug trains (SB3's Atari pipeline for Atari ids), with what the
model's run folder says: ``config.yml`` and ``vecnormalize.pkl`` next to the zip (pgplug's layout) or
in ``<run>/<env>/`` (the zoo's, whose ``args.yml`` also names the env). Without a recorded frame
stack, it is read off the model's observation space.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import Any

import gymnasium as gym
from rich.console import Console
from rich.table import Table

from pgplug.cli.models import describe_space, open_model
from pgplug.cli.options import (
    RUN_FLAGS,
    add_progress_argument,
    add_run_arguments,
    add_trust_argument,
    check_output_folders,
    device,
    positive_int,
    seed,
)
from pgplug.cli.output import results_table
from pgplug.cli.run_folder import VECNORMALIZE_FILE, RunFiles, find_model, find_run, find_run_files
from pgplug.cli.threads import add_num_threads_argument, set_num_threads
from pgplug.errors import PgplugError
from pgplug.interop import compat
from pgplug.interop import config as cfg
from pgplug.runtime.envs import EnvSpec, check_atari_rom, check_env_id, check_env_kwargs, is_atari

HELP = (
    "evaluate a saved model (any SB3/pgplug on-policy zip): episode returns, mean ± std, Atari human-normalised score"
)
ALIASES = ("enjoy",)


def add_arguments(parser: argparse.ArgumentParser, host) -> None:
    parser.add_argument(
        "model", metavar="MODEL.zip", nargs="?", help="the saved model (or find a run's with --algo, --env, -f)"
    )
    parser.add_argument("--env", help="gymnasium env id (default: the one recorded in the model's run folder)")
    add_run_arguments(parser)
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--episodes", type=positive_int("episodes"), help="episodes to play (default: 10)")
    length.add_argument(
        "-n",
        "--n-timesteps",
        type=positive_int("n_timesteps"),
        help="play this many steps instead, as the zoo's enjoy, and report the episodes that ended in them",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--deterministic",
        dest="deterministic",
        action="store_true",
        default=None,
        help="play the most likely action (the default, except on Atari)",
    )
    mode.add_argument(
        "--stochastic", dest="deterministic", action="store_false", help="sample actions (the default on Atari)"
    )
    parser.add_argument(
        "--vecnormalize", metavar="PATH", help="VecNormalize statistics (default: vecnormalize.pkl of the run folder)"
    )
    parser.add_argument("--video-folder", metavar="DIR", help="record the first --video-length steps to an mp4 here")
    parser.add_argument(
        "--video-length", type=positive_int("video_length"), default=1000, help="steps to record (default: 1000)"
    )
    parser.add_argument(
        "--algo",
        help="the algorithm whose run to find with -f, or that saved the zip when the file does not say: "
        f"{', '.join(compat.algorithm_names())}",
    )
    parser.add_argument("--seed", type=seed, default=0, help="seed of the evaluation env (default: 0)")
    parser.add_argument(
        "--env-kwargs",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="gymnasium.make arguments (YAML values), e.g. max_episode_steps=1000",
    )
    add_trust_argument(parser)
    add_progress_argument(parser, "accepted, as on rl_zoo3's enjoy command lines (eval prints its table when done)")
    parser.add_argument("--device", type=device, default="auto", help="torch device (default: auto)")
    add_num_threads_argument(parser)


def infer_frame_stack(model_space: gym.Space, single_space: gym.Space) -> int | None:
    """How many frames the model stacks: the ratio of its observation shape to one frame's along one axis."""
    if not (isinstance(model_space, gym.spaces.Box) and isinstance(single_space, gym.spaces.Box)):
        return None
    stacked, single = model_space.shape, single_space.shape
    if len(stacked) != len(single):
        return None
    axes = [i for i in range(len(single)) if stacked[i] != single[i]]
    if len(axes) != 1 or single[axes[0]] == 0 or stacked[axes[0]] % single[axes[0]]:
        return None
    return stacked[axes[0]] // single[axes[0]]


def same_shape_note(expected: gym.Space, given: gym.Space) -> str:
    return " with other bounds" if describe_space(expected) == describe_space(given) else ""


def build_eval_env(
    spec: EnvSpec, model: Any, stats: Path | None, stack_recorded: bool, trust: bool = False
) -> tuple[Any, EnvSpec, str]:
    """The evaluation ``VecEnv``, with the frame stack read off the model when no config records it."""
    statistics = compat.saved_statistics(stats, trust)
    env = spec.make_vec_env(saved_statistics=statistics, training=False)
    how = "from config.yml" if stack_recorded else "default"
    if model.observation_space != env.observation_space and not stack_recorded:
        env.close()
        single = replace(spec, frame_stack=None).make_vec_env(saved_statistics=statistics, training=False)
        frames = infer_frame_stack(model.observation_space, single.observation_space)
        single.close()
        spec = replace(spec, frame_stack=frames)
        env = spec.make_vec_env(saved_statistics=statistics, training=False)
        how = "from the model's observation space"
    for kind in ("observation", "action"):
        expected, given = getattr(model, f"{kind}_space"), getattr(env, f"{kind}_space")
        if expected != given:
            env.close()
            stack = f" (frame stack {spec.frame_stack})" if kind == "observation" and spec.frame_stack else ""
            raise PgplugError(
                f"the model expects {kind}s {describe_space(expected)}, but {spec.env_id}{stack} gives "
                f"{describe_space(given)}{same_shape_note(expected, given)}: is --env right?"
            )
    return env, spec, how


# -- the command ---------------------------------------------------------------------------------


def episodes_table(title: str, returns: list[float], lengths: list[int]) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("episode", justify="right")
    table.add_column("return", justify="right")
    table.add_column("length", justify="right")
    for i, (ret, length) in enumerate(zip(returns, lengths, strict=True), start=1):
        table.add_row(str(i), f"{ret:.2f}", str(length))
    return table


def resolve_env_id(args: argparse.Namespace, files: RunFiles, model_path: Path) -> str:
    if args.env:
        return args.env
    if files.env_id:
        module = files.env_id.rpartition(":")[0]
        if module and not args.trust_file:
            raise PgplugError(
                f"the run folder of {model_path} records env {files.env_id!r}, which would import module {module!r}; "
                "pgplug imports no module a file names unless you pass --trust-file (or name the env with --env)"
            )
        return files.env_id
    if model_path.stem in gym.registry:
        return model_path.stem
    raise PgplugError(f"no --env given and none recorded with {model_path} (config.yml or args.yml); pass --env ID")


def model_to_play(args: argparse.Namespace) -> Path:
    """``MODEL.zip``, or the model of the run ``--algo``, ``--env``, ``-f``, ``--exp-id`` and ``--load-*`` name
    (rl_zoo3's ``enjoy`` rules: the latest run by default, its ``<env>.zip`` unless a ``--load-*`` flag says)."""
    given = [flag for dest, flag in RUN_FLAGS.items() if getattr(args, dest) not in (None, False)]
    if args.model is not None:
        if given:
            raise PgplugError(f"{given[0]} finds a run's model; it cannot be combined with MODEL.zip ({args.model})")
        return compat.resolve_path(args.model)
    if not (args.algo and args.env):
        raise PgplugError(
            "give MODEL.zip, or --algo and --env to play a run of -f/--folder (default: logs), as the zoo's enjoy"
        )
    run_dir = find_run(Path(args.folder or "logs"), args.algo, args.env, args.exp_id or 0)
    return find_model(run_dir, args.env, args.load_best, args.load_checkpoint, args.load_last_checkpoint)


def run(args: argparse.Namespace) -> int:
    from pgplug.cli.progress import EvaluationProgress
    from pgplug.interop.evaluation import evaluate

    console = Console()
    model_path = model_to_play(args)
    files = find_run_files(model_path)
    env_id = check_env_id(resolve_env_id(args, files, model_path))
    atari = is_atari(env_id)
    if atari:
        check_atari_rom(env_id)
    stats = files.vecnormalize
    if args.vecnormalize is not None:
        stats = Path(args.vecnormalize)
        if not stats.is_file():
            raise PgplugError(f"--vecnormalize {args.vecnormalize!r} is not a file")
    # The run's env keys, read as train reads them; normalization comes from the statistics file instead.
    recorded = cfg.read_env_keys({**files.config, "normalize": None}, atari)
    env_kwargs = {**files.env_kwargs, **recorded.env_kwargs, **cfg.parse_assignments(args.env_kwargs, "env argument")}
    check_env_kwargs(env_id, env_kwargs)
    check_output_folders(args)
    if args.video_folder is not None:
        env_kwargs["render_mode"] = "rgb_array"
    stack_recorded = "frame_stack" in files.config
    spec = EnvSpec(
        env_id,
        n_envs=1,
        seed=args.seed,
        frame_stack=recorded.frame_stack,
        wrappers=recorded.env_wrappers,
        vec_env_wrappers=recorded.vec_env_wrappers,
        atari=atari,
        env_kwargs=env_kwargs,
    )
    model, algo = open_model(
        model_path,
        args.algo,
        args.device,
        lambda: spec.make_vec_env(saved_statistics=compat.saved_statistics(stats, args.trust_file), training=False),
        trust=args.trust_file,
    )
    env, spec, stack_source = build_eval_env(spec, model, stats, stack_recorded, args.trust_file)
    deterministic = not atari if args.deterministic is None else args.deterministic
    console.print(
        f"model: {model_path} ({algo}, {type(model).__name__})", markup=False, highlight=False, soft_wrap=True
    )
    details = [f"seed {args.seed}", "deterministic" if deterministic else "stochastic"]
    if spec.frame_stack:
        details.append(f"frame stack {spec.frame_stack} ({stack_source})")
    details.append(f"VecNormalize {stats}" if stats is not None else "no VecNormalize")
    console.print(f"env: {env_id}, " + ", ".join(details), markup=False, highlight=False, soft_wrap=True)
    console.print(set_num_threads(args.num_threads, getattr(model, "policy", None)), markup=False, highlight=False)
    if stats is None and files.config.get("normalize"):
        console.print(
            f"warning: {files.config_path} says normalize, but no {VECNORMALIZE_FILE} was found: "
            "observations are not normalized",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    try:
        with EvaluationProgress(None if args.n_timesteps else args.episodes or 10, console) as progress:
            result = evaluate(
                model,
                env,
                n_episodes=args.episodes or 10,
                n_timesteps=args.n_timesteps,
                deterministic=deterministic,
                video_folder=args.video_folder,
                video_length=args.video_length,
                env_id=env_id,
                on_episode=progress.episode,
            )
    finally:
        env.close()
    console.print(episodes_table(f"{algo} on {env_id}", result.returns, result.lengths))
    rows = [("mean return", f"{result.mean:.2f} ± {result.std:.2f}"), ("episodes", str(len(result.returns)))]
    if atari and result.human_normalized_line() is None:
        rows.append(("human-normalised", "– (no reference score)"))
    console.print(results_table("summary", rows))
    if result.human_normalized_line() is not None:
        console.print(result.human_normalized_line(), markup=False, highlight=False, soft_wrap=True)
    for video in result.videos:
        console.print(f"video: {video}", markup=False, highlight=False, soft_wrap=True)
    return 0
