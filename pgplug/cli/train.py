"""``pgplug train``: train a registered algorithm on a gymnasium env, with rl-baselines3-zoo's flags.

Hyperparameters come from ``configs/<algo>.yml`` (the env's entry, ``atari``, or ``default``),
overridden by ``--hyperparams`` and the dedicated flags. Each run gets its own folder
``<log-folder>/<algo>/<env>_<run>/`` holding the model, ``config.yml``, ``vecnormalize.pkl``,
Monitor csv files, checkpoints and the best model of the periodic evaluation.

``-i`` continues a saved model of the same algorithm, or warm-starts a new one from the weights of
another algorithm's zip (SB3 PPO, ...); ``--bc-warmstart`` clones an expert into the new model first.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from rich.console import Console
from rich.table import Table

from pgplug import compat
from pgplug import config as cfg
from pgplug.envs import CONFIG_FILE, VECNORMALIZE_FILE, EnvSpec, check_atari_rom, check_env_id, is_atari, run_name
from pgplug.errors import PgplugError

HELP = "train an algorithm on a gymnasium env"
#: What ``config.yml`` records besides the hyperparameters (dropped when ``-i`` reads it back).
RECORD_KEYS = ("seed", "env")
INTERRUPTED_EXIT_CODE = 130


def timesteps(text: str) -> int:
    """``-n`` accepts ``100000``, ``100_000`` and ``1e5``."""
    try:
        value = float(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of timesteps: {text!r}") from None
    if not value.is_integer() or value < 1:
        raise argparse.ArgumentTypeError(f"not a positive whole number of timesteps: {text!r}")
    return int(value)


def add_config_arguments(parser: argparse.ArgumentParser, hyperparams_help: str) -> None:
    """Where a run's hyperparameters come from and where it is saved (shared by ``train`` and ``bc``)."""
    parser.add_argument("-params", "--hyperparams", nargs="+", default=[], metavar="KEY=VALUE", help=hyperparams_help)
    parser.add_argument("-conf", "--conf-file", help="YAML config to read instead of the built-in configs/<algo>.yml")
    parser.add_argument("-f", "--log-folder", default="logs", help="root folder of the runs (default: logs)")


def add_arguments(parser: argparse.ArgumentParser, host) -> None:
    algos, estimators = ", ".join(host.algorithms.names()), ", ".join(host.estimators.names())
    parser.add_argument("--algo", required=True, help=f"algorithm to train: {algos}")
    parser.add_argument("--env", required=True, help="gymnasium env id, e.g. CartPole-v1, ALE/Pong-v5")
    parser.add_argument("-n", "--n-timesteps", type=timesteps, help="timesteps to train (default: the config's)")
    parser.add_argument("--seed", type=int, help="random seed (default: drawn at random, recorded in config.yml)")
    parser.add_argument("--estimator", help=f"advantage estimator: {estimators}")
    parser.add_argument(
        "--estimator-kwargs",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="estimator arguments, e.g. gae_lambda=0.95",
    )
    add_config_arguments(
        parser, "override hyperparameters; values are YAML, e.g. n_steps=8 'policy_kwargs={net_arch: [64, 64]}'"
    )
    parser.add_argument(
        "-i",
        "--trained-agent",
        metavar="PATH",
        help="continue training this saved model (.zip); a model of another algorithm (SB3 PPO, ...) "
        "warm-starts a new one from its weights",
    )
    parser.add_argument(
        "--bc-warmstart",
        metavar="EXPERT_ZIP",
        help="before training, clone this expert (any loadable .zip) into the new model by behavioural cloning",
    )
    parser.add_argument(
        "--bc-steps", type=timesteps, default=10_000, help="expert steps to clone with --bc-warmstart (default 10000)"
    )
    parser.add_argument("-tb", "--tensorboard-log", metavar="DIR", help="write TensorBoard logs under DIR/<env>")
    parser.add_argument(
        "--eval-freq", type=int, default=25_000, help="evaluate every N timesteps, keep the best model (-1: never)"
    )
    parser.add_argument("--eval-episodes", type=int, default=5, help="episodes per periodic evaluation (default: 5)")
    parser.add_argument("--save-freq", type=int, default=-1, help="save a checkpoint every N timesteps (-1: never)")
    parser.add_argument(
        "--n-eval-episodes", type=int, default=10, help="episodes of the final evaluation (default: 10; 0: skip)"
    )
    parser.add_argument("--vec-env", choices=("dummy", "subproc"), default="dummy", help="VecEnv type (default: dummy)")
    parser.add_argument("--device", default="auto", help="torch device: auto, cpu, cuda, ... (default: auto)")
    parser.add_argument(
        "--num-threads", type=int, default=-1, help="torch threads (-1: torch's default; 1 is fastest for small MLPs)"
    )
    parser.add_argument("--verbose", type=int, default=0, help="SB3 verbosity: 0 quiet, 1 training logs")
    parser.add_argument("--no-progress", action="store_true", help="no live progress display")
    parser.add_argument("--n-workers", type=int, help="worker processes, for algorithms that have them (a3c)")


