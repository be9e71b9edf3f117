"""The process backend: A3C's workers as local processes over a shared-memory parameter store (Hogwild).

Workers start from a forkserver by default: a fresh single-threaded interpreter, started in the background
when the model is built, imports torch, SB3 and pgplug once, and each worker is forked from it (safe with
threads, unlike plain ``fork``; a fraction of a second per worker, where ``spawn`` takes seconds).

Nothing here waits without a limit. A thread starts the workers, so that the driver goes on watching them
(heartbeats, Ctrl-C) while the forkserver imports or if it does not answer; another reads their messages,
so that a message half-written by a worker stopped or killed mid-send holds up that thread only. Children
start with SIGINT blocked (as multiprocessing starts its resource tracker): Ctrl-C is the driver's to handle.
``stop`` ends every worker, one stopped by SIGSTOP by SIGKILL, and joins it; when the run did not end
cleanly (a worker failed, or had to be killed) it also stops and reaps the forkserver, so that nothing it
forked can be left behind. At exit the main process reaps the forkserver after multiprocessing has joined
its children.
"""

from __future__ import annotations

import contextlib
import os
import queue as queue_module
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from multiprocessing import forkserver, resource_tracker
from multiprocessing import util as mp_util
from typing import Any

import cloudpickle
import torch as th
import torch.multiprocessing as mp
from stable_baselines3.common.policies import ActorCriticPolicy

from pgplug.contracts.backend import (
    Activity,
    GlobalModel,
    Message,
    ParameterStore,
    WorkerBackend,
    WorkerDied,
    WorkerFailed,
    WorkerJob,
)
from pgplug.contracts.registries import get_host
from pgplug.errors import PgplugError
from pgplug.plugins.a3c.shared_memory import SharedMemoryStore
from pgplug.plugins.a3c.worker import error_message, error_of

#: What the forkserver imports once, so that each worker forked from it starts without importing
#: torch, SB3 and pgplug again (about 1.4 s per worker with ``spawn``).
FORKSERVER_PRELOAD = ["pgplug.plugins.a3c.worker"]
#: Shared tensors travel to a forkserver child as file descriptors, of which one message carries at
#: most 253 (multiprocessing.reduction's limit), together with a few of multiprocessing's own.
FORKSERVER_MAX_SHARED_TENSORS = 240
#: Seconds the workers get, once asked to stop, to finish their update and send their last report.
STOP_GRACE = 5.0
#: Seconds a start in progress gets, once stopping, before the forkserver it waits for is ended.
START_GRACE = 1.0
#: Seconds to wait for a process or thread that has been killed or told to end.
JOIN_TIMEOUT = 5.0
#: Seconds the forkserver gets at exit to leave by itself before it is killed (the children are joined by then).
EXIT_GRACE = 1.0


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


@contextlib.contextmanager
def sigint_blocked() -> Iterator[None]:
    """Block SIGINT in this thread: the processes it starts inherit the mask, so that a Ctrl-C meant for the
    driver does not interrupt their start-up with a traceback (a blocked signal stays blocked in Python).

    multiprocessing's resource tracker is started first, if it is not running: starting it unblocks SIGINT in the
    thread that starts it (it blocks SIGINT for its own start, then unblocks it rather than restore the mask).
    """
    if not hasattr(signal, "pthread_sigmask"):  # Windows: spawn only, and no process groups
        yield
        return
    resource_tracker.ensure_running()
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextlib.contextmanager
def sigint_deferred() -> Iterator[None]:
    """Hold a Ctrl-C back until the block has run, then raise it: a second Ctrl-C (people press it twice) must not
    cut short the stop that kills and reaps the workers. Only the main thread handles signals; elsewhere a no-op."""
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or previous is None:  # None: a handler not Python's
        yield
        return
    pressed: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, frame: pressed.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if pressed and callable(previous):
            previous(signal.SIGINT, None)  # Python's default handler raises KeyboardInterrupt
        elif pressed and previous == signal.SIG_DFL:
            os.kill(os.getpid(), signal.SIGINT)


