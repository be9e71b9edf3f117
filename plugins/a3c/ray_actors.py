"""The two Ray actors of A3C on Ray: the parameter server and the worker (``A3CWorker``).

Plain classes, made actors with ``ray.remote`` by the backend, so that this module imports without Ray.
The server holds the global policy and its optimizer in a :class:`SharedMemoryStore` of its own process:
the same optimizer code, learning-rate order, counters and heartbeats as the local backend, behind one actor
whose calls run one at a time (gradients are applied in the order they arrive, asynchronously to the
workers). A worker runs pgplug's worker loop, unchanged, on a :class:`RayWorkerStore`.

With ``PGPLUG_RAY_STATS=1`` (see ``ray_store.py``) the server times each call by kind, and within a push the
optimizer step (``apply``) and the packing of new weights (``pack``), counts pushes by rank (``push/<rank>``) and
keeps the policy lag of every pushed gradient; ``stats()`` returns the running totals (None when off).
"""

from __future__ import annotations

import contextlib
import copy
import os
from typing import Any

import cloudpickle
import numpy as np
import torch as th
import torch.multiprocessing as mp

from pgplug.contracts.backend import Activity, GlobalModel, Message, WorkerJob
from pgplug.plugins.a3c.ray_cluster import check_versions, load_plugins
from pgplug.plugins.a3c.ray_store import (
    STATS,
    DriverView,
    FlatLayout,
    RayWorkerStore,
    Reply,
    Timings,
    WorkerNews,
    timed,
)
from pgplug.plugins.a3c.shared_memory import SharedMemoryStore
from pgplug.plugins.a3c.worker import error_message


class ParameterServer:
    """The global policy, the shared optimizer, the counters, the stop and pause flags and the heartbeats.

    :param model_bytes: the cloudpickled :class:`GlobalModel` (policy with optimizer, counters, settings)
    :param n_workers: the workers that will beat
    :param plugins: the driver's local plugins, loaded before the policy unpickles (its class may be one's)
    """

    def __init__(self, model_bytes: bytes, n_workers: int, plugins: list[str]) -> None:
        th.set_num_threads(1)
        load_plugins(plugins)
        model: GlobalModel = cloudpickle.loads(model_bytes)
        self.policy = model.policy
        self.store = SharedMemoryStore(model, mp.get_context("spawn"), n_workers)
        self.state = list(self.policy.state_dict().values())
        self.layout = FlatLayout(self.state)
        self.params = list(self.policy.parameters())
        self.grad_layouts: dict[tuple[int, ...], FlatLayout] = {}
        self.messages: list[Message] = []
        self._packed: tuple[int, list[np.ndarray]] | None = None  # (updates, weights) of the last packing
        self.timings: Timings | None = Timings() if STATS else None

    def pid(self) -> int:
        return os.getpid()

    def stats(self) -> dict[str, Any] | None:
        """The timing counters' running totals (``Timings.snapshot``), or None without ``PGPLUG_RAY_STATS=1``."""
        return None if self.timings is None else self.timings.snapshot()

    def _hear(self, rank: int, news: WorkerNews) -> None:
        if news.steps:
            self.store.add_steps(news.steps)
        if news.beat is not None:
            activity, updates = news.beat
            self.store.beat(rank, Activity(activity), updates)
        self.messages.extend(news.messages)

    def _reply(self, weights: bool = False, lag: int | None = None) -> Reply:
        store = self.store
        return Reply(
            steps=store.steps,
            updates=store.n_updates,
            stop=store.stop_requested(),
            progress=store.progress,
            weights=self._weights() if weights else None,
            lag=lag,
        )

    def _weights(self) -> list[np.ndarray]:
        updates = self.store.n_updates
        if self._packed is None or self._packed[0] != updates:
            self._packed = (updates, self._pack())
        return self._packed[1]

    @timed("pack")
    def _pack(self) -> list[np.ndarray]:
        return self.layout.pack(self.state)

    @timed("apply")
    def _apply(self, grads: list[th.Tensor | None], learning_rate: float, rank: int) -> int:
        return self.store.push(grads, learning_rate, rank)

    # -- the workers' calls -----------------------------------------------------------------------

    @timed("call/status")
    def status(self, rank: int, news: WorkerNews) -> Reply:
        self._hear(rank, news)
        return self._reply()

    @timed("call/beat")
    def beat(self, rank: int, news: WorkerNews) -> None:
        self._hear(rank, news)

    @timed("call/pull")
    def pull(self, rank: int, news: WorkerNews) -> Reply:
        self._hear(rank, news)
        return self._reply(weights=True)

    @timed("call/push")
    def push(
        self,
        rank: int,
        packed: list[np.ndarray],
        missing: tuple[int, ...],
        learning_rate: float,
        synced_at: int,
        news: WorkerNews,
    ) -> Reply:
        """Apply one worker's gradient with the shared optimizer; reply with the new weights."""
        self._hear(rank, news)
        if missing not in self.grad_layouts:
            self.grad_layouts[missing] = FlatLayout([p for i, p in enumerate(self.params) if i not in missing])
        present = iter(self.grad_layouts[missing].tensors(packed))
        grads = [None if i in missing else next(present) for i in range(len(self.params))]
        applied = self._apply(grads, learning_rate, rank)
        lag = applied - 1 - synced_at
        if self.timings is not None:
            self.timings.lags[lag] += 1
            self.timings.counts[f"push/{rank}"] += 1
        return self._reply(weights=True, lag=lag)

    @timed("call/local_policy")
    def local_policy(self) -> Any:
        """A copy of the global policy without its optimizer, for a worker."""
        optimizer = getattr(self.policy, "optimizer", None)
        return copy.deepcopy(self.policy, {id(optimizer): None} if optimizer is not None else {})

    # -- the driver's calls -------------------------------------------------------------------------

    @timed("call/driver_sync")
    def driver_sync(self, progress: int) -> DriverView:
        self.store.publish_progress(progress)
        messages, self.messages = self.messages, []
        beats = {rank: (b.activity.value, b.updates, b.seconds) for rank, b in self.store.heartbeats().items()}
        store = self.store
        return DriverView(store.steps, store.n_updates, store.stop_requested(), messages, beats)

    @timed("call/weights")
    def weights(self) -> tuple[list[np.ndarray], int]:
        updates = self.store.n_updates
        return self._weights(), updates

    def optimizer_state(self) -> dict[str, Any] | None:
        """The global policy's optimizer state (the shared statistics), for the driver's copy at the end of a run."""
        optimizer = getattr(self.policy, "optimizer", None)
        return None if optimizer is None else optimizer.state_dict()

    @timed("call/request_stop")
    def request_stop(self) -> None:
        self.store.request_stop()

    @timed("call/restarting")
    def restarting(self, rank: int) -> None:
        """Worker ``rank`` is being replaced: its silence counts from now, as a starting worker's."""
        self.store.beat(rank, Activity.STARTING, 0)


