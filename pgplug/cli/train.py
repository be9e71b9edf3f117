"""``pgplug train``: train a registered algorithm on a gymnasium env, with rl-baselines3-zoo's flags.

Hyperparameters come from ``configs/<algo>.yml`` (the env's entry, ``atari``, or ``default``),
overridden by ``--hyperparams`` and the dedicated flags. Each run gets its own folder
``<log-folder>/<algo>/<env>_<run>/`` holding the model, ``config.yml``, ``vecnormalize.pkl``,
Monitor csv files, checkpoints and the best model of the periodic evaluation.

``-i`` continues a saved model of the same algorithm, or warm-starts a new one from the weights of
another algorithm's zip (SB3 PPO, ...); ``--bc-warmstart`` clones an expert into the new model first.
``--optimize`` runs a hyperparameter search instead (:mod:`pgplug.cli.optimize`, which the CLI dispatches to).
"""

from __future__ import annotations

import argparse
import contextlib
import secrets
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
import yaml
from rich.console import Console

from pgplug.cli.models import load_expert
from pgplug.cli.options import (
    add_config_arguments,
    add_precision_argument,
    add_progress_argument,
    add_trust_argument,
    check_output_folders,
    device,
    log_interval,
    seed,
    timesteps,
)
from pgplug.cli.output import results_table
from pgplug.cli.run_folder import (
    VECNORMALIZE_FILE,
    AtomicCheckpointCallback,
    find_run_files,
    new_run_dir,
    save_model,
    write_run_record,
)
from pgplug.cli.settings import (
    RunRequest,
    Settings,
    continuation_note,
    env_spec,
    eval_env_spec,
    saved_config,
    settle,
    to_plain,
    uses_workers,
)
from pgplug.cli.signals import exit_code, uninterrupted
from pgplug.cli.threads import add_num_threads_argument, is_convolutional, set_num_threads
from pgplug.cli.worker_monitor import WorkerEpisodesMonitor
from pgplug.interop import compat
from pgplug.interop import config as cfg
from pgplug.runtime.envs import EnvSpec, run_name
from pgplug.runtime.precision_choice import choose_precision
from pgplug.runtime.runners import VEC_ENV_KINDS, resolve_fast_paths

HELP = "train an algorithm on a gymnasium env"


def add_arguments(parser: argparse.ArgumentParser, host) -> None:
    algos, estimators = ", ".join(host.algorithms.names()), ", ".join(host.estimators.names())
    parser.add_argument("--algo", required=True, help=f"algorithm to train: {algos}")
    parser.add_argument("--env", required=True, help="gymnasium env id, e.g. CartPole-v1, ALE/Pong-v5")
    parser.add_argument(
        "-n", "--n-timesteps", type=timesteps("n_timesteps"), help="timesteps to train (default: the config's)"
    )
    parser.add_argument(
        "--seed", type=seed, help="random seed, 0 to 2**32 - 1 (default: drawn at random, recorded in config.yml)"
    )
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
        "--bc-steps",
        type=timesteps("bc_steps"),
        default=10_000,
        help="expert steps to clone with --bc-warmstart (default 10000)",
    )
    add_trust_argument(parser)
    add_env_config_arguments(parser)
    parser.add_argument("-tb", "--tensorboard-log", metavar="DIR", help="write TensorBoard logs under DIR/<env>")
    parser.add_argument(
        "--eval-freq", type=int, default=25_000, help="evaluate every N timesteps, keep the best model (-1: never)"
    )
    parser.add_argument("--eval-episodes", type=int, default=5, help="episodes per periodic evaluation (default: 5)")
    parser.add_argument("--save-freq", type=int, default=-1, help="save a checkpoint every N timesteps (-1: never)")
    parser.add_argument(
        "--n-eval-episodes", type=int, default=10, help="episodes of the final evaluation (default: 10; 0: skip)"
    )
    parser.add_argument(
        "--vec-env",
        choices=VEC_ENV_KINDS,
        default="dummy",
        help="VecEnv type (default: dummy); ale: Atari ids in one ale-py AtariVectorEnv (C++ threads)",
    )
    parser.add_argument(
        "--device", type=device, default="auto", help="torch device: auto, cpu, cuda, ... (default: auto)"
    )
    add_num_threads_argument(parser)
    add_precision_argument(parser)
    parser.add_argument("--verbose", type=int, default=0, help="SB3 verbosity: 0 quiet, 1 training logs")
    parser.add_argument("--no-progress", action="store_true", help="no live progress display")
    add_progress_argument(parser, "show the live progress display (the default; rl_zoo3's flag for it)")
    parser.add_argument(
        "--log-interval",
        type=log_interval,
        default=-1,
        help="write the logger's table (stdout with --verbose 1, TensorBoard) every N updates, SB3's log_interval "
        "(default -1: the algorithm's own default_log_interval)",
    )
    parser.add_argument("--n-workers", type=int, help="worker processes (at most 256), for algorithms that have them")
    parser.add_argument(
        "--backend",
        help=f"where the workers run, for algorithms that have them: {', '.join(e.name for e in host.backends)} "
        "(default: the config's, else process)",
    )
    parser.add_argument(
        "--address",
        help="with --backend ray: join this Ray cluster (auto, HOST:PORT or ray://HOST:PORT) instead of starting a "
        "local Ray for the run; the cluster keeps running after it",
    )