# -- hyperparameters -----------------------------------------------------------------------------


@dataclass
class Settings:
    """What the command line and the configs decided for one run."""

    cls: type
    env_id: str
    atari: bool
    run_config: cfg.RunConfig
    overrides: dict[str, Any]
    source: str
    trained_agent: Path | None
    #: ``-i`` named another algorithm's zip: a new model starts from its weights
    warm_start: Path | None = None
    #: the algorithm that saved the ``-i`` zip, as :func:`pgplug.compat.detect_algorithm` names it
    source_algorithm: str | None = None
    bc_expert: Path | None = None


def check_trained_agent(path: str | None) -> Path | None:
    if path is None:
        return None
    trained = Path(path)
    if trained.suffix != ".zip" or not trained.is_file():
        raise PgplugError(f"--trained-agent {path!r} is not a saved model (.zip file)")
    return trained


def base_hyperparams(args: argparse.Namespace, env_id: str, atari: bool, trained: Path | None) -> tuple[dict, str]:
    """The config entry for this run and a description of where it came from."""
    if trained is not None and (trained.parent / CONFIG_FILE).is_file():
        path = trained.parent / CONFIG_FILE
        hyperparams = cfg.read_yaml_mapping(path)
        for key in RECORD_KEYS:
            hyperparams.pop(key, None)
        return hyperparams, str(path)
    path = Path(args.conf_file) if args.conf_file else cfg.builtin_config_path(args.algo)
    if path is None:
        return {}, f"no configs/{args.algo}.yml: the algorithm's defaults"
    policy = cfg.parse_assignments(args.hyperparams).get("policy")
    entry, hyperparams = cfg.select_entry(cfg.load_config_file(path), env_id, atari, policy)
    return hyperparams, f"entry {entry!r} of {path}" if entry else f"no entry for {env_id!r} in {path}: defaults"


def command_line_hyperparams(args: argparse.Namespace, cls: type, base: dict[str, Any]) -> dict[str, Any]:
    """``--hyperparams``, ``--estimator``, ``--estimator-kwargs`` and ``--n-workers`` as hyperparameters."""
    overrides = cfg.parse_assignments(args.hyperparams)
    if args.estimator is not None:
        if args.estimator != base.get("estimator"):
            overrides.setdefault("estimator_kwargs", {})  # the config's kwargs belong to its own estimator
        overrides["estimator"] = args.estimator
    if args.estimator_kwargs:
        kwargs = overrides.get("estimator_kwargs", base.get("estimator_kwargs")) or {}
        if not isinstance(kwargs, dict):
            raise PgplugError(f"estimator_kwargs must be a mapping, got {kwargs!r}")
        overrides["estimator_kwargs"] = {**kwargs, **cfg.parse_assignments(args.estimator_kwargs, "estimator argument")}
    if args.n_workers is not None:
        if "n_workers" not in cfg.constructor_keys(cls):
            from pgplug.plugin_host import get_host

            with_workers = [e.name for e in get_host().algorithms if "n_workers" in cfg.constructor_keys(e.cls)]
            names = ", ".join(with_workers) or "none"
            raise PgplugError(f"--n-workers does not apply to {args.algo}; algorithms with workers: {names}")
        overrides["n_workers"] = args.n_workers
    return overrides


