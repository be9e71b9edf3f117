"""Drawing learning curves (:mod:`pgplug.interop.curves`) to PNG or SVG with matplotlib, without a screen.

One panel per kind of curve (training episodes, evaluations), one colour per setting (algorithm and env), the
mean over seeds as a line and the spread over seeds as a band.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

from matplotlib.ticker import EngFormatter

from pgplug.errors import PgplugError, PgplugWarning, one_line
from pgplug.interop.curves import (
    BANDS,
    X_AXES,
    Group,
    NoCurveError,
    RunCurves,
    group_runs,
    read_run,
    smoothed,
    summarise,
)

#: The figure formats, by the output's suffix.
FORMATS = (".png", ".svg")
WHAT = ("episodes", "eval", "both")
BAND_LABELS = {"minmax": "band: min–max over seeds", "std": "band: mean ± 1 std over seeds", "none": ""}


def check_output(path: str | Path) -> Path:
    """The output path, if its suffix names a format matplotlib writes here (.png or .svg)."""
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise PgplugError(f"cannot write {str(path)!r}: unknown suffix {path.suffix!r}; valid: {', '.join(FORMATS)}")
    return path


def pyplot():
    """matplotlib's pyplot on the Agg backend (files only, no screen)."""
    import matplotlib

    matplotlib.use("Agg")  # no screen: render to files only
    from matplotlib import pyplot as plt

    return plt


def save_figure(fig, output: Path) -> Path:
    """Write ``fig`` to ``output`` (its folder made if missing), close it, and return ``output``."""
    output.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(output, dpi=100)
    finally:
        pyplot().close(fig)
    return output


def _time_unit(groups: Sequence[Group]) -> tuple[float, str]:
    """Seconds, minutes or hours, whichever keeps the longest run's numbers short."""
    curves = [c for g in groups for r in g.runs for c in (r.episodes, r.evaluations) if c is not None]
    longest = max((float(c.seconds[-1]) for c in curves if c.seconds is not None and len(c.seconds)), default=0.0)
    if longest > 2 * 3600:
        return 3600.0, "hours"
    if longest > 600:
        return 60.0, "minutes"
    return 1.0, "seconds"


def _panels(groups: Sequence[Group], what: str) -> list[str]:
    kinds = ["episodes", "eval"] if what == "both" else [what]
    available = [k for k in kinds if any(_curve(r, k) is not None for g in groups for r in g.runs)]
    if not available:
        names = {"episodes": "training episodes (*.monitor.csv)", "eval": "evaluations (evaluations.npz)"}
        missing = " or ".join(names[k] for k in kinds)
        raise PgplugError(f"none of the runs has {missing}")
    return available


def _curve(run: RunCurves, kind: str):
    return run.episodes if kind == "episodes" else run.evaluations


def _label(group: Group) -> str:
    n = len(group.runs)
    return f"{group.setting} ({n} seeds)" if n > 1 else f"{group.setting} (1 run)"


def _eval_label(groups: Sequence[Group]) -> str:
    counts = {r.eval_episodes for g in groups for r in g.runs if r.evaluations is not None}
    if len(counts) == 1:
        return f"evaluation return (mean of {counts.pop()} episodes)"
    return "evaluation return (mean of each evaluation's episodes)"


