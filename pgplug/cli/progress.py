"""Progress of training and of evaluations: a rich live display on a terminal, plain lines elsewhere.

Training (:class:`RichProgressCallback`, an SB3 callback) shows timesteps/total, steps/s, the mean episode
reward of ``model.ep_info_buffer``, the last periodic evaluation, elapsed time and ETA, and any live fields the
model offers through a ``live_metrics() -> dict`` method (A3C's per-worker steps/s and policy lag, for instance).
An evaluation (:class:`EvaluationProgress`) shows episodes done/total and the last return.

When stdout is not a terminal (CI, Slurm, nohup, a pipe) both print a plain line every ``plain_interval``
seconds (10 by default) instead: a log file gets a readable history, not a redrawn display.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from stable_baselines3.common.callbacks import BaseCallback


def format_value(value: Any) -> str:
    """Compact text for one live metric: numbers to 4 significant digits, sequences joined."""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.4g}"
    if isinstance(value, Mapping):
        return "  ".join(f"{k}={format_value(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple, np.ndarray)):
        return " ".join(format_value(v) for v in value)
    return str(value)


class LiveMetrics:
    """The extra rows under the progress bar: one ``name  value`` line per live metric."""

    def __init__(self) -> None:
        self.metrics: dict[str, Any] = {}

    def __rich__(self) -> Table:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="dim")
        table.add_column()
        for name, value in self.metrics.items():
            table.add_row(str(name), format_value(value))
        return table


#: Seconds between two plain progress lines when stdout is not a terminal.
PLAIN_INTERVAL = 10.0


def evaluation_text(evaluation: Any) -> str | None:
    """``eval 123.4 at 50,000`` from an SB3 ``EvalCallback`` that has evaluated, else None."""
    if evaluation is None or not getattr(evaluation, "evaluations_timesteps", None):
        return None
    return f"eval {evaluation.last_mean_reward:.4g} at {evaluation.evaluations_timesteps[-1]:,}"


class RichProgressCallback(BaseCallback):
    """Drives a rich progress display (plain lines when the console is not a terminal) from the training loop.

    :param console: where to draw (default: stdout)
    :param refresh_interval: seconds between updates of the figures (the step loop stays cheap)
    :param evaluation: the run's ``EvalCallback``, whose last result is shown
    :param plain_interval: seconds between plain lines, when the console is not a terminal
    """

    def __init__(
        self,
        console: Console | None = None,
        refresh_interval: float = 0.2,
        evaluation: Any = None,
        plain_interval: float = PLAIN_INTERVAL,
    ):
        super().__init__()
        self.console = console or Console()
        self.refresh_interval = refresh_interval
        self.evaluation = evaluation
        self.plain_interval = plain_interval
        self._plain = False
        self._total = 0
        self.live_metrics = LiveMetrics()
        self._progress: Progress | None = None
        self._live: Live | None = None
        self._task = None
        self._last_refresh = 0.0
        self._start_time = 0.0
        self._start_timesteps = 0

    def _on_training_start(self) -> None:
        total = int(self.locals.get("total_timesteps", self.model._total_timesteps))
        self._start_timesteps = self.model.num_timesteps
        self._start_time = time.monotonic()
        self._total = total
        self._plain = not self.console.is_terminal
        if self._plain:
            self._last_refresh = self._start_time
            return
        self._progress = Progress(
            BarColumn(bar_width=16),
            MofNCompleteColumn(),
            TextColumn("{task.fields[speed]}"),
            TextColumn("{task.fields[reward]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=self.console,
            auto_refresh=False,
        )
        self._task = self._progress.add_task("train", total=total, completed=self._start_timesteps, speed="", reward="")
        self._live = Live(Group(self._progress, self.live_metrics), console=self.console, refresh_per_second=4)
        self._live.start()

    def _on_step(self) -> bool:
        now = time.monotonic()
        if now - self._last_refresh >= (self.plain_interval if self._plain else self.refresh_interval):
            self._last_refresh = now
            self.refresh()
        return True

    def _figures(self) -> tuple[str, str, str]:
        elapsed = max(time.monotonic() - self._start_time, 1e-9)
        speed = (self.model.num_timesteps - self._start_timesteps) / elapsed
        episodes = self.model.ep_info_buffer
        reward = f"reward {np.mean([e['r'] for e in episodes]):.4g}" if episodes else "reward –"
        return f"{speed:,.0f} steps/s", reward, evaluation_text(self.evaluation) or ""

    def plain_line(self) -> str:
        """One line of progress: ``steps 12,000/100,000 (12%)  1,234 steps/s  reward 45.6  eval 50 at 10,000  31 s``,
        then the model's live metrics as ``name=value``."""
        speed, reward, evaluation = self._figures()
        done = self.model.num_timesteps
        share = f" ({done / self._total:.0%})" if self._total else ""
        elapsed = time.monotonic() - self._start_time
        parts = [f"steps {done:,}/{self._total:,}{share}", speed, reward, evaluation, f"{elapsed:.0f} s"]
        live_metrics = getattr(self.model, "live_metrics", None)
        if callable(live_metrics):
            parts.append(format_value(dict(live_metrics() or {})))
        return "  ".join(p for p in parts if p)

    def refresh(self) -> None:
        """Update the figures from the model now (print a line, when the console is not a terminal)."""
        if self._plain:
            self.console.print(self.plain_line(), markup=False, highlight=False, soft_wrap=True)
            return
        if self._progress is None or self._task is None:
            return
        speed, reward, evaluation = self._figures()
        self._progress.update(
            self._task, completed=self.model.num_timesteps, speed=speed, reward=f"{reward}  {evaluation}".rstrip()
        )
        live_metrics = getattr(self.model, "live_metrics", None)
        if callable(live_metrics):
            self.live_metrics.metrics = dict(live_metrics() or {})

    def _on_training_end(self) -> None:
        self.close()

    def close(self) -> None:
        """Draw the final state and stop the display (idempotent; call it after an interrupt too)."""
        if self._plain:
            self._plain = False  # the last line, once
            self.console.print(self.plain_line(), markup=False, highlight=False, soft_wrap=True)
            return
        if self._live is None:
            return
        self.refresh()
        self._live.stop()
        self._live = None
        if not self.console.is_terminal:
            self.console.line()  # rich leaves the last line of a non-interactive display open


