"""How A3C's workers are started and watched: in-process (serial, for debugging) or as local processes.

A backend runs :class:`~pgplug.plugins.a3c.worker.Worker` loops and hands their messages to the
main process; the algorithm never touches processes directly, so a cluster backend on a
distributed engine can be added without changing the algorithm.
"""

from __future__ import annotations

import os
import queue as queue_module
import time
from typing import Any, Protocol

import cloudpickle
import torch as th
import torch.multiprocessing as mp
from stable_baselines3.common.policies import ActorCriticPolicy

from pgplug.errors import PgplugError
from pgplug.plugins.a3c.worker import Message, SharedState, Worker, WorkerSpec, worker_process_main


class WorkerFailed(RuntimeError):
    """A worker raised or died; the message carries the worker's traceback or exit code."""


class WorkerError(PgplugError):
    """A worker stopped on a user-facing error (a diverged loss, a bad value): its one-line message."""


class WorkerBackend(Protocol):
    """Starts workers, relays their messages, reports failures and stops them."""

    def start(self, spec: WorkerSpec, global_policy: ActorCriticPolicy, n_workers: int, shared: SharedState) -> None:
        """Start ``n_workers`` workers sharing ``global_policy`` and ``shared``."""
        ...

    def shared_state(self, start_steps: int, start_updates: int) -> SharedState:
        """Shared counters and flags usable by this backend's workers."""
        ...

    def poll(self, timeout: float) -> list[Message]:
        """Messages since the last call (waits up to ``timeout`` seconds for the first)."""
        ...

    def check(self) -> None:
        """Raise :class:`WorkerFailed` if a worker died unexpectedly."""
        ...

    def finished(self) -> bool:
        """True once every worker has stopped."""
        ...

    def stop(self) -> list[Message]:
        """Ask workers to stop, wait for them (killing stragglers) and return their last messages."""
        ...


class SerialBackend:
    """One worker in the main process, stepped one update per :meth:`poll` (deterministic, debuggable)."""

    def __init__(self) -> None:
        self._messages: list[Message] = []
        self._worker: Worker | None = None
        self._done = False

    def shared_state(self, start_steps: int, start_updates: int) -> SharedState:
        return SharedState.create(mp.get_context("spawn"), start_steps, start_updates)

    def start(self, spec: WorkerSpec, global_policy: ActorCriticPolicy, n_workers: int, shared: SharedState) -> None:
        if n_workers != 1:
            raise PgplugError(f"the serial backend runs exactly one worker in-process, got n_workers={n_workers}")
        self._shared = shared
        self._worker = Worker(0, spec, global_policy, shared, self._messages.append)

    def poll(self, timeout: float) -> list[Message]:
        worker = self._worker
        if worker is not None and not self._done and not (worker.keep_going() and worker.run_update()):
            worker._maybe_report(force=True)
            self._done = True
        messages, self._messages[:] = list(self._messages), []
        return messages

    def check(self) -> None:
        return None

    def finished(self) -> bool:
        return self._done

    def stop(self) -> list[Message]:
        if self._worker is not None:
            self._shared.stop.set()
            self._worker.close()
            self._worker = None
        self._done = True
        messages, self._messages[:] = list(self._messages), []
        return messages


#: What the forkserver imports once, so that each worker forked from it starts without importing
#: torch, SB3 and pgplug again (about 1.4 s per worker with ``spawn``).
FORKSERVER_PRELOAD = ["pgplug.plugins.a3c.worker"]


def check_start_method(start_method: str) -> str:
    valid = mp.get_all_start_methods()
    if start_method not in valid:
        raise PgplugError(f"unknown start_method {start_method!r}; valid start methods: {', '.join(valid)}")
    return start_method


def warm_up(start_method: str) -> None:
    """Start the forkserver now, in the background, so its imports overlap the caller's own set-up.

    The forkserver is a fresh single-threaded interpreter that multiprocessing keeps for the life of
    the main process; workers are forked from it (safe with threads, unlike plain ``fork``). Nothing
    to do for other start methods.
    """
    if check_start_method(start_method) != "forkserver":
        return
    from multiprocessing import forkserver

    mp.set_forkserver_preload(FORKSERVER_PRELOAD)  # only takes effect if the server is not running yet
    forkserver.ensure_running()


#: Shared tensors travel to a forkserver child as file descriptors, of which one message carries at
#: most 253 (multiprocessing.reduction's limit), together with a few of multiprocessing's own.
FORKSERVER_MAX_SHARED_TENSORS = 240


def check_forkserver_can_share(policy: ActorCriticPolicy) -> None:
    """Refuse, in one line, a policy with more shared tensors than the forkserver can hand a worker."""
    optimizer = getattr(policy, "optimizer", None)
    state = optimizer.state.values() if optimizer is not None else []
    n_tensors = len(list(policy.parameters())) + len(list(policy.buffers()))
    n_tensors += sum(isinstance(value, th.Tensor) for entry in state for value in entry.values())
    if n_tensors > FORKSERVER_MAX_SHARED_TENSORS:
        raise PgplugError(
            f"the policy and its optimizer have {n_tensors} tensors to share, more than the forkserver can pass "
            f"a worker ({FORKSERVER_MAX_SHARED_TENSORS}); use start_method='spawn'"
        )


class ProcessBackend:
    """``n_workers`` local processes (torch.multiprocessing; ``forkserver`` by default: safe with threads,
    and each worker starts in a fraction of a second from the preloaded server)."""

    def __init__(self, start_method: str = "forkserver", plugin_specs: list[str] | None = None) -> None:
        warm_up(start_method)
        self.ctx = mp.get_context(start_method)
        self.plugin_specs = plugin_specs or []
        self.processes: list[Any] = []
        self.queue: Any = None
        self._stopping = False

    def shared_state(self, start_steps: int, start_updates: int) -> SharedState:
        return SharedState.create(self.ctx, start_steps, start_updates)

    def start(self, spec: WorkerSpec, global_policy: ActorCriticPolicy, n_workers: int, shared: SharedState) -> None:
        if self.ctx.get_start_method() == "forkserver":
            check_forkserver_can_share(global_policy)
        self.shared = shared
        self.queue = self.ctx.Queue()
        spec_bytes = cloudpickle.dumps(spec)
        for rank in range(n_workers):
            process = self.ctx.Process(
                target=worker_process_main,
                args=(rank, spec_bytes, global_policy, shared, self.queue, self.plugin_specs, dict(os.environ)),
                name=f"pgplug-a3c-worker-{rank}",
                daemon=True,
            )
            process.start()
            self.processes.append(process)

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
        self.shared.stop.set()
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