def add_env_config_arguments(parser: argparse.ArgumentParser) -> None:
    """rl-baselines3-zoo's ``--env-kwargs``/``--eval-env-kwargs``, and ``--trust-callback`` for a config's callbacks."""
    parser.add_argument(
        "--env-kwargs",
        nargs="+",
        metavar="KEY:VALUE",
        help="gymnasium.make arguments, replacing the config's env_kwargs; values are Python literals read as data, "
        "e.g. max_episode_steps:100 continuous:True",
    )
    parser.add_argument(
        "--eval-env-kwargs",
        nargs="+",
        metavar="KEY:VALUE",
        help="gymnasium.make arguments of the evaluation envs (default: those of the training envs)",
    )
    parser.add_argument(
        "--trust-callback",
        nargs="+",
        default=[],
        metavar="DOTTED.PATH",
        help="let the config's callback run these classes of yours (without it, a config's callback must be one of "
        "SB3's, sb3-contrib's or rl_zoo3's)",
    )


# -- model and callbacks -------------------------------------------------------------------------


def build_model(settings: Settings, env: Any, common: dict[str, Any]) -> Any:
    """A new model from the merged hyperparameters (with the weights of a ``-i`` zip of another algorithm),
    or the ``-i`` model with the command line's overrides.

    :param env: the training ``VecEnv``, or the :class:`EnvSpec` factory for worker algorithms
    """
    cls, kwargs = settings.cls, dict(settings.run_config.algorithm_kwargs)
    if settings.trained_agent is None:
        model = cls(env=env, **kwargs, **common)
        if settings.warm_start is not None:
            compat.warm_start(model, settings.warm_start, trust=settings.trust_file)
        return model
    overrides = {k: v for k, v in kwargs.items() if k in settings.overrides and k not in cfg.ENV_KEYS}
    estimator = overrides.pop("estimator", None)
    estimator_kwargs = overrides.pop("estimator_kwargs", None)
    model = compat.load(
        settings.trained_agent, env=env, algo=cls.name, trust=settings.trust_file, **overrides, **common
    )
    if estimator is not None or estimator_kwargs is not None:
        model.estimator = model.resolve_estimator(estimator or model.estimator.name, estimator_kwargs)
    return model


