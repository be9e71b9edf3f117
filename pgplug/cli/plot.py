"""``pgplug plot``: learning curves of one or many runs (pgplug's or rl-baselines3-zoo's) as a PNG or SVG.

Reads each run folder's Monitor files (training episodes) and ``evaluations.npz`` (periodic evaluations);
runs of one setting (algorithm and env from the folder names ``<algo>/<env>_<k>``, other seeds) are drawn as
their mean with the spread over seeds as a band (:mod:`pgplug.interop.curves`, :mod:`pgplug.interop.plotting`).
"""

from __future__ import annotations

import argparse

from rich.console import Console

from pgplug.cli.options import positive_int

HELP = "draw learning curves of runs (training episodes, evaluations) to a PNG or SVG"


def add_arguments(parser: argparse.ArgumentParser, host) -> None:
    from pgplug.interop.curves import BANDS, X_AXES
    from pgplug.interop.plotting import WHAT

    parser.add_argument("runs", nargs="+", metavar="RUN", help="run folders, <log-folder>/<algo>/<env>_<k>")
    parser.add_argument("-o", "--output", required=True, metavar="FILE", help="the picture: FILE.png or FILE.svg")
    parser.add_argument(
        "--what",
        choices=WHAT,
        default="both",
        help="training episodes (Monitor files), periodic evaluations (evaluations.npz) or both (default)",
    )
    parser.add_argument(
        "--x", choices=X_AXES, default="steps", help="x axis: timesteps (default) or wall-clock time since the start"
    )
    parser.add_argument(
        "--band",
        choices=BANDS,
        default="minmax",
        help="spread over the seeds of a setting: min–max (default), mean ± 1 std, or none",
    )
    parser.add_argument(
        "--window",
        type=positive_int("window"),
        default=50,
        help="training episodes: rolling mean over this many episodes (default: 50)",
    )
    parser.add_argument("--title", help="the figure's title (default: 'Learning curves: <envs>')")


def run(args: argparse.Namespace) -> int:
    from pgplug.interop.curves import group_runs, read_run
    from pgplug.interop.plotting import check_output, draw

    check_output(args.output)
    groups = group_runs(read_run(path) for path in args.runs)
    path = draw(groups, args.output, what=args.what, x=args.x, band=args.band, window=args.window, title=args.title)
    settings = ", ".join(f"{g.setting} ({len(g.runs)} run{'s' if len(g.runs) > 1 else ''})" for g in groups)
    Console().print(f"{path}: {settings}", markup=False, highlight=False, soft_wrap=True)
    return 0