def reap(pid: int, timeout: float) -> None:
    """Wait up to ``timeout`` seconds for child ``pid`` to exit, then SIGKILL it; either way it is reaped."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if os.waitpid(pid, os.WNOHANG)[0]:
                return
        except ChildProcessError:  # reaped already
            return
        if time.monotonic() >= deadline:
            break
        time.sleep(0.01)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def stop_forkserver(timeout: float = JOIN_TIMEOUT) -> None:
    """Stop multiprocessing's forkserver and reap it: close its "alive" pipe, SIGKILL it after ``timeout`` seconds.

    The server leaves by itself once the driver and every process forked from it have closed that pipe, so this
    comes after the workers are gone. It is ``ForkServer._stop`` (which waits without a limit) with a limit, on
    the same private fields; the next worker start runs a new server.
    """
    server = forkserver._forkserver
    if not server._lock.acquire(timeout=JOIN_TIMEOUT):  # held only while a server is being started
        return
    try:
        pid, alive_fd, address = server._forkserver_pid, server._forkserver_alive_fd, server._forkserver_address
        server._forkserver_pid = server._forkserver_alive_fd = server._forkserver_address = None
    finally:
        server._lock.release()
    if pid is None:
        return
    os.close(alive_fd)
    reap(pid, timeout)
    if address and not mp_util.is_abstract_socket_namespace(address):
        with contextlib.suppress(OSError):
            os.unlink(address)


#: The exit finalizer that reaps the forkserver, once registered.
_forkserver_reaper: list[Any] = []


def reap_forkserver_at_exit() -> None:
    """Reap the forkserver when the main process exits, rather than leave it to outlive it (an orphan, or a zombie
    where nothing reaps orphans). A negative exit priority runs after multiprocessing has joined its children."""
    if not _forkserver_reaper:
        _forkserver_reaper.append(mp_util.Finalize(None, stop_forkserver, args=(EXIT_GRACE,), exitpriority=-100))


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
        queue.put(error_message(rank, exc))
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
        self.processes: dict[int, Any] = {}  # rank → a started worker process
        self.queue: Any = None
        self.store: ParameterStore | None = None
        self._n_workers = 0
        self._inbox: queue_module.SimpleQueue[Message] = queue_module.SimpleQueue()  # the messages read so far
        self._starter: threading.Thread | None = None
        self._reader: threading.Thread | None = None
        self._cancel_start, self._stop_reading = threading.Event(), threading.Event()
        self._start_failure: str | None = None  # a traceback from the starter thread
        self._read_failure: str | None = None  # a traceback from the reader thread
        self._ended: set[int] = set()  # ranks killed once finishing: a worker stuck closing its envs, not a failure
        self._stopping = False
        self._reap_forkserver = False  # the run did not end cleanly: stop() reaps the forkserver too

    @classmethod
    def prepare(cls, start_method: str = "forkserver") -> None:
        """Start the forkserver now, in the background, so its imports overlap the caller's own set-up.

        multiprocessing keeps the server for the life of the driver, which reaps it at exit. Nothing to do for
        other start methods.
        """
        if check_start_method(start_method) != "forkserver":
            return
        mp.set_forkserver_preload(FORKSERVER_PRELOAD)  # only takes effect if the server is not running yet
        with sigint_blocked():
            forkserver.ensure_running()
        reap_forkserver_at_exit()

    def start(self, job: WorkerJob, n_workers: int, model: GlobalModel) -> ParameterStore:
        self.store = store = SharedMemoryStore(model, self.ctx, n_workers)
        if self.ctx.get_start_method() == "forkserver":
            check_forkserver_can_share(model.policy)
        self.queue = self.ctx.Queue()
        job_bytes = cloudpickle.dumps(job)
        plugin_specs = get_host().local_plugins()
        environ = dict(os.environ)
        processes = {
            rank: self.ctx.Process(
                target=worker_process_main,
                args=(rank, job_bytes, store, self.queue, plugin_specs, environ),
                name=f"pgplug-a3c-worker-{rank}",
                daemon=True,
            )
            for rank in range(n_workers)
        }
        self._n_workers = n_workers
        self._reader = self._thread(self._read_messages, "pgplug-a3c-messages")
        self._starter = self._thread(lambda: self._start_processes(processes), "pgplug-a3c-starter")
        return store

    @staticmethod
    def _thread(target: Callable[[], None], name: str) -> threading.Thread:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        return thread

    def _start_processes(self, processes: dict[int, Any]) -> None:
        """The starter thread: start the workers in turn until all run or ``stop`` cancels the rest."""
        try:
            for rank, process in processes.items():
                if self._cancel_start.is_set():
                    return
                with sigint_blocked():
                    process.start()  # with a forkserver: waits until it has finished importing and forked
                self.processes[rank] = process
        except BaseException:
            self._start_failure = traceback.format_exc()

    def _read_messages(self) -> None:
        """The reader thread: move the workers' messages into the inbox until stopped with the pipe empty."""
        while True:
            try:
                self._inbox.put(self.queue.get(timeout=0.05))
            except queue_module.Empty:
                if self._stop_reading.is_set():
                    return
            except BaseException:  # the pipe closed (by stop), or a message that did not unpickle
                if not self._stop_reading.is_set():
                    self._read_failure = traceback.format_exc()
                return

    def _take(self, timeout: float) -> list[Message]:
        """The messages in the inbox, waiting up to ``timeout`` seconds for the first."""
        messages: list[Message] = []
        try:
            messages.append(self._inbox.get(timeout=max(timeout, 0.0)))
            while True:
                messages.append(self._inbox.get_nowait())
        except queue_module.Empty:
            pass
        return messages

    def poll(self, timeout: float) -> list[Message]:
        messages = self._take(timeout)
        for kind, rank, payload in messages:
            if kind == "error":
                self._stopping = self._reap_forkserver = True
                raise error_of(rank, payload)
        return messages

    def check(self) -> None:
        if self._stopping:
            return
        if self._start_failure is not None:
            self._reap_forkserver = True
            raise WorkerFailed(f"could not start the A3C workers:\n{self._start_failure}")
        if self._read_failure is not None:
            self._reap_forkserver = True
            raise WorkerFailed(f"lost the A3C workers' messages:\n{self._read_failure}")
        beats = self.store.heartbeats() if self.store is not None else {}
        for rank, process in list(self.processes.items()):
            code = process.exitcode
            if code is None and rank in beats and beats[rank].activity is Activity.FINISHING:
                self._end_if_stuck_finishing(rank, process, beats[rank].seconds)
            elif code is not None and code != 0 and rank not in self._ended:
                # Give a dying worker's traceback message a moment to arrive before reporting the exit code.
                self.poll(timeout=0.5)
                self._reap_forkserver = True
                how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
                raise WorkerDied(f"A3C worker {rank} (pid {process.pid}) {how}")

    def _end_if_stuck_finishing(self, rank: int, process: Any, seconds: float) -> None:
        """A worker that has done its last update and sent its last report, but has not exited ``STOP_GRACE``
        seconds later (stuck closing its envs, say), is killed: nothing is lost, and the run goes on to its end. If
        even SIGKILL brings no exit code (the forkserver that reports it is stopped), the run fails."""
        if seconds < STOP_GRACE:
            return
        if rank not in self._ended:
            self._ended.add(rank)
            self._reap_forkserver = True
            process.kill()
        elif seconds > STOP_GRACE + JOIN_TIMEOUT:
            raise WorkerDied(f"A3C worker {rank} (pid {process.pid}) finished, but its process does not exit")

    def _starting(self) -> bool:
        return self._starter is not None and self._starter.is_alive()

    def _running(self) -> bool:
        return self._starting() or any(process.exitcode is None for process in list(self.processes.values()))

    def finished(self) -> bool:
        return len(self.processes) == self._n_workers and not self._running()

    def stop(self, timeout: float = STOP_GRACE) -> list[Message]:
        """Ask the workers to stop and give them ``timeout`` seconds, then kill and join those still there (one
        silent for ``timeout`` seconds already is killed at once: it would not finish its update in time)."""
        with sigint_deferred():
            return self._stop(timeout)

    def _stop(self, timeout: float) -> list[Message]:
        self._stopping = True
        self._cancel_start.set()
        if self.store is not None:
            self.store.request_stop()
        if self._starter is not None:
            self._starter.join(START_GRACE)
            if self._starter.is_alive() and self.ctx.get_start_method() == "forkserver":
                # Still waiting for the forkserver (importing, or not answering): ending it ends the wait.
                self._reap_forkserver = True
                stop_forkserver(timeout=0.0)
                self._starter.join(JOIN_TIMEOUT)
        messages: list[Message] = []
        deadline = time.monotonic() + timeout
        while self._running() and time.monotonic() < deadline:
            messages.extend(self._take(0.05))
            self._kill_silent(longer_than=timeout)
        self._kill_silent(longer_than=0.0)
        for process in list(self.processes.values()):
            process.join(JOIN_TIMEOUT)
        if self._reap_forkserver and self.ctx.get_start_method() == "forkserver":
            stop_forkserver()
        self._stop_reader()
        messages.extend(self._take(0.0))
        if self.queue is not None:
            self.queue.close()
        return [m for m in messages if m[0] != "error"]

    def _kill_silent(self, longer_than: float) -> None:
        """SIGKILL the workers still running that have sent nothing for ``longer_than`` seconds (stuck, or stopped
        by SIGSTOP: SIGKILL ends either). The run then did not end cleanly."""
        beats = self.store.heartbeats() if self.store is not None else {}
        for rank, process in list(self.processes.items()):
            if process.exitcode is None and (rank not in beats or beats[rank].seconds >= longer_than):
                self._reap_forkserver = True
                process.kill()

    def _stop_reader(self) -> None:
        """End the reader thread once it has read what the workers wrote.

        The driver's own write end of the pipe is closed too: with the workers gone the reader then reads to the
        end of the pipe and stops there, also if a worker was killed halfway through writing a message (which would
        otherwise leave it waiting for the rest forever). multiprocessing's queue offers no public way to close one
        end, hence ``_writer``.
        """
        if self._reader is None:
            return
        self._stop_reading.set()
        self.queue._writer.close()
        self._reader.join(JOIN_TIMEOUT)