class EvaluationProgress:
    """Episodes done/total and the last return of an evaluation: a rich bar on a terminal, plain lines elsewhere
    (one per episode, at most one per ``plain_interval`` seconds, and the last).

    Use as a context manager; pass :meth:`episode` as the ``on_episode`` hook of
    :func:`pgplug.interop.evaluation.evaluate`.
    """

    def __init__(self, total: int | None, console: Console | None = None, plain_interval: float = PLAIN_INTERVAL):
        self.total = total
        self.console = console or Console()
        self.plain_interval = plain_interval
        self._progress: Progress | None = None
        self._task = None
        self._last_line = 0.0

    def __enter__(self) -> EvaluationProgress:
        if self.console.is_terminal:
            self._progress = Progress(
                TextColumn("evaluation"),
                BarColumn(bar_width=16),
                MofNCompleteColumn(),
                TextColumn("episodes  {task.fields[last]}"),
                TimeElapsedColumn(),
                console=self.console,
                transient=True,
            )
            self._task = self._progress.add_task("evaluation", total=self.total, last="")
            self._progress.start()
        self._last_line = time.monotonic()
        return self

    def episode(self, done: int, episode_return: float, truncated: bool = False) -> None:
        """An episode ended: ``done`` episodes so far, this one's return, whether a step limit cut it."""
        last = f"last return {episode_return:.4g}{' (truncated)' if truncated else ''}"
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=done, last=last)
            return
        now = time.monotonic()
        if (self.total is not None and done >= self.total) or now - self._last_line >= self.plain_interval:
            self._last_line = now
            line = f"evaluation: {done}{'' if self.total is None else f'/{self.total}'} episodes, {last}"
            self.console.print(line, markup=False, highlight=False, soft_wrap=True)

    def __exit__(self, *exc_info: object) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
