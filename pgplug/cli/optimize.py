"""``pgplug train --optimize``: rl-baselines3-zoo's hyperparameter search, on Optuna, with the estimator searched too.

Each trial samples the algorithm's space (:mod:`pgplug.interop.search_space`: the zoo's ranges, plus a categorical over
the estimators that fit, with their own arguments) and trains as ``pgplug train`` does (:mod:`pgplug.cli.trials`).
The report: the best trials, the best hyperparameters as a config entry ``-conf`` reads back, the best estimator for
the env, and every trial as CSV (the zoo's ``report_*.csv``) in the log folder.
"""

from __future__ import annotations

import argparse
import secrets
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

from pgplug.cli.options import check_output_folders, non_negative_int, positive_int
from pgplug.cli.settings import settle
from pgplug.cli.signals import exit_code
from pgplug.cli.train import run_request
from pgplug.cli.trials import ESTIMATOR, FAILURE, HYPERPARAMS, TrialPlan, timed
from pgplug.contracts.registries import get_host
from pgplug.errors import PgplugError
from pgplug.interop import search_space
from pgplug.runtime.envs import run_name

SAMPLERS = ("random", "tpe", "auto")
PRUNERS = ("halving", "median", "none")
INSTALL = "pip install 'pgplug[optimize]'"
#: Rows of the best-trials table.
TOP = 10


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The zoo's hyperparameter-search flags, as an option group of ``pgplug train``."""
    group = parser.add_argument_group(
        "hyperparameter search", f"--optimize searches the algorithm's hyperparameters and estimator ({INSTALL})"
    )
    group.add_argument(
        "-optimize",
        "--optimize",
        "--optimize-hyperparameters",
        dest="optimize",
        action="store_true",
        help="run a hyperparameter search instead of one training run",
    )
    group.add_argument("--n-trials", type=positive_int("n_trials"), default=500, help="trials to run (default: 500)")
    group.add_argument(
        "--max-total-trials",
        type=positive_int("max_total_trials"),
        help="stop when the study (all runs sharing --storage) has this many trials; replaces --n-trials",
    )
    group.add_argument(
        "--n-jobs", type=positive_int("n_jobs"), default=1, help="trials at a time, in threads (default: 1)"
    )
    group.add_argument("--sampler", choices=SAMPLERS, default="tpe", help="Optuna sampler (default: tpe)")
    group.add_argument("--pruner", choices=PRUNERS, default="median", help="Optuna pruner (default: median)")
    group.add_argument(
        "--n-startup-trials",
        type=non_negative_int("n_startup_trials"),
        default=10,
        help="random trials before the sampler and the median pruner act (default: 10)",
    )
    group.add_argument(
        "--n-evaluations",
        type=positive_int("n_evaluations"),
        help="evaluations per trial, every n_timesteps / N steps (default: one per 100k timesteps, at least 1)",
    )
    group.add_argument(
        "--storage", help="Optuna storage to keep and resume the study: sqlite:///study.db, a .log journal file, ..."
    )
    group.add_argument("--study-name", help="the study's name in --storage (default: <algo>_<env>)")
    group.add_argument(
        "--optimization-log-path", metavar="DIR", help="keep each trial's evaluations and best model in DIR/trial_<k>"
    )


# -- the study -----------------------------------------------------------------------------------


def import_optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise PgplugError(f"--optimize needs Optuna: {INSTALL}") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


def make_sampler(optuna: Any, name: str, seed: int, n_startup_trials: int) -> Any:
    """The zoo's samplers: ``tpe`` multivariate (grouped, as the estimator's arguments depend on the estimator)."""
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "tpe":
        return optuna.samplers.TPESampler(n_startup_trials=n_startup_trials, seed=seed, multivariate=True, group=True)
    try:
        import optunahub
    except ImportError:
        raise PgplugError("--sampler auto needs OptunaHub's AutoSampler: pip install optunahub") from None
    return optunahub.load_module("samplers/auto_sampler").AutoSampler(seed=seed)


def make_pruner(optuna: Any, name: str, n_startup_trials: int, n_evaluations: int) -> Any:
    """The zoo's pruners."""
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=4, min_early_stopping_rate=0)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=n_startup_trials, n_warmup_steps=n_evaluations // 3)
    return optuna.pruners.NopPruner()


def open_study(optuna: Any, url: str | None, study_name: str, sampler: Any, pruner: Any) -> Any:
    """A new study, or the one ``storage`` keeps under ``study_name`` (resumed). A ``.log`` path is a journal file,
    as in the zoo; anything else is an Optuna storage URL, refused in one line when Optuna cannot open it. The folder
    of a journal or SQLite file is created."""
    journal = url is not None and url.endswith(".log")
    path = (
        url.removeprefix("sqlite:///") if url is not None and url.startswith("sqlite:///") else url if journal else None
    )
    storage: Any = url
    try:
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        if journal:
            storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(url))
        return optuna.create_study(
            storage=storage,
            sampler=sampler,
            pruner=pruner,
            study_name=study_name,
            direction="maximize",
            load_if_exists=True,
        )
    except Exception as exc:  # SQLAlchemy's and the drivers' errors have no common base
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise PgplugError(f"--storage {url!r}: Optuna cannot open it ({type(exc).__name__}: {detail})") from None


