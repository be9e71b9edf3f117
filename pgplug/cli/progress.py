"""A rich live display of training, driven by an SB3 callback.

Shows timesteps/total, steps/s, the mean episode reward of ``model.ep_info_buffer``, elapsed time
and ETA, and any live fields the model offers through a ``live_metrics() -> dict`` method (A3C's
per-worker steps/s and policy lag, for instance).
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


class RichProgressCallback(BaseCallback):
    """Drives a rich progress display from the training loop.

    :param console: where to draw (default: stdout)
    :param refresh_interval: seconds between updates of the figures (the step loop stays cheap)
    """

    def __init__(self, console: Console | None = None, refresh_interval: float = 0.2):
        super().__init__()
        self.console = console or Console()
        self.refresh_interval = refresh_interval
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
        if now - self._last_refresh >= self.refresh_interval:
            self._last_refresh = now
            self.refresh()
        return True

    def refresh(self) -> None:
        """Update the figures from the model now."""
        if self._progress is None or self._task is None:
            return
        elapsed = max(time.monotonic() - self._start_time, 1e-9)
        speed = (self.model.num_timesteps - self._start_timesteps) / elapsed
        episodes = self.model.ep_info_buffer
        reward = f"reward {np.mean([e['r'] for e in episodes]):.4g}" if episodes else "reward –"
        self._progress.update(
            self._task, completed=self.model.num_timesteps, speed=f"{speed:,.0f} steps/s", reward=reward
        )
        live_metrics = getattr(self.model, "live_metrics", None)
        if callable(live_metrics):
            self.live_metrics.metrics = dict(live_metrics() or {})

    def _on_training_end(self) -> None:
        self.close()

    def close(self) -> None:
        """Draw the final state and stop the display (idempotent; call it after an interrupt too)."""
        if self._live is None:
            return
        self.refresh()
        self._live.stop()
        self._live = None
        if not self.console.is_terminal:
            self.console.line()  # rich leaves the last line of a non-interactive display open
