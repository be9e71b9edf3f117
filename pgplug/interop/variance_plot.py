"""The variance lab's picture (:mod:`pgplug.interop.variance`): one panel per statistic, one bar per estimator,
the bootstrap confidence interval as an error bar."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pgplug.interop.plotting import check_output, pyplot, save_figure
from pgplug.interop.variance import RATIO_BASE, VarianceReport

#: The panels: statistic, axis label, log scale.
PANELS = (
    ("ratio_to_full_return", f"tr Cov(ĝ) ÷ {RATIO_BASE}'s", True),
    ("cosine_to_reference", "cosine of mean ĝ with the reference", False),
    ("snr", "signal-to-noise ‖mean ĝ‖² ÷ tr Cov(ĝ)", True),
)


def draw_variance(report: VarianceReport, output: str | Path, title: str | None = None) -> Path:
    """Draw ``report`` to ``output`` (.png or .svg) and return its path."""
    output = check_output(output)
    plt = pyplot()
    labels = list(report.estimators)
    fig, axes = plt.subplots(1, len(PANELS), figsize=(5.2 * len(PANELS), 4.8), layout="constrained")
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    positions = np.arange(len(labels))
    for ax, (statistic, axis_label, log) in zip(axes, PANELS):
        for i, label in enumerate(labels):
            result = report.estimators[label]
            value = getattr(result, statistic)
            if value is None or not np.isfinite(value):
                continue
            interval = result.ci.get(statistic)
            colour = colours[i % len(colours)]
            ax.bar(i, value, color=colour, alpha=0.7)
            if interval is not None and all(np.isfinite(interval)):
                low, high = interval
                ax.errorbar(i, value, yerr=[[max(value - low, 0)], [max(high - value, 0)]], color="black", capsize=4)
        ax.set_xticks(positions, labels, rotation=30, ha="right", fontsize="small")
        ax.set_ylabel(axis_label)
        if log:
            ax.set_yscale("log")
        ax.grid(True, axis="y", alpha=0.3)
    s = report.settings
    where = f"weights of {report.weights}" if report.weights else "initial weights"
    fig.suptitle(
        title
        or f"Policy-gradient estimators on {report.env} ({where}): {s.batches} paired batches, seed {s.seed}, "
        f"{int(100 * s.confidence)}% bootstrap intervals",
        fontsize="medium",
    )
    return save_figure(fig, output)