def check_arguments(args: argparse.Namespace) -> None:
    for flag, value in (("-i/--trained-agent", args.trained_agent), ("--bc-warmstart", args.bc_warmstart)):
        if value is not None:
            raise PgplugError(f"--optimize trains new models from sampled hyperparameters, so it cannot take {flag}")
    search_space.space_of(get_host().algorithms.get(args.algo))


def run(args: argparse.Namespace) -> int:
    optuna = import_optuna()
    check_arguments(args)
    settings = settle(run_request(args))
    check_output_folders(args)
    import torch

    torch.set_num_threads(args.num_threads if args.num_threads > 0 else 1)  # trials run side by side (--n-jobs)
    console = Console()
    n_timesteps = settings.run_config.n_timesteps
    n_evaluations = args.n_evaluations or max(1, n_timesteps // 100_000)
    seed = args.seed if args.seed is not None else secrets.randbelow(2**31)
    plan = TrialPlan(
        algo=args.algo,
        settings=settings,
        seed=seed,
        n_evaluations=n_evaluations,
        eval_episodes=args.eval_episodes,
        device=args.device,
        verbose=args.verbose,
        vec_env=args.vec_env,
        log_path=None if args.optimization_log_path is None else Path(args.optimization_log_path),
    )
    study_name = args.study_name or f"{args.algo}_{run_name(settings.env_id)}"
    sampler = make_sampler(optuna, args.sampler, seed, args.n_startup_trials)
    pruner = make_pruner(optuna, args.pruner, args.n_startup_trials, n_evaluations)
    study = open_study(optuna, args.storage, study_name, sampler, pruner)
    already = len(study.trials)
    console.print(
        f"searching {args.algo} on {settings.env_id} (hyperparameters over {settings.source}): "
        f"{n_timesteps:,} timesteps and {n_evaluations} evaluation(s) of {args.eval_episodes} episodes per trial, "
        f"sampler {args.sampler}, pruner {args.pruner}, seed {seed}, study {study_name!r}"
        + (f" (resumed: {already} trials)" if already else ""),
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    if args.tensorboard_log:
        console.print("note: no TensorBoard logs during a search (as in the zoo)", markup=False)
    interrupted = optimize(optuna, study, plan, args, trial_printer(console))
    report(study, plan, args, console)
    return 0 if interrupted is None else exit_code(interrupted)


def optimize(optuna: Any, study: Any, plan: TrialPlan, args: argparse.Namespace, printer: Callable) -> Any:
    """Run the trials (``--n-trials``, or up to ``--max-total-trials`` in the whole study); the KeyboardInterrupt
    that stopped them early, if one did (the trials so far are reported)."""
    callbacks = [printer]
    n_trials = args.n_trials
    if args.max_total_trials is not None:
        counted = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.PRUNED)
        if len(study.get_trials(states=counted)) >= args.max_total_trials:
            return None
        callbacks.append(optuna.study.MaxTrialsCallback(args.max_total_trials, states=counted))
        n_trials = None
    try:
        study.optimize(
            lambda trial: timed(trial, plan),
            n_trials=n_trials,
            n_jobs=args.n_jobs,
            callbacks=callbacks,
            gc_after_trial=True,
        )
    except KeyboardInterrupt as exc:
        return exc
    return None


# -- the report ----------------------------------------------------------------------------------


def number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def estimator_label(trial: Any) -> str:
    """``gae(gae_lambda=0.9712)``: the estimator the trial's model used."""
    estimator = trial.user_attrs.get(ESTIMATOR)
    if estimator is None:
        hyperparams = trial.user_attrs.get(HYPERPARAMS, {})
        estimator = {"name": hyperparams.get("estimator", "?"), "kwargs": hyperparams.get("estimator_kwargs") or {}}
    kwargs = ", ".join(f"{k}={number(v)}" for k, v in (estimator["kwargs"] or {}).items())
    return f"{estimator['name']}({kwargs})" if kwargs else estimator["name"]


def searched_values(trial: Any, algorithm: type) -> str:
    """The trial's searched hyperparameters besides the estimator, compactly (a network by its label)."""
    hyperparams = trial.user_attrs.get(HYPERPARAMS, {})
    parts = []
    for key in algorithm.search_space:
        head, _, leaf = key.partition(".")
        value = trial.params.get(leaf) if leaf else hyperparams.get(head)
        if value is not None:
            parts.append(f"{leaf or head}={number(value)}")
    return " ".join(parts)


def trial_printer(console: Console) -> Callable[[Any, Any], None]:
    """An Optuna callback printing one line per finished trial."""

    def show(study: Any, trial: Any) -> None:
        result = trial.user_attrs.get(FAILURE, trial.state.name.lower())
        if trial.value is not None:
            result = f"{trial.value:.2f}" if trial.state.name == "COMPLETE" else f"{result} ({trial.value:.2f})"
        seconds = trial.user_attrs.get("wall_time")
        took = "" if seconds is None else f" in {seconds:.0f} s"
        line = f"trial {trial.number}: {result} with {estimator_label(trial)}{took}"
        console.print(line, markup=False, highlight=False, soft_wrap=True)

    return show


def best_trials_table(trials: list[Any], algorithm: type) -> Table:
    table = Table(title="best trials", title_justify="left")
    for column in ("trial", "mean reward", "estimator", "hyperparameters"):
        table.add_column(column, overflow="fold")
    for trial in trials[:TOP]:
        values = searched_values(trial, algorithm)
        table.add_row(str(trial.number), f"{trial.value:.2f}", estimator_label(trial), values)
    return table


def best_config(env_id: str, trial: Any, n_timesteps: int) -> str:
    """The best trial's hyperparameters as a config entry in the zoo's format (``-conf`` reads it back)."""
    hyperparams = dict(trial.user_attrs[HYPERPARAMS])
    hyperparams["n_timesteps"] = n_timesteps
    estimator = trial.user_attrs.get(ESTIMATOR)
    if estimator is not None:
        hyperparams.update(estimator=estimator["name"], estimator_kwargs=estimator["kwargs"])
    return yaml.safe_dump({env_id: dict(sorted(hyperparams.items()))}, sort_keys=False, default_flow_style=None)


def best_estimator_line(env_id: str, complete: list[Any], all_trials: list[Any]) -> str:
    """The best estimator for the env, with its arguments and score, and each other estimator's best score."""
    best_by_name: dict[str, Any] = {}
    for trial in complete:  # sorted best first
        best_by_name.setdefault(trial.user_attrs.get(ESTIMATOR, {}).get("name", "?"), trial)
    (_, best), *others = best_by_name.items()
    parts = [f"{estimator_label(t)} {t.value:.2f} (trial {t.number})" for _, t in others]
    tried = {trial.user_attrs.get(HYPERPARAMS, {}).get("estimator") for trial in all_trials}
    parts += [f"{name}: no trial completed" for name in sorted(n for n in tried if n and n not in best_by_name)]
    line = f"best estimator for {env_id}: {estimator_label(best)}, mean reward {best.value:.2f} (trial {best.number})"
    return line + (f"; the others' best: {', '.join(parts)}" if parts else "")


def write_csv(study: Any, path: Path) -> None:
    """Every trial, one row each: Optuna's ``trials_dataframe``, as the zoo's ``report_*.csv``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    study.trials_dataframe().to_csv(path)


def report(study: Any, plan: TrialPlan, args: argparse.Namespace, console: Console) -> None:
    """Print the best trials, the best estimator and the best config; write the CSV and the config file."""
    import optuna

    settings = plan.settings
    all_trials = study.trials
    states = [t.state for t in all_trials]
    complete = sorted(
        (t for t in all_trials if t.state == optuna.trial.TrialState.COMPLETE and HYPERPARAMS in t.user_attrs),
        key=lambda t: t.value,
        reverse=True,
    )
    counts = ", ".join(f"{states.count(s)} {s.name.lower()}" for s in optuna.trial.TrialState if states.count(s))
    n_timesteps = settings.run_config.n_timesteps
    stem = (
        f"report_{run_name(settings.env_id)}_{len(all_trials)}-trials-{n_timesteps}-{args.sampler}-{args.pruner}"
        f"_{int(time.time())}"
    )
    csv_path = Path(args.log_folder) / args.algo / f"{stem}.csv"
    if all_trials:
        write_csv(study, csv_path)
    console.print(f"study {study.study_name!r}: {len(all_trials)} trials ({counts or 'none'})", markup=False)
    if not complete:
        failures = [t.user_attrs.get(FAILURE) for t in all_trials if t.user_attrs.get(FAILURE)]
        last = f"; the last: {failures[-1]}" if failures else ""
        raise PgplugError(f"no trial of study {study.study_name!r} completed{last}")
    console.print(best_trials_table(complete, settings.cls))
    line = best_estimator_line(settings.env_id, complete, all_trials)
    console.print(line, markup=False, highlight=False, soft_wrap=True)
    config = best_config(settings.env_id, complete[0], n_timesteps)
    config_path = csv_path.with_suffix(".yml")
    config_path.write_text(config)
    console.print(f"best hyperparameters (pass back with -conf {config_path}):", markup=False, soft_wrap=True)
    console.print(config.rstrip(), markup=False, highlight=False, soft_wrap=True)
    console.print(f"all trials: {csv_path}", markup=False, highlight=False, soft_wrap=True)