class A3CWorker:
    """One A3C actor-learner: pgplug's worker loop on its own envs, talking to the parameter server.

    :param rank: the worker's rank (its env seeds and random streams derive from it)
    :param job_bytes: the cloudpickled :class:`~pgplug.contracts.backend.WorkerJob`
    :param server: the parameter server's actor handle
    :param plugins: the driver's local plugins (module names; files were shipped with the runtime env)
    :param versions: the driver's pgplug, torch and SB3 versions, which this node must have too
    :param pipeline: push each gradient while the next rollout runs
    """

    def __init__(
        self,
        rank: int,
        job_bytes: bytes,
        server: Any,
        plugins: list[str],
        versions: dict[str, str],
        pipeline: bool = False,
    ) -> None:
        self.rank, self.job_bytes, self.server = rank, job_bytes, server
        self.plugins, self.versions, self.pipeline = plugins, versions, pipeline

    def pid(self) -> int:
        return os.getpid()

    def run(self) -> Message | None:
        """Run the loop to its end; None, or the ``("error", rank, ...)`` message of what stopped it."""
        import ray

        worker, store = None, None
        try:
            check_versions(self.versions, f"worker {self.rank}'s node ({ray.util.get_node_ip_address()})")
            load_plugins(self.plugins)
            job: WorkerJob = cloudpickle.loads(self.job_bytes)
            job.enter_process(self.rank)
            store = RayWorkerStore(self.server, self.rank, ray.get, self.pipeline)
            worker = job.build(self.rank, store, store.send)
            while worker.step():
                pass
            worker.finish()
            store.flush()
            return None
        except BaseException as exc:
            message = error_message(self.rank, exc)
            if store is not None:
                with contextlib.suppress(Exception):  # the reports so far still count, if the server is there
                    store.flush()
            return message
        finally:
            if worker is not None:
                worker.close()
