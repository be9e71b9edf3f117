"""The process backend: A3C's workers as local processes over a shared-memory parameter store (Hogwild).

Workers start from a forkserver by default: a fresh single-threaded interpreter, started in the background
when the model is built, imports torch, SB3 and pgplug once, and each worker is forked from it (safe with
threads, unlike plain ``fork``; a fraction of a second per worker, where ``spawn`` takes seconds).
"""

from __future__ import annotations

import os
import queue as queue_module
import signal
import time
import traceback
from typing import Any

import cloudpickle
import torch as th
import torch.multiprocessing as mp
from stable_baselines3.common.policies import ActorCriticPolicy

from pgplug.contracts.backend import GlobalModel, Message, ParameterStore, WorkerBackend, WorkerFailed, WorkerJob
from pgplug.contracts.registries import get_host
from pgplug.errors import PgplugError, WorkerError, one_line
from pgplug.plugins.a3c.shared_memory import SharedMemoryStore

#: What the forkserver imports once, so that each worker forked from it starts without importing
#: torch, SB3 and pgplug again (about 1.4 s per worker with ``spawn``).
FORKSERVER_PRELOAD = ["pgplug.plugins.a3c.worker"]
#: Shared tensors travel to a forkserver child as file descriptors, of which one message carries at
#: most 253 (multiprocessing.reduction's limit), together with a few of multiprocessing's own.
FORKSERVER_MAX_SHARED_TENSORS = 240


def check_start_method(start_method: str) -> str:
    valid = mp.get_all_start_methods()
    if start_method not in valid:
        raise PgplugError(f"unknown start_method {start_method!r}; valid start methods: {', '.join(valid)}")
    return start_method


def check_forkserver_can_share(policy: ActorCriticPolicy) -> None:
    """Refuse, in one line, a policy with more shared tensors than the forkserver can hand a worker."""
    optimizer = getattr(policy, "optimizer", None)
    state = optimizer.state.values() if optimizer is not None else []
    n_tensors = len(list(policy.parameters())) + len(list(policy.buffers()))
    n_tensors += sum(isinstance(value, th.Tensor) for entry in state for value in entry.values())
    if n_tensors > FORKSERVER_MAX_SHARED_TENSORS:
        raise PgplugError(
            f"the policy and its optimizer have {n_tensors} tensors to share, more than the forkserver can pass "
            f"a worker ({FORKSERVER_MAX_SHARED_TENSORS}); use backend_kwargs={{'start_method': 'spawn'}}"
        )


def worker_process_main(
    rank: int,
    job_bytes: bytes,
    store: ParameterStore,
    queue: Any,
    plugin_specs: list[str],
    environ: dict[str, str],
) -> None:
    """Entry point of a worker process: run the job's loop; report any exception with its traceback, then exit 1.

    ``environ`` is the driver's environment at start: a worker forked from the forkserver would otherwise
    see the server's, as it was when the server started.
    """
    os.environ.clear()
    os.environ.update(environ)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle: it stops us
    worker = None
    try:
        for plugin in plugin_specs:  # the driver's local plugins, so that their classes unpickle here
            get_host().load_local(plugin)
        job: WorkerJob = cloudpickle.loads(job_bytes)
        job.enter_process(rank)
        worker = job.build(rank, store, queue.put)
        while worker.step():
            pass
        worker.finish()
    except BaseException as exc:
        # A user-facing error (e.g. a diverged loss) also travels as its one-line message.
        user_error = one_line(exc) if isinstance(exc, PgplugError) else None
        queue.put(("error", rank, {"traceback": traceback.format_exc(), "user_error": user_error}))
        raise SystemExit(1) from None
    finally:
        if worker is not None:
            worker.close()


class ProcessBackend(WorkerBackend):
    """Local worker processes sharing the global policy in memory (Hogwild), started from a forkserver.

    :param start_method: multiprocessing start method: ``forkserver`` (the default) or ``spawn``, both safe
        with threads
    """

    name = "process"

    def __init__(self, start_method: str = "forkserver") -> None:
        self.prepare(start_method)
        self.ctx = mp.get_context(start_method)
        self.processes: list[Any] = []
        self.queue: Any = None
        self.store: ParameterStore | None = None
        self._stopping = False

    @classmethod
    def prepare(cls, start_method: str = "forkserver") -> None:
        """Start the forkserver now, in the background, so its imports overlap the caller's own set-up.

        multiprocessing keeps the server for the life of the driver. Nothing to do for other start methods.
        """
        if check_start_method(start_method) != "forkserver":
            return
        from multiprocessing import forkserver

        mp.set_forkserver_preload(FORKSERVER_PRELOAD)  # only takes effect if the server is not running yet
        forkserver.ensure_running()

    def start(self, job: WorkerJob, n_workers: int, model: GlobalModel) -> ParameterStore:
        self.store = store = SharedMemoryStore(model, self.ctx, n_workers)
        if self.ctx.get_start_method() == "forkserver":
            check_forkserver_can_share(model.policy)
        self.queue = self.ctx.Queue()
        job_bytes = cloudpickle.dumps(job)
        plugin_specs = get_host().local_plugins()
        for rank in range(n_workers):
            process = self.ctx.Process(
                target=worker_process_main,
                args=(rank, job_bytes, store, self.queue, plugin_specs, dict(os.environ)),
                name=f"pgplug-a3c-worker-{rank}",
                daemon=True,
            )
            process.start()
            self.processes.append(process)
        return store

    def poll(self, timeout: float) -> list[Message]:
        messages: list[Message] = []
        try:
            messages.append(self.queue.get(timeout=timeout))
            while True:
                messages.append(self.queue.get_nowait())
        except queue_module.Empty:
            pass
        for kind, rank, payload in messages:
            if kind == "error":
                self._stopping = True
                if payload["user_error"]:
                    raise WorkerError(f"A3C worker {rank}: {payload['user_error']}")
                raise WorkerFailed(f"A3C worker {rank} raised an exception:\n{payload['traceback']}")
        return messages

    def check(self) -> None:
        for rank, process in enumerate(self.processes):
            code = process.exitcode
            if code is not None and code != 0 and not self._stopping:
                # Give a dying worker's traceback message a moment to arrive before reporting the exit code.
                self.poll(timeout=0.5)
                how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
                raise WorkerFailed(f"A3C worker {rank} (pid {process.pid}) {how}")

    def finished(self) -> bool:
        return all(process.exitcode is not None for process in self.processes)

    def stop(self, timeout: float = 5.0) -> list[Message]:
        self._stopping = True
        if not self.processes:
            return []
        assert self.store is not None
        self.store.request_stop()
        messages: list[Message] = []
        deadline = time.monotonic() + timeout
        while not self.finished() and time.monotonic() < deadline:
            messages.extend(self._drain(0.05))
        for process in self.processes:
            if process.exitcode is None:
                process.kill()
            process.join(timeout=5)
        messages.extend(self._drain(0.0))
        self.queue.close()
        self.queue.join_thread()
        self.processes = []
        return [m for m in messages if m[0] != "error"]

    def _drain(self, timeout: float) -> list[Message]:
        messages: list[Message] = []
        try:
            if timeout:
                messages.append(self.queue.get(timeout=timeout))
            while True:
                messages.append(self.queue.get_nowait())
        except (queue_module.Empty, OSError, ValueError):
            pass
        return messages
