"""``pgplug bc``: clone an expert into a fresh pgplug model by behavioural cloning, evaluate both, save a run.

The expert is any zip :func:`pgplug.load` opens (SB3 PPO, a pgplug run, a gym-era file). The student
is a new model of ``--algo`` with the config's hyperparameters for the env (the same machinery as
``pgplug train``), trained on the expert's (state, action) pairs with the policy-gradient loss at
Ψ = 1 (:mod:`pgplug.interop.bc`). The run folder ``<log-folder>/<algo>/<env>_bc_<k>/`` holds the model and
``config.yml`` as a training run does, so ``pgplug train -i`` fine-tunes it with rewards, plus
``bc.yml`` with the cloning settings and results.
"""

from __future__ import annotations

import argparse
import secrets
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from pgplug.cli.models import load_expert, saved_algorithm
from pgplug.cli.options import (
    add_config_arguments,
    add_precision_argument,
    add_progress_argument,
    add_trust_argument,
    check_output_folders,
    device,
    learning_rate,
    non_negative_int,
    positive_int,
    seed,
    timesteps,
)
from pgplug.cli.output import results_table
from pgplug.cli.run_folder import CONFIG_FILE, find_run_files, new_run_dir, save_model
from pgplug.cli.settings import RunRequest, env_spec, saved_config, settle, uses_workers
from pgplug.cli.threads import add_num_threads_argument, set_num_threads
from pgplug.errors import PgplugError
from pgplug.interop import compat
from pgplug.runtime.envs import run_name

HELP = "clone an expert (any loadable .zip) into a new model by behavioural cloning, evaluate and save it"
BC_FILE = "bc.yml"


def add_arguments(parser: argparse.ArgumentParser, host) -> None:
    algos = ", ".join(host.algorithms.names())
    parser.add_argument("--expert", required=True, metavar="MODEL.zip", help="the expert: any zip pgplug.load opens")
    parser.add_argument("--env", required=True, help="gymnasium env id the expert was trained on")
    parser.add_argument(
        "-n", "--n-steps", type=timesteps("n_steps"), required=True, help="expert steps (state, action pairs)"
    )
    parser.add_argument("--algo", default="a2c", help=f"the student's algorithm: {algos} (default: a2c)")
    parser.add_argument(
        "--epochs", type=positive_int("epochs"), default=10, help="passes over the expert data (default: 10)"
    )
    parser.add_argument(
        "--batch-size", type=positive_int("batch_size"), default=64, help="expert steps per update (default: 64)"
    )
    parser.add_argument("--learning-rate", type=learning_rate, default=1e-3, help="Adam's learning rate (1e-3)")
    add_config_arguments(parser, "override the student's hyperparameters, as in 'pgplug train'")
    add_trust_argument(parser)
    add_progress_argument(parser, "accepted, as on rl_zoo3's command lines (bc prints its results when done)")
    parser.add_argument(
        "--seed", type=seed, help="random seed, 0 to 2**32 - 1 (default: drawn at random, recorded in config.yml)"
    )
    parser.add_argument(
        "--n-eval-episodes",
        type=non_negative_int("n_eval_episodes"),
        default=10,
        help="episodes to evaluate each model (default: 10)",
    )
    parser.add_argument("--device", type=device, default="auto", help="the student's torch device (default: auto)")
    add_num_threads_argument(parser)
    add_precision_argument(parser)


def mean_std(result: Any) -> str:
    return f"{result.mean:.2f} ± {result.std:.2f}"


