"""Monitor files for algorithms whose workers build their own envs (A3C).

A synchronous run's envs write ``<run>/<rank>.monitor.csv`` through SB3's ``Monitor``. An A3C worker's envs
live in another process (or on another node) and write nothing; the workers report their finished episodes
(``{"r", "l", "t"}``) to the driver, which hands each report to the callbacks once (``on_rollout_end``). This
callback writes them in SB3's Monitor format, so ``pgplug plot`` and SB3's ``load_results`` read an A3C run
like any other.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.monitor import ResultsWriter

#: The file name: one file for all workers (their episode times share the run's clock).
WORKERS_MONITOR = "workers.monitor.csv"


class WorkerEpisodesMonitor(BaseCallback):
    """Appends the episodes of each worker report (``locals["report"]["episodes"]``) to one Monitor csv file.

    :param run_dir: the run's folder
    :param env_id: written into the file's header, as ``Monitor`` does
    """

    def __init__(self, run_dir: str | Path, env_id: str) -> None:
        super().__init__()
        self.path = Path(run_dir) / WORKERS_MONITOR
        self.env_id = env_id
        self._writer: ResultsWriter | None = None

    def _on_training_start(self) -> None:
        self._writer = ResultsWriter(str(self.path), header={"t_start": time.time(), "env_id": self.env_id})

    def _on_rollout_end(self) -> None:
        report: Any = self.locals.get("report")
        if self._writer is None or not isinstance(report, dict):
            return
        for episode in report.get("episodes", ()):
            self._writer.write_row({"r": episode["r"], "l": episode["l"], "t": episode["t"]})

    def _on_step(self) -> bool:
        return True

    def _on_training_end(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