def draw(
    groups: Sequence[Group],
    output: str | Path,
    *,
    what: str = "both",
    x: str = "steps",
    band: str = "minmax",
    window: int = 50,
    title: str | None = None,
) -> Path:
    """Draw the groups' curves to ``output`` (.png or .svg) and return its path.

    :param what: ``episodes`` (training episodes' returns, a rolling mean over ``window`` episodes), ``eval``
        (the periodic evaluations' mean returns) or ``both`` (side by side)
    :param x: ``steps`` (timesteps) or ``time`` (wall-clock time since the run started)
    :param band: the spread over seeds: ``minmax``, ``std`` or ``none``
    """
    output = check_output(output)
    if what not in WHAT:
        raise PgplugError(f"unknown --what {what!r}; valid: {', '.join(WHAT)}")
    if x not in X_AXES:
        raise PgplugError(f"unknown --x {x!r}; valid: {', '.join(X_AXES)}")
    if band not in BANDS:
        raise PgplugError(f"unknown band {band!r}; valid: {', '.join(BANDS)}")
    kinds = _panels(groups, what)
    plt = pyplot()
    scale, unit = _time_unit(groups) if x == "time" else (1.0, "")
    fig, axes = plt.subplots(1, len(kinds), figsize=(6.4 * len(kinds), 4.8), squeeze=False, layout="constrained")
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, kind in zip(axes[0], kinds):
        for index, group in enumerate(groups):
            curves = [_curve(r, kind) for r in group.runs]
            curves = [c for c in curves if c is not None]
            if not curves:
                continue
            if kind == "episodes":
                curves = [smoothed(c, window) for c in curves]
            if any(c.x(x) is None for c in curves):
                raise PgplugError(
                    f"no wall-clock times for the evaluations of {group.setting}: they are read off the run's "
                    "Monitor files, which it lacks; plot with --x steps"
                )
            summary = summarise(curves, x, band)
            colour = colours[index % len(colours)]
            xs = summary.x / scale
            marker = "o" if kind == "eval" and len(xs) <= 30 else None
            ax.plot(xs, summary.mean, color=colour, marker=marker, markersize=3, label=_label(group))
            if band != "none" and len(curves) > 1:
                ax.fill_between(xs, summary.lower, summary.upper, color=colour, alpha=0.2, linewidth=0)
        if x == "steps":
            ax.set_xlabel("timesteps")
            ax.xaxis.set_major_formatter(EngFormatter(sep=""))  # 20k, 1.5M
        else:
            ax.set_xlabel(f"wall-clock time ({unit})")
        if kind == "episodes":
            ax.set_ylabel(f"training episode return (mean of the last {window})")
            ax.set_title("training episodes")
        else:
            ax.set_ylabel(_eval_label(groups))
            ax.set_title("periodic evaluations")
        ax.grid(True, alpha=0.3)
    # One legend for all panels (a setting has one colour everywhere), under them, clear of the curves.
    handles, labels = {}, {}
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
            labels.setdefault(label, label)
    several = any(len(g.runs) > 1 for g in groups) and band != "none"
    fig.legend(
        list(handles.values()),
        list(labels.values()),
        loc="outside lower center",
        ncol=min(len(handles), 4),
        title=BAND_LABELS[band] if several else None,
        fontsize="small",
        title_fontsize="small",
        frameon=False,
    )
    envs = sorted({r.env for g in groups for r in g.runs})
    fig.suptitle(title or f"Learning curves on {', '.join(envs)}")
    return save_figure(fig, output)


def plot_runs(run_dirs: Sequence[str | Path], output: str | Path, **kwargs) -> Path:
    """Read run folders (:func:`pgplug.interop.curves.read_run`), group them by setting and :func:`draw` them."""
    check_output(output)
    return draw(group_runs(read_run(d) for d in run_dirs), output, **kwargs)


def save_run_curve(run_dir: str | Path, name: str = "curve.png") -> Path | None:
    """Draw a run's own curves into ``<run_dir>/<name>``; None when there is nothing to draw yet (a run too short
    for an episode to end), and on any failure a one-line warning and None.

    ``pgplug train`` calls this after the model is saved: a picture never costs a run.
    """
    try:
        return plot_runs([run_dir], Path(run_dir) / name, what="both")
    except NoCurveError:
        return None
    except Exception as exc:
        warnings.warn(f"no learning curve for {run_dir}: {one_line(exc)}", PgplugWarning, stacklevel=2)
        return None


__all__ = ["FORMATS", "WHAT", "check_output", "draw", "plot_runs", "save_run_curve"]
