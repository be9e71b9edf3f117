"""``pgplug eval`` (alias ``enjoy``, as in rl-baselines3-zoo): play a saved model and report its episode returns.

Any zip :func:`pgplug.load` opens works: pgplug's REINFORCE/A2C/A3C, SB3's A2C and PPO, RecurrentPPO,
gym-era files. The env is built as pgplug trains (SB3's Atari pipeline for Atari ids), with what the
model's run folder says: ``config.yml`` and ``vecnormalize.pkl`` next to the zip (pgplug's layout) or
in ``<run>/<env>/`` (the zoo's, whose ``args.yml`` also names the env). Without a recorded frame
stack, it is read off the model's observation space.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import gymnasium as gym
import yaml
from rich.console import Console
from rich.table import Table

from pgplug import compat
from pgplug import config as cfg
from pgplug.envs import CONFIG_FILE, VECNORMALIZE_FILE, EnvSpec, check_atari_rom, check_env_id, is_atari
from pgplug.errors import PgplugError

HELP = (
    "evaluate a saved model (any SB3/pgplug on-policy zip): episode returns, mean ± std, Atari human-normalised score"
)
ALIASES = ("enjoy",)
ZOO_ARGS_FILE = "args.yml"


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"not a positive number: {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser, host) -> None:
    parser.add_argument("model", metavar="MODEL.zip", help="the saved model")
    parser.add_argument("--env", help="gymnasium env id (default: the one recorded in the model's run folder)")
    parser.add_argument("--episodes", type=positive_int, default=10, help="episodes to play (default: 10)")
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
    parser.add_argument("--video-length", type=positive_int, default=1000, help="steps to record (default: 1000)")
    parser.add_argument(
        "--algo",
        help=f"the algorithm that saved the zip, when the file does not say: {', '.join(compat.algorithm_names())}",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the evaluation env (default: 0)")
    parser.add_argument(
        "--env-kwargs",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="gymnasium.make arguments (YAML values), e.g. max_episode_steps=1000",
    )
    parser.add_argument("--device", default="auto", help="torch device (default: auto)")
    parser.add_argument("--num-threads", type=int, default=-1, help="torch threads (-1: torch's default)")


# -- what the run folder says --------------------------------------------------------------------


class RecordLoader(yaml.SafeLoader):
    """A safe YAML loader that also reads the zoo's ``config.yml``/``args.yml`` as plain data.

    The zoo dumps ``OrderedDict``s (``!!python/object/apply:collections.OrderedDict``) and tuples;
    these become dicts and lists. Any other ``!!python/...`` object becomes None: nothing is constructed.
    """


def _ordered_dict(loader: yaml.Loader, suffix: str, node: yaml.Node) -> Any:
    if suffix == "object/apply:collections.OrderedDict" and isinstance(node, yaml.SequenceNode):
        (pairs,) = loader.construct_sequence(node, deep=True) or [[]]
        return {str(k): v for k, v in pairs}
    if suffix == "tuple" and isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return None


RecordLoader.add_multi_constructor("tag:yaml.org,2002:python/", _ordered_dict)


def read_record(path: Path) -> dict[str, Any]:
    try:
        data = yaml.load(path.read_text(), Loader=RecordLoader)
    except (OSError, yaml.YAMLError, ValueError, TypeError) as exc:
        raise PgplugError(f"cannot read {path}: {str(exc).splitlines()[0]}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise PgplugError(f"{path} must hold a mapping, not {type(data).__name__}")
    return {str(k): v for k, v in data.items()}


@dataclass
class RunFiles:
    """What a model's run folder records about its env.

    :param config: the hyperparameters of ``config.yml`` (empty without one)
    :param config_path: that file
    :param vecnormalize: the ``VecNormalize`` statistics saved with the model
    :param env_id: the env id recorded by pgplug (``config.yml``) or the zoo (``args.yml``)
    :param env_kwargs: the zoo's recorded ``env_kwargs``
    """

    config: dict[str, Any] = field(default_factory=dict)
    config_path: Path | None = None
    vecnormalize: Path | None = None
    env_id: str | None = None
    env_kwargs: dict[str, Any] = field(default_factory=dict)


def find_run_files(model_path: Path) -> RunFiles:
    """The files saved with ``model_path``: next to it (pgplug) or in ``<run>/<env>/`` (rl-baselines3-zoo).

    A checkpoint ``rl_model_<N>_steps.zip`` takes ``rl_model_vecnormalize_<N>_steps.pkl`` when there is one.
    """
    for folder in (model_path.parent, model_path.parent / model_path.stem):
        if (folder / CONFIG_FILE).is_file() or (folder / VECNORMALIZE_FILE).is_file():
            break
    else:
        return RunFiles()
    files = RunFiles()
    if (folder / CONFIG_FILE).is_file():
        files.config_path = folder / CONFIG_FILE
        files.config = read_record(files.config_path)
        files.env_id = files.config.get("env") if isinstance(files.config.get("env"), str) else None
    if (folder / ZOO_ARGS_FILE).is_file():
        zoo_args = read_record(folder / ZOO_ARGS_FILE)
        if files.env_id is None and isinstance(zoo_args.get("env"), str):
            files.env_id = zoo_args["env"]
        if isinstance(zoo_args.get("env_kwargs"), dict):
            files.env_kwargs = dict(zoo_args["env_kwargs"])
    checkpoint = re.fullmatch(r"rl_model_(\d+)_steps", model_path.stem)
    stats = [folder / f"rl_model_vecnormalize_{checkpoint.group(1)}_steps.pkl"] if checkpoint else []
    stats.append(folder / VECNORMALIZE_FILE)
    files.vecnormalize = next((path for path in stats if path.is_file()), None)
    return files


# -- the model and its env -----------------------------------------------------------------------


def spaces_readable(info: compat.ModelZip) -> bool:
    """Whether the zip's pickled spaces unpickle (gym-era ones do, through the gym → gymnasium shim)."""
    for key in ("observation_space", "action_space"):
        blob = info.pickled(key)
        if blob is None:
            continue
        try:
            compat.compat_loads(blob)
        except Exception:
            return False
    return True