def saved_algorithm(path: Path) -> str | None:
    """The algorithm that saved a model zip (read without unpickling); a broken or off-policy file fails here."""
    info = compat.read_zip(path)
    compat.check_actor_critic(info)
    return compat.detect_algorithm(info)


def continues(algo: str, source_algorithm: str | None) -> bool:
    """Whether ``algo`` opens a zip of ``source_algorithm`` as its own (same algorithm, or SB3's A2C for a2c)."""
    return source_algorithm in (None, algo) or algo in compat.counterparts_of(source_algorithm)


def class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def source_architecture(cls: type, source: Path, base: dict[str, Any]) -> dict[str, Any]:
    """``policy`` and ``policy_kwargs`` (as config data) that rebuild ``source``'s policy for ``cls``.

    The config's optimizer settings are kept: the new algorithm trains with its own optimizer.
    """
    policy_class, policy_kwargs = compat.policy_architecture(source)
    aliases = getattr(cls, "policy_aliases", {})
    policy = next((name for name, alias in aliases.items() if alias is policy_class), class_path(policy_class))
    optimizer = {
        k: v for k, v in (base.get("policy_kwargs") or {}).items() if k in ("optimizer_class", "optimizer_kwargs")
    }
    kwargs = {k: class_path(v) if isinstance(v, type) else v for k, v in policy_kwargs.items()}
    return {"policy": policy, "policy_kwargs": {**optimizer, **kwargs}}


def check_bc_expert(path: str | None, trained_agent: str | None) -> Path | None:
    if path is None:
        return None
    if trained_agent is not None:
        raise PgplugError("--bc-warmstart clones an expert into a new model, so it cannot be combined with -i")
    expert = Path(path)
    saved_algorithm(expert)
    return expert


def settle(args: argparse.Namespace, require_timesteps: bool = True) -> Settings:
    """Check the command line and merge the hyperparameters, before anything is built.

    :param require_timesteps: fail when neither ``-n`` nor the config gives a training budget
    """
    from pgplug.plugin_host import get_host

    cls = get_host().algorithms.get(args.algo)
    env_id = check_env_id(args.env)
    atari = is_atari(env_id)
    if atari:
        check_atari_rom(env_id)
    trained = check_trained_agent(args.trained_agent)
    source_algorithm = None if trained is None else saved_algorithm(trained)
    warm_start = None
    if trained is not None and not continues(args.algo, source_algorithm):
        if source_algorithm == "ppo_lstm":
            raise PgplugError(
                f"{trained} is a RecurrentPPO (LSTM) model, which {args.algo} cannot run; "
                "evaluate it with 'pgplug eval' or continue it with sb3-contrib"
            )
        warm_start, trained = trained, None
    bc_expert = check_bc_expert(args.bc_warmstart, args.trained_agent)
    base, source = base_hyperparams(args, env_id, atari, trained)
    overrides = command_line_hyperparams(args, cls, base)
    if trained is not None and {"policy", "policy_kwargs"} & overrides.keys():
        raise PgplugError("policy and policy_kwargs cannot change when continuing training with -i")
    if warm_start is not None and {"policy", "policy_kwargs"} & overrides.keys():
        raise PgplugError("policy and policy_kwargs come from the -i model when warm-starting from its weights")
    architecture = {} if warm_start is None else source_architecture(cls, warm_start, base)
    run_config = cfg.prepare(cls, {**base, **overrides, **architecture}, args.algo, atari)
    if args.n_timesteps is not None:
        run_config.n_timesteps = args.n_timesteps
    if run_config.n_timesteps is None and require_timesteps:
        raise PgplugError(f"no n_timesteps for {env_id!r} ({source}); pass -n N")
    estimator = run_config.algorithm_kwargs.get("estimator") or getattr(cls, "default_estimator", None)
    if isinstance(estimator, str) and hasattr(cls, "resolve_estimator"):
        cls.resolve_estimator(estimator, run_config.algorithm_kwargs.get("estimator_kwargs"))
    return Settings(cls, env_id, atari, run_config, overrides, source, trained, warm_start, source_algorithm, bc_expert)