def run(args: argparse.Namespace) -> int:
    from pgplug.interop.bc import behavioural_cloning, collect_expert_data
    from pgplug.interop.evaluation import evaluate

    console = Console()
    expert_path = Path(args.expert)
    saved_algorithm(expert_path, args.trust_file)  # a broken or off-policy file fails before anything is built
    # A fresh student of the config's estimator: what 'pgplug train' would build with no -i or --estimator.
    settings = settle(
        RunRequest(
            algo=args.algo,
            env=args.env,
            hyperparams=args.hyperparams,
            conf_file=args.conf_file,
            precision=args.precision,
        ),
        require_timesteps=False,
    )
    check_output_folders(args)
    seed = args.seed if args.seed is not None else secrets.randbelow(2**31)
    rc = settings.run_config
    expert_stats = find_run_files(expert_path).vecnormalize
    notes = []
    if expert_stats is not None:
        if uses_workers(settings.cls):
            raise PgplugError(f"{args.algo} cannot use the expert's VecNormalize statistics ({expert_stats})")
        rc.normalize = None
        rc.raw["normalize"] = rc.raw.get("normalize") or True
        notes.append(f"observations normalized with the expert's statistics {expert_stats}")
    elif rc.normalize is not None:
        rc.normalize = None
        rc.raw["normalize"] = False
        notes.append("normalize: off, as the expert has no VecNormalize statistics beside it")
    spec = env_spec(settings, seed)
    envs: list = []
    model: Any = None
    try:
        env = spec.make_vec_env(saved_statistics=compat.saved_statistics(expert_stats, args.trust_file), training=False)
        envs.append(env)
        expert, expert_algo = load_expert(expert_path, env, args.trust_file)
        model = settings.cls(
            env=spec if uses_workers(settings.cls) else env, **rc.algorithm_kwargs, seed=seed, device=args.device
        )
        notes.append(set_num_threads(args.num_threads, model.policy))
        dataset = collect_expert_data(expert, env, args.n_steps, seed=seed)
        cloning = behavioural_cloning(model, dataset, args.epochs, args.batch_size, args.learning_rate, seed=seed)
        evaluations = {}
        players = {"expert": expert, "bc": model} if args.n_eval_episodes else {}
        for label, player in players.items():  # on envs seeded alike: the same episode starts
            eval_env = spec.make_vec_env(
                n_envs=1,
                start_index=spec.n_envs,
                saved_statistics=compat.saved_statistics(expert_stats, args.trust_file),
                training=False,
            )
            envs.append(eval_env)
            evaluations[label] = evaluate(
                player, eval_env, args.n_eval_episodes, deterministic=not settings.atari, env_id=settings.env_id
            )
        name = run_name(settings.env_id)
        run_dir = new_run_dir(args.log_folder, args.algo, f"{name}_bc")
        model_path = save_model(model, run_dir, name)
    finally:
        for env in {id(e): e for e in [*envs, getattr(model, "env", None)] if e is not None}.values():
            env.close()
    (run_dir / CONFIG_FILE).write_text(yaml.safe_dump(saved_config(settings, model, seed), sort_keys=True))
    record = {
        "expert": str(expert_path),
        "expert_algorithm": expert_algo,
        "expert_steps": args.n_steps,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "losses": cloning.losses,
        "updates": cloning.n_updates,
        "action_agreement": cloning.accuracy,
        **{f"{label}_return": {"mean": r.mean, "std": r.std} for label, r in evaluations.items()},
    }
    (run_dir / BC_FILE).write_text(yaml.safe_dump(record, sort_keys=False))

    console.print(
        f"{args.algo} on {settings.env_id}, hyperparameters from {settings.source}", markup=False, soft_wrap=True
    )
    for note in notes:
        console.print(note, markup=False, highlight=False, soft_wrap=True)
    agreement = "– (continuous actions)" if cloning.accuracy is None else f"{cloning.accuracy:.1%}"
    rows = [("expert", f"{expert_path} ({expert_algo})")]
    if evaluations:
        expert_result, bc_result = evaluations["expert"], evaluations["bc"]
        share = f" ({bc_result.mean / expert_result.mean:.0%} of the expert's)" if expert_result.mean > 0 else ""
        rows += [
            ("expert return", mean_std(expert_result)),
            ("BC return", mean_std(bc_result) + share),
        ]
        if expert_result.human_normalized is not None and bc_result.human_normalized is not None:
            rows.append(
                (
                    "human-normalised",
                    f"expert {expert_result.human_normalized:.1f}%, BC {bc_result.human_normalized:.1f}%",
                )
            )
    rows += [
        ("action agreement", agreement),
        ("cloning loss", f"{cloning.losses[0]:.3f} → {cloning.losses[-1]:.3f} ({cloning.n_updates} updates)"),
        ("expert steps", f"{len(dataset):,}"),
        ("episodes", str(args.n_eval_episodes)),
    ]
    console.print(results_table(f"behavioural cloning: {args.algo} on {settings.env_id}", rows))
    console.print(f"model saved to {model_path}", markup=False, highlight=False, soft_wrap=True)
    return 0