def open_model(
    path: str | Path, algo: str | None = None, device: str = "auto", make_env: Callable[[], Any] | None = None
) -> tuple[Any, str]:
    """Load any zip :func:`pgplug.load` opens; the algorithm's name too (the detected one, or ``algo``).

    :param make_env: builds the env whose spaces replace saved spaces that cannot be unpickled
    """
    info = compat.read_zip(path)
    compat.check_actor_critic(info)
    name = compat.choose_algorithm(info, algo)
    env = make_env() if make_env is not None and not spaces_readable(info) else None
    return compat.load(info.path, env=env, algo=algo, device=device), name


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


def describe_space(space: gym.Space) -> str:
    """A space on one short line: ``Box(12,) float32`` (a Box's repr prints its bounds over many lines)."""
    if isinstance(space, gym.spaces.Box):
        return f"Box{space.shape} {space.dtype}"
    return " ".join(str(space).split())


def same_shape_note(expected: gym.Space, given: gym.Space) -> str:
    return " with other bounds" if describe_space(expected) == describe_space(given) else ""


def frame_stack_value(value: Any) -> int | None:
    return None if value in (None, 0, 1, False) else cfg.positive_int("frame_stack", value)


def build_eval_env(spec: EnvSpec, model: Any, stats: Path | None, stack_recorded: bool) -> tuple[Any, EnvSpec, str]:
    """The evaluation ``VecEnv``, with the frame stack read off the model when no config records it."""
    env = spec.make_vec_env(vecnormalize_path=stats, training=False)
    how = "from config.yml" if stack_recorded else "default"
    if model.observation_space != env.observation_space and not stack_recorded:
        env.close()
        single = replace(spec, frame_stack=None).make_vec_env(vecnormalize_path=stats, training=False)
        frames = infer_frame_stack(model.observation_space, single.observation_space)
        single.close()
        spec = replace(spec, frame_stack=frames)
        env = spec.make_vec_env(vecnormalize_path=stats, training=False)
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
        return files.env_id
    if model_path.stem in gym.registry:
        return model_path.stem
    raise PgplugError(f"no --env given and none recorded with {model_path} (config.yml or args.yml); pass --env ID")


def run(args: argparse.Namespace) -> int:
    from pgplug.cli.train import results_table
    from pgplug.evaluation import evaluate

    console = Console()
    if args.num_threads > 0:
        import torch

        torch.set_num_threads(args.num_threads)
    model_path = compat.resolve_path(args.model)
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
    env_kwargs = {**files.env_kwargs, **cfg.parse_assignments(args.env_kwargs, "env argument")}
    if args.video_folder is not None:
        env_kwargs["render_mode"] = "rgb_array"
    stack_recorded = "frame_stack" in files.config
    spec = EnvSpec(
        env_id,
        n_envs=1,
        seed=args.seed,
        frame_stack=frame_stack_value(files.config.get("frame_stack", 4 if atari else None)),
        wrappers=cfg.parse_env_wrappers(files.config.get("env_wrapper")),
        atari=atari,
        env_kwargs=env_kwargs,
    )
    model, algo = open_model(
        model_path, args.algo, args.device, lambda: spec.make_vec_env(vecnormalize_path=stats, training=False)
    )
    env, spec, stack_source = build_eval_env(spec, model, stats, stack_recorded)
    deterministic = not atari if args.deterministic is None else args.deterministic
    console.print(
        f"model: {model_path} ({algo}, {type(model).__name__})", markup=False, highlight=False, soft_wrap=True
    )
    details = [f"seed {args.seed}", "deterministic" if deterministic else "stochastic"]
    if spec.frame_stack:
        details.append(f"frame stack {spec.frame_stack} ({stack_source})")
    details.append(f"VecNormalize {stats}" if stats is not None else "no VecNormalize")
    console.print(f"env: {env_id}, " + ", ".join(details), markup=False, highlight=False, soft_wrap=True)
    if stats is None and files.config.get("normalize"):
        console.print(
            f"warning: {files.config_path} says normalize, but no {VECNORMALIZE_FILE} was found: "
            "observations are not normalized",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    try:
        result = evaluate(
            model,
            env,
            n_episodes=args.episodes,
            deterministic=deterministic,
            video_folder=args.video_folder,
            video_length=args.video_length,
            env_id=env_id,
        )
    finally:
        env.close()
    console.print(episodes_table(f"{algo} on {env_id}", result.returns, result.lengths))
    rows = [("mean return", f"{result.mean:.2f} ± {result.std:.2f}"), ("episodes", str(len(result.returns)))]
    if atari:
        score = result.human_normalized
        rows.append(("human-normalised", "– (no reference score)" if score is None else f"{score:.1f}%"))
    console.print(results_table("summary", rows))
    for video in result.videos:
        console.print(f"video: {video}", markup=False, highlight=False, soft_wrap=True)
    return 0