def bc_warm_start(model: Any, expert_path: Path, n_steps: int, seed: int, trust: bool = False) -> str:
    """Clone the expert into the new model on its own env (:func:`pgplug.interop.bc.clone_expert`); says how it went."""
    from pgplug.interop.bc import clone_expert

    expert, expert_algorithm = load_expert(expert_path, model.get_env(), trust)
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
    from stable_baselines3.common.callbacks import EvalCallback

    callbacks, envs = [], []
    n_envs = getattr(model, "n_envs_per_worker", None) or model.n_envs
    if args.save_freq > 0:
        callbacks.append(
            AtomicCheckpointCallback(
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


def final_evaluation(
    model: Any, spec: EnvSpec, run_dir: Path, settings: Settings, n_episodes: int, console: Console | None = None
):
    """Mean and std of the episode reward on a fresh env (frozen normalization statistics), with its progress."""
    from pgplug.cli.progress import EvaluationProgress
    from pgplug.interop.evaluation import evaluate

    env = spec.make_vec_env(
        n_envs=1,
        start_index=spec.n_envs + 1,
        saved_statistics=compat.saved_statistics(run_dir / VECNORMALIZE_FILE),
        training=False,
    )
    try:
        with EvaluationProgress(n_episodes, console) as progress:
            result = evaluate(model, env, n_episodes, deterministic=not settings.atari, on_episode=progress.episode)
        return result.mean, result.std
    finally:
        env.close()


def evaluation_callback(callbacks: list[Any]) -> Any:
    """The run's ``EvalCallback``, if it has one."""
    from stable_baselines3.common.callbacks import EvalCallback

    return next((c for c in callbacks if isinstance(c, EvalCallback)), None)


def close_quietly(env: Any) -> None:
    """Close an env whose subprocesses may already be gone (Ctrl-C reaches them too)."""
    with contextlib.suppress(EOFError, BrokenPipeError, ConnectionResetError):
        env.close()


def best_evaluation_rows(callbacks: list[Any]) -> list[tuple[str, str]]:
    """The best periodic evaluation and where its model was kept (the last model need not be the best)."""
    evaluation = evaluation_callback(callbacks)
    if evaluation is None or not np.isfinite(evaluation.best_mean_reward):
        return []
    means = [float(np.mean(result)) for result in evaluation.evaluations_results]
    best = int(np.argmin([abs(m - evaluation.best_mean_reward) for m in means]))  # the first best: the saved one
    rows = [("best eval", f"{means[best]:.2f} at {evaluation.evaluations_timesteps[best]:,} steps")]
    path = Path(evaluation.best_model_save_path or "") / "best_model.zip"
    if evaluation.best_model_save_path is not None and path.exists():
        rows.append(("best model", str(path)))
    return rows


def save_after_failure(model: Any, run_dir: Path, name: str, console: Console) -> None:
    """Keep what a failed run learnt: the model (and its VecNormalize statistics) as ``<name>_interrupted.zip``.

    The weights are the last ones the failed update left: a diverged loss is caught before its step, so they
    are finite; should they not be, nothing is written (a model of NaNs would only mislead).
    """
    finite = all(bool(th.isfinite(p).all()) for p in model.policy.parameters())
    if not finite:
        console.print("training failed with weights that are not finite: no model saved", markup=False)
        return
    with uninterrupted():
        path = save_model(model, run_dir, f"{name}_interrupted")
    console.print(f"training failed: model saved to {path}", markup=False, highlight=False, soft_wrap=True)


def default_precision(settings: Settings, model: Any) -> str | None:
    """For a new model whose precision neither ``--precision`` nor the config names: choose it
    (:func:`pgplug.runtime.precision_choice.choose_precision`), set it, and return the header line saying so."""
    if settings.trained_agent is not None or "precision" in settings.run_config.algorithm_kwargs:
        return None
    if not hasattr(model, "precision"):  # a plugin algorithm without the setting
        return None
    precision, reason = choose_precision(model.policy, fast=resolve_fast_paths(model.__dict__.get("fast_paths")))
    model.precision = precision
    if not is_convolutional(model.policy):  # an MLP's fp32 goes without saying
        return None
    return f"precision: {precision} ({reason}; --precision fp32|bf16 to choose)"


# -- the command ---------------------------------------------------------------------------------


def run_request(args: argparse.Namespace) -> RunRequest:
    """The run the command line asks for (also each trial's of ``--optimize``, :mod:`pgplug.cli.optimize`)."""
    return RunRequest(
        algo=args.algo,
        env=args.env,
        hyperparams=args.hyperparams,
        conf_file=args.conf_file,
        estimator=args.estimator,
        estimator_kwargs=args.estimator_kwargs,
        n_workers=args.n_workers,
        backend=args.backend,
        address=args.address,
        n_timesteps=args.n_timesteps,
        trained_agent=args.trained_agent,
        bc_warmstart=args.bc_warmstart,
        vec_env=args.vec_env,
        precision=args.precision,
        trust_file=args.trust_file,
        env_kwargs=args.env_kwargs,
        eval_env_kwargs=args.eval_env_kwargs,
        trusted_callbacks=args.trust_callback,
    )


def run(args: argparse.Namespace) -> int:
    from pgplug.cli.progress import RichProgressCallback

    console = Console()
    settings = settle(run_request(args))
    check_output_folders(args)
    seed = args.seed if args.seed is not None else secrets.randbelow(2**31)
    name = run_name(settings.env_id)
    spec = env_spec(settings, seed, args.vec_env)
    eval_spec = eval_env_spec(settings, spec)
    run_dir = new_run_dir(args.log_folder, args.algo, name)
    source_zip = settings.trained_agent or settings.warm_start
    trained_stats = None if source_zip is None else find_run_files(source_zip).vecnormalize  # a checkpoint's own
    owned_envs: list = []
    notes: list[str] = [note] if (note := continuation_note(settings, trained_stats)) else []
    try:
        if uses_workers(settings.cls):
            env = spec
        else:
            env = spec.make_vec_env(
                monitor_dir=run_dir, saved_statistics=compat.saved_statistics(trained_stats, settings.trust_file)
            )
            owned_envs.append(env)
        common = dict(seed=seed, verbose=args.verbose, device=args.device)
        if args.tensorboard_log:
            common["tensorboard_log"] = str(Path(args.tensorboard_log) / name)
        model = build_model(settings, env, common)
        worker_threads = model.worker_threads() if uses_workers(settings.cls) else None
        notes.append(set_num_threads(args.num_threads, model.policy, worker_threads))
        if (line := default_precision(settings, model)) is not None:
            notes.append(line)
        if settings.warm_start is not None:
            notes.append(
                f"warm start: a new {args.algo} model with the policy weights of {settings.warm_start} "
                f"(saved by {settings.source_algorithm})"
            )
        if settings.bc_expert is not None:
            notes.append(bc_warm_start(model, settings.bc_expert, args.bc_steps, seed, settings.trust_file))
        callbacks, eval_envs = make_callbacks(args, settings, eval_spec, run_dir, model)
        owned_envs += eval_envs
        callbacks[:0] = cfg.build_callbacks(settings.run_config.callbacks)  # first, as the zoo orders them
        if uses_workers(settings.cls):
            callbacks.append(WorkerEpisodesMonitor(run_dir, settings.env_id))
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
    write_run_record(run_dir, config, spec, to_plain(vars(args)))
    if args.verbose:
        console.print(yaml.safe_dump(config, sort_keys=True), markup=False, highlight=False)

    progress = None if args.no_progress else RichProgressCallback(console, evaluation=evaluation_callback(callbacks))
    try:
        return train_and_report(args, settings, model, eval_spec, run_dir, callbacks, progress, console)
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
    """Learn, save (also when stopped by Ctrl-C, SIGTERM or SIGHUP), evaluate on a fresh env and print the results
    table. A failure after the first update saves the model as ``<env>_interrupted.zip`` before it is reported."""
    from stable_baselines3.common.callbacks import CallbackList

    start_timesteps, start = model.num_timesteps, time.monotonic()
    start_updates = getattr(model, "_n_updates", 0)
    interrupted: KeyboardInterrupt | None = None
    try:
        model.learn(
            settings.run_config.n_timesteps,
            callback=CallbackList(([progress] if progress else []) + callbacks),
            reset_num_timesteps=settings.trained_agent is None,  # a warm start is a new run
            **({"log_interval": args.log_interval} if args.log_interval > -1 else {}),
        )
    except KeyboardInterrupt as exc:
        interrupted = exc
    except BaseException:
        if getattr(model, "_n_updates", 0) > start_updates:
            save_after_failure(model, run_dir, run_name(settings.env_id), console)
        raise
    finally:
        if progress is not None:
            progress.close()
    wall_time = time.monotonic() - start
    with uninterrupted():
        model_path = save_model(model, run_dir, run_name(settings.env_id))
    if interrupted is not None:
        console.print(f"interrupted: model saved to {model_path}", markup=False, highlight=False)
        return exit_code(interrupted)
    steps = model.num_timesteps - start_timesteps
    rows = [
        ("timesteps", f"{model.num_timesteps:,}"),
        ("wall time", f"{wall_time:.1f} s"),
        ("steps/s", f"{steps / max(wall_time, 1e-9):,.0f}"),
    ]
    if args.n_eval_episodes > 0:
        mean, std = final_evaluation(model, spec, run_dir, settings, args.n_eval_episodes, console)
        rows[:0] = [("mean reward", f"{mean:.2f} ± {std:.2f}"), ("episodes", str(args.n_eval_episodes))]
    rows += best_evaluation_rows(callbacks)
    rows.append(("model", str(model_path)))
    from pgplug.interop.plotting import save_run_curve

    curve = save_run_curve(run_dir)
    if curve is not None:
        rows.append(("curve", str(curve)))
    console.print(results_table(f"{args.algo} on {settings.env_id}", rows))
    return 0
