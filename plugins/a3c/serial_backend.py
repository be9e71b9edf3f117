"""The serial backend: one worker in the driver, one update per poll: deterministic and debuggable.

Its store is the shared-memory one over the driver's own policy, so a serial A3C equals A2C with the same
envs update for update, bitwise.
"""

from __future__ import annotations

import torch.multiprocessing as mp

from pgplug.contracts.backend import GlobalModel, Message, ParameterStore, WorkerBackend, WorkerJob, WorkerLoop
from pgplug.plugins.a3c.shared_memory import SharedMemoryStore


class SerialBackend(WorkerBackend):
    """One worker in the driver's process, one update per poll: deterministic and debuggable."""

    name = "serial"
    max_workers = 1
    runs_in_driver = True  # the callbacks run between its updates: it is never ahead of them

    def __init__(self) -> None:
        self._messages: list[Message] = []
        self._worker: WorkerLoop | None = None
        self._store: ParameterStore | None = None
        self._done = False

    def start(self, job: WorkerJob, n_workers: int, model: GlobalModel) -> ParameterStore:
        self._store = SharedMemoryStore(model, mp.get_context("spawn"))
        self._worker = job.build(0, self._store, self._messages.append)
        return self._store

    def poll(self, timeout: float) -> list[Message]:
        worker = self._worker
        if worker is not None and not self._done and not worker.step():
            worker.finish()
            self._done = True
        messages, self._messages[:] = list(self._messages), []
        return messages

    def check(self) -> None:
        return None

    def finished(self) -> bool:
        return self._done

    def stop(self) -> list[Message]:
        if self._worker is not None:
            assert self._store is not None
            self._store.request_stop()
            self._worker.close()
            self._worker = None
        self._done = True
        messages, self._messages[:] = list(self._messages), []
        return messages