def env_spec(settings: Settings, seed: int | None, vec_env: str = "dummy") -> EnvSpec:
    """The run's env recipe, from the merged hyperparameters."""
    rc = settings.run_config
    return EnvSpec(
        settings.env_id,
        n_envs=rc.n_envs,
        seed=seed,
        frame_stack=rc.frame_stack,
        normalize=rc.normalize,
        wrappers=rc.env_wrappers,
        atari=settings.atari,
        vec_env=vec_env,
    )


# -- run folder ----------------------------------------------------------------------------------


def new_run_dir(log_folder: str | Path, algo: str, name: str) -> Path:
    """``<log_folder>/<algo>/<name>_<k>`` with k one more than the highest existing run."""
    base = Path(log_folder) / algo
    pattern = re.compile(rf"{re.escape(name)}_(\d+)")
    existing = [int(m.group(1)) for p in base.glob("*") if (m := pattern.fullmatch(p.name))] if base.is_dir() else []
    run = max(existing, default=0) + 1
    while True:
        run_dir = base / f"{name}_{run}"
        try:
            run_dir.mkdir(parents=True)
            return run_dir
        except FileExistsError:
            run += 1


def to_plain(value: Any) -> Any:
    """YAML-safe data: mappings, lists, numbers, strings and None; anything else as its repr."""
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy and torch scalars
        value = value.item()
    return value if value is None or isinstance(value, (bool, int, float, str)) else repr(value)


def saved_config(settings: Settings, model: Any, seed: int) -> dict[str, Any]:
    """The hyperparameters actually used, as plain YAML data (what ``config.yml`` records)."""
    saved = {"env": settings.env_id, **settings.run_config.raw}
    saved["n_envs"] = settings.run_config.n_envs
    saved["n_timesteps"] = settings.run_config.n_timesteps
    estimator = getattr(model, "estimator", None)
    if estimator is not None and hasattr(estimator, "params"):
        saved["estimator"] = estimator.name
        saved["estimator_kwargs"] = estimator.params()
    saved["seed"] = seed
    return to_plain(saved)


def save_model(model: Any, run_dir: Path, name: str) -> Path:
    path = run_dir / f"{name}.zip"
    model.save(path)
    vec_normalize = model.get_vec_normalize_env()
    if vec_normalize is not None:
        vec_normalize.save(str(run_dir / VECNORMALIZE_FILE))
    return path


# -- model and callbacks -------------------------------------------------------------------------


def uses_workers(cls: type) -> bool:
    """Worker algorithms (A3C) build their envs in each worker from a picklable factory."""
    return "n_workers" in cfg.constructor_keys(cls)


def build_model(settings: Settings, env: Any, common: dict[str, Any]) -> Any:
    """A new model from the merged hyperparameters (with the weights of a ``-i`` zip of another algorithm),
    or the ``-i`` model with the command line's overrides.

    :param env: the training ``VecEnv``, or the :class:`EnvSpec` factory for worker algorithms
    """
    cls, kwargs = settings.cls, dict(settings.run_config.algorithm_kwargs)
    if settings.trained_agent is None:
        model = cls(env=env, **kwargs, **common)
        if settings.warm_start is not None:
            compat.warm_start(model, settings.warm_start)
        return model
    overrides = {k: v for k, v in kwargs.items() if k in settings.overrides and k not in cfg.ENV_KEYS}
    estimator = overrides.pop("estimator", None)
    estimator_kwargs = overrides.pop("estimator_kwargs", None)
    model = compat.load(settings.trained_agent, env=env, algo=cls.name, **overrides, **common)
    if estimator is not None or estimator_kwargs is not None:
        model.estimator = model.resolve_estimator(estimator or model.estimator.name, estimator_kwargs)
    return model


