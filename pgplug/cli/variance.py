"""``pgplug variance``: how noisy and how biased each estimator's policy gradient is, at fixed weights.

Parses the command line, opens the model (a new one at its initial weights, or ``--weights``, read safely as
``pgplug eval`` reads it), and prints what :func:`pgplug.interop.variance.measure` finds: a table, and on request
the JSON (``--json``) and the picture (``--plot``, :mod:`pgplug.interop.variance_plot`). See docs/variance.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.table import Table

from pgplug.cli.models import open_model
from pgplug.cli.options import add_trust_argument, checked, positive_int, seed
from pgplug.cli.output import results_table
from pgplug.cli.run_folder import find_run_files
from pgplug.cli.threads import add_num_threads_argument, set_num_threads
from pgplug.errors import PgplugError
from pgplug.interop import compat
from pgplug.interop.plotting import check_output
from pgplug.interop.variance import (
    DEFAULT_REFERENCE,
    RATIO_BASE,
    EstimatorResult,
    VarianceReport,
    VarianceSettings,
    all_estimators,
    initial_model,
    measure,
    measured_policy,
    parse_estimator,
    unique_labels,
)
from pgplug.runtime.envs import EnvSpec
from pgplug.validation import check_positive_int, check_unit_interval, check_writable_file

HELP = "measure each estimator's gradient variance, bias and signal-to-noise at fixed policy weights"
DEFAULT_ALGO = "reinforce"


def check_batches(name: str, value: object) -> int:
    """K: a whole number ≥ 2 (a covariance needs two gradients)."""
    if check_positive_int(name, value) < 2:
        raise PgplugError(f"{name} must be at least 2 (a covariance needs two gradients), got {value!r}")
    return int(value)  # type: ignore[call-overload]


def estimator_spec(text: str):
    """An argparse type: ``NAME`` or ``NAME:KEY=VALUE[,KEY=VALUE]``, checked against the registry."""
    try:
        return parse_estimator(text)
    except PgplugError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_arguments(parser: argparse.ArgumentParser, host) -> None:
    parser.add_argument("--env", required=True, help="gymnasium env id, e.g. CartPole-v1")
    parser.add_argument(
        "--estimators",
        nargs="+",
        type=estimator_spec,
        metavar="NAME[:KEY=VALUE,...]",
        help="estimators to compare, each with its arguments if any, as NAME:KEY=VALUE,KEY=VALUE (default: all "
        f"registered: {', '.join(host.estimators.names())}); {RATIO_BASE} is always measured, as the ratios' "
        "denominator",
    )
    parser.add_argument(
        "--algo",
        help=f"the algorithm whose model holds the weights: builds the initial policy (default {DEFAULT_ALGO}), "
        f"or opens --weights (default: the one the zip names); one of {', '.join(compat.algorithm_names())}",
    )
    parser.add_argument(
        "--weights", metavar="MODEL.zip", help="measure at this saved model's weights (default: a new one's)"
    )
    parser.add_argument(
        "--batches",
        "-K",
        type=checked(check_batches, "batches", int),
        default=30,
        help="K, paired batches (default 30)",
    )
    parser.add_argument("--seed", type=seed, default=0, help="seed of the model, envs and sampling (default 0)")
    parser.add_argument("--n-envs", type=positive_int("n_envs"), default=4, help="envs, one episode each per batch (4)")
    parser.add_argument(
        "--episodes-per-env", type=positive_int("episodes_per_env"), default=1, help="episodes per env per batch (1)"
    )
    parser.add_argument(
        "--max-steps",
        type=positive_int("max_steps"),
        default=10_000,
        help="at most this many steps per env per batch; an env not done by then gives the episodes it completed",
    )
    parser.add_argument(
        "--reference",
        type=estimator_spec,
        default=None,
        metavar="NAME[:KEY=VALUE,...]",
        help=f"estimator of the high-sample reference gradient (default: {DEFAULT_REFERENCE}, unbiased and "
        "low-variance)",
    )
    parser.add_argument(
        "--reference-batches", type=positive_int("reference_batches"), help="batches of the reference (default 10·K)"
    )
    parser.add_argument(
        "--critic-batches", type=positive_int("critic_batches"), help="batches the critic is fitted on (default K)"
    )
    parser.add_argument(
        "--critic-iterations",
        type=positive_int("critic_iterations"),
        default=500,
        help="full-batch Adam steps of the critic's fit (default 500)",
    )
    parser.add_argument(
        "--gamma", type=checked(check_unit_interval, "gamma", float), help="discount (default: the model's)"
    )
    parser.add_argument(
        "--bootstrap", type=positive_int("bootstrap"), default=1000, help="bootstrap resamples of the batches (1000)"
    )
    parser.add_argument(
        "--vecnormalize",
        metavar="PATH",
        help="VecNormalize statistics the observations are normalised with (frozen; rewards stay raw) "
        "(default: the vecnormalize.pkl of --weights' run folder, if any)",
    )
    parser.add_argument("--json", metavar="FILE", help="write the results as JSON here")
    parser.add_argument(
        "--plot", metavar="FILE.png", help="draw the results with their confidence intervals (.png/.svg)"
    )
    add_trust_argument(parser)
    add_num_threads_argument(parser)


def results(report: VarianceReport) -> Table:
    s = report.settings
    table = Table(
        title=f"{report.env}: {s.batches} paired batches of {report.episodes_per_batch:.1f} episodes, "
        f"{int(100 * s.confidence)}% bootstrap intervals",
        title_justify="left",
    )
    table.add_column("estimator", no_wrap=True)
    for column in ("tr Cov(ĝ)", f"÷ {RATIO_BASE}", "cosine to reference", "SNR"):
        table.add_column(column, justify="right")
    for label, result in report.estimators.items():
        table.add_row(
            label,
            _cell(result, "trace_cov"),
            _cell(result, "ratio_to_full_return"),
            _cell(result, "cosine_to_reference", ".3f"),
            _cell(result, "snr"),
        )
    return table


def _cell(result: EstimatorResult, statistic: str, fmt: str = ".3g") -> str:
    value = getattr(result, statistic)
    if value is None:
        return "–"
    interval = result.ci.get(statistic)
    if interval is None:
        return f"{value:{fmt}}"
    return f"{value:{fmt}}\n[{interval[0]:{fmt}}, {interval[1]:{fmt}}]"


def statistics_file(given: str | None, model_path: Path | None) -> Path | None:
    """``--vecnormalize``, or the statistics saved with the model (as ``pgplug eval`` finds them), or None."""
    if given is not None:
        if not Path(given).is_file():
            raise PgplugError(f"--vecnormalize {given!r} is not a file")
        return Path(given)
    return find_run_files(model_path).vecnormalize if model_path is not None else None


def run(args: argparse.Namespace) -> int:
    estimators = args.estimators or all_estimators()
    unique_labels(estimators)
    if args.json is not None:
        check_writable_file("--json", args.json)
    if args.plot is not None:
        check_output(args.plot)
        check_writable_file("--plot", args.plot)
    settings = VarianceSettings(
        batches=args.batches,
        seed=args.seed,
        reference_batches=args.reference_batches or 0,
        critic_batches=args.critic_batches or 0,
        critic_iterations=args.critic_iterations,
        episodes_per_env=args.episodes_per_env,
        max_steps=args.max_steps,
        bootstrap=args.bootstrap,
        **({"reference": args.reference} if args.reference is not None else {}),
    )
    console = Console()
    model_path = compat.resolve_path(args.weights) if args.weights is not None else None
    stats = statistics_file(args.vecnormalize, model_path)
    spec = EnvSpec.for_env_id(args.env, n_envs=args.n_envs, seed=args.seed)
    env = spec.make_vec_env(saved_statistics=compat.saved_statistics(stats, args.trust_file), training=False)
    try:
        if model_path is not None:
            model, algo = open_model(model_path, args.algo, "cpu", lambda: env, trust=args.trust_file)
        else:
            algo = args.algo or DEFAULT_ALGO
            model = initial_model(algo, env, args.seed, spec)
        policy = measured_policy(model, env, args.env)
        console.print(set_num_threads(args.num_threads, policy), markup=False, highlight=False)
        gamma = args.gamma if args.gamma is not None else float(model.gamma)
        report = measure(policy, env, gamma, estimators, settings, args.env)
    finally:
        env.close()
    report.algo, report.weights, report.vecnormalize = algo, args.weights, None if stats is None else str(stats)
    where = f"weights of {args.weights} ({algo})" if args.weights else f"initial weights of a new {algo} model"
    if stats is not None:
        where += f", observations normalised with {stats}"
    fit = report.critic_explained_variance
    rows = [
        ("policy", where),
        ("episodes", f"mean length {report.mean_episode_length:.1f}, γ = {gamma:g}"),
        ("reference", f"{settings.reference.label} over {report.reference_batches} batches"),
        (
            "critic",
            "not needed" if fit is None else f"fitted on {report.critic_batches} batches, explained variance {fit:.2f}",
        ),
    ]
    console.print(results_table("variance lab", rows))
    console.print(results(report))
    if args.json is not None:
        console.print(f"json: {report.write_json(args.json)}", markup=False, highlight=False, soft_wrap=True)
    if args.plot is not None:
        from pgplug.interop.variance_plot import draw_variance

        console.print(f"plot: {draw_variance(report, args.plot)}", markup=False, highlight=False, soft_wrap=True)
    return 0