def bc_warm_start(model: Any, expert_path: Path, n_steps: int, seed: int) -> str:
    """Clone the expert into the new model on its own env (:func:`pgplug.bc.clone_expert`); says how it went."""
    from pgplug.bc import clone_expert
    from pgplug.cli.bc import load_expert

    expert, expert_algorithm = load_expert(expert_path, model.get_env())
    result = clone_expert(model, expert, n_steps=n_steps, seed=seed)
    agreement = "" if result.accuracy is None else f", action agreement {result.accuracy:.1%}"
    return (
        f"behavioural cloning: {n_steps:,} steps of {expert_path} ({expert_algorithm}){agreement}, "
        f"loss {result.losses[0]:.3f} → {result.losses[-1]:.3f}"
    )


def make_callbacks(
    args: argparse.Namespace, settings: Settings, spec: EnvSpec, run_dir: Path, model: Any
) -> tuple[list, list]:
    """SB3 callbacks for ``--save-freq`` and ``--eval-freq``, and the envs they own.

    SB3 counts callback calls, one per vec-env step of ``n_envs`` timesteps (of one worker's
    ``n_envs_per_worker`` for A3C), so frequencies in timesteps are divided by that, as the zoo does.
    """
    from stable_baselines3.common.callbacks import CheckpointCallback, EvalCallback

    callbacks, envs = [], []
    n_envs = getattr(model, "n_envs_per_worker", None) or model.n_envs
    if args.save_freq > 0:
        callbacks.append(
            CheckpointCallback(
                save_freq=max(args.save_freq // n_envs, 1),
                save_path=str(run_dir),
                name_prefix="rl_model",
                save_vecnormalize=True,
                verbose=args.verbose,
            )
        )
    if args.eval_freq > 0:
        eval_env = spec.make_vec_env(n_envs=1, start_index=spec.n_envs, training=False)
        envs.append(eval_env)
        callbacks.append(
            EvalCallback(
                eval_env,
                eval_freq=max(args.eval_freq // n_envs, 1),
                n_eval_episodes=args.eval_episodes,
                best_model_save_path=str(run_dir),
                log_path=str(run_dir),
                deterministic=not settings.atari,
                verbose=1,
            )
        )
    return callbacks, envs


def final_evaluation(model: Any, spec: EnvSpec, run_dir: Path, settings: Settings, n_episodes: int):
    """Mean and std of the episode reward on a fresh env (frozen normalization statistics)."""
    from stable_baselines3.common.evaluation import evaluate_policy

    env = spec.make_vec_env(
        n_envs=1, start_index=spec.n_envs + 1, vecnormalize_path=run_dir / VECNORMALIZE_FILE, training=False
    )
    try:
        return evaluate_policy(model, env, n_eval_episodes=n_episodes, deterministic=not settings.atari, warn=False)
    finally:
        env.close()


def close_quietly(env: Any) -> None:
    """Close an env whose subprocesses may already be gone (Ctrl-C reaches them too)."""
    with contextlib.suppress(EOFError, BrokenPipeError, ConnectionResetError):
        env.close()


def best_evaluation_rows(callbacks: list[Any]) -> list[tuple[str, str]]:
    """The best periodic evaluation and where its model was kept (the last model need not be the best)."""
    from stable_baselines3.common.callbacks import EvalCallback

    evaluation = next((c for c in callbacks if isinstance(c, EvalCallback)), None)
    if evaluation is None or not np.isfinite(evaluation.best_mean_reward):
        return []
    means = [float(np.mean(result)) for result in evaluation.evaluations_results]
    best = int(np.argmin([abs(m - evaluation.best_mean_reward) for m in means]))  # the first best: the saved one
    rows = [("best eval", f"{means[best]:.2f} at {evaluation.evaluations_timesteps[best]:,} steps")]
    path = Path(evaluation.best_model_save_path or "") / "best_model.zip"
    if evaluation.best_model_save_path is not None and path.exists():
        rows.append(("best model", str(path)))
    return rows


def results_table(title: str, rows: list[tuple[str, str]]) -> Table:
    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for key, value in rows:
        table.add_row(key, value)
    return table


# -- the command ---------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    from pgplug.cli.progress import RichProgressCallback

    console = Console()
    settings = settle(args)
    if args.num_threads > 0:
        import torch

        torch.set_num_threads(args.num_threads)
    seed = args.seed if args.seed is not None else secrets.randbelow(2**31)
    name = run_name(settings.env_id)
    spec = env_spec(settings, seed, args.vec_env)
    run_dir = new_run_dir(args.log_folder, args.algo, name)
    source_zip = settings.trained_agent or settings.warm_start
    trained_stats = None if source_zip is None else source_zip.parent / VECNORMALIZE_FILE
    owned_envs: list = []
    notes: list[str] = []
    try:
        if uses_workers(settings.cls):
            env = spec
        else:
            env = spec.make_vec_env(monitor_dir=run_dir, vecnormalize_path=trained_stats)
            owned_envs.append(env)
        common = dict(seed=seed, verbose=args.verbose, device=args.device)
        if args.tensorboard_log:
            common["tensorboard_log"] = str(Path(args.tensorboard_log) / name)
        model = build_model(settings, env, common)
        if settings.warm_start is not None:
            notes.append(
                f"warm start: a new {args.algo} model with the policy weights of {settings.warm_start} "
                f"(saved by {settings.source_algorithm})"
            )
        if settings.bc_expert is not None:
            notes.append(bc_warm_start(model, settings.bc_expert, args.bc_steps, seed))
        callbacks, eval_envs = make_callbacks(args, settings, spec, run_dir, model)
        owned_envs += eval_envs
    except BaseException:
        for env in owned_envs:
            close_quietly(env)
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    console.print(
        f"{args.algo} on {settings.env_id}, hyperparameters from {settings.source}", markup=False, soft_wrap=True
    )
    console.print(f"run folder: {run_dir}", markup=False, highlight=False, soft_wrap=True)
    for note in notes:
        console.print(note, markup=False, highlight=False, soft_wrap=True)
    config = saved_config(settings, model, seed)
    (run_dir / CONFIG_FILE).write_text(yaml.safe_dump(config, sort_keys=True))
    if args.verbose:
        console.print(yaml.safe_dump(config, sort_keys=True), markup=False, highlight=False)

    progress = None if args.no_progress else RichProgressCallback(console)
    try:
        return train_and_report(args, settings, model, spec, run_dir, callbacks, progress, console)
    finally:
        for env in {id(e): e for e in [model.env, *owned_envs] if e is not None}.values():
            close_quietly(env)


def train_and_report(
    args: argparse.Namespace,
    settings: Settings,
    model: Any,
    spec: EnvSpec,
    run_dir: Path,
    callbacks: list,
    progress: Any,
    console: Console,
) -> int:
    """Learn, save (also on Ctrl-C), evaluate on a fresh env and print the results table."""
    from stable_baselines3.common.callbacks import CallbackList

    start_timesteps, start = model.num_timesteps, time.monotonic()
    interrupted = False
    try:
        model.learn(
            settings.run_config.n_timesteps,
            callback=CallbackList(([progress] if progress else []) + callbacks),
            reset_num_timesteps=settings.trained_agent is None,  # a warm start is a new run
        )
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if progress is not None:
            progress.close()
    wall_time = time.monotonic() - start
    model_path = save_model(model, run_dir, run_name(settings.env_id))
    if interrupted:
        console.print(f"interrupted: model saved to {model_path}", markup=False, highlight=False)
        return INTERRUPTED_EXIT_CODE
    steps = model.num_timesteps - start_timesteps
    rows = [
        ("timesteps", f"{model.num_timesteps:,}"),
        ("wall time", f"{wall_time:.1f} s"),
        ("steps/s", f"{steps / max(wall_time, 1e-9):,.0f}"),
    ]
    if args.n_eval_episodes > 0:
        mean, std = final_evaluation(model, spec, run_dir, settings, args.n_eval_episodes)
        rows[:0] = [("mean reward", f"{mean:.2f} ± {std:.2f}"), ("episodes", str(args.n_eval_episodes))]
    rows += best_evaluation_rows(callbacks)
    rows.append(("model", str(model_path)))
    console.print(results_table(f"{args.algo} on {settings.env_id}", rows))
    return 0
