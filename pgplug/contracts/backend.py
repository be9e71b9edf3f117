"""The contracts of asynchronous training: a parameter store the workers talk to, and the backends that run them.

An asynchronous algorithm (A3C) runs worker loops that each pull the global weights, roll out,
compute a gradient and push it to a :class:`ParameterStore`, which applies it with the shared
optimizer and keeps the global counters, the stop and pause flags and each worker's heartbeat. A
:class:`WorkerBackend` starts the workers, gives them a store, relays their messages and stops them. Local
processes over shared memory and an in-process worker are two backends; an actor on a distributed engine
is another store behind the same seam. Backends are registered by name through ``pgplug_register_backends``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar, Protocol

import torch as th

from pgplug.errors import PgplugError
from pgplug.plugin.registry import RegistryKind

#: What a worker sends the driver: ``(kind, rank, payload)``, kind ``report`` or ``error``.
Message = tuple[str, int, Any]

#: Seconds between a busy worker's heartbeats while its activity stays the same (see ``ParameterStore.beat``).
BEAT_INTERVAL = 0.5


class WorkerFailed(RuntimeError):
    """A worker raised or died; the message carries the worker's traceback or exit code."""


class WorkerDied(WorkerFailed, PgplugError):
    """A worker's process ended without a report (killed, exited, or will not exit): there is no traceback of the
    user's to show, so the command line says it in one line."""


class Activity(StrEnum):
    """What a worker is doing, as it tells its store with each heartbeat (:meth:`ParameterStore.beat`)."""

    STARTING = "starting"  # not beaten yet: being started, importing, loading plugins
    BUILDING_ENVS = "building its envs"
    PULLING = "pulling the weights"
    STEPPING = "stepping its envs"
    COMPUTING = "computing its gradient"
    PUSHING = "pushing its gradient"
    WAITING = "waiting for the driver's callbacks"
    FINISHING = "finishing"  # its last update done: sending its last report, closing its envs


@dataclass(frozen=True)
class Heartbeat:
    """A worker's latest sign of life: ``seconds`` ago it was ``activity``, having pushed ``updates`` updates."""

    activity: Activity
    updates: int
    seconds: float


class ParameterStore(ABC):
    """Where the global policy, its optimizer and the global counters live; what every worker talks to.

    One store serves all workers and the driver; each method is safe to call from any of them at any time.
    """

    @abstractmethod
    def local_policy(self) -> Any:
        """A private copy of the global policy (same class and architecture, no optimizer) for a worker."""

    @abstractmethod
    def pull(self, into: Sequence[th.Tensor]) -> int:
        """Copy the global weights into ``into`` (the local policy's ``state_dict()`` values, in order).

        :return: the number of updates applied so far (a worker's policy lag counts from there)
        """

    @abstractmethod
    def push(self, grads: Sequence[th.Tensor | None], learning_rate: float, rank: int) -> int:
        """Apply one worker's gradients with the shared optimizer at ``learning_rate``.

        :param grads: one per parameter of the local policy, in ``parameters()`` order
        :param rank: the worker (a store without shared optimizer statistics keeps one set per worker)
        :return: the number of updates applied, this one included
        """

    @abstractmethod
    def add_steps(self, n: int) -> int:
        """Count ``n`` env steps; returns the total."""

    @property
    @abstractmethod
    def steps(self) -> int:
        """Env steps taken by all workers."""

    @property
    @abstractmethod
    def n_updates(self) -> int:
        """Gradient updates applied to the global policy."""

    @abstractmethod
    def request_stop(self) -> None:
        """Ask every worker to stop after its current update."""

    @abstractmethod
    def stop_requested(self) -> bool:
        """Whether the workers were asked to stop."""

    @abstractmethod
    def publish_progress(self, steps: int) -> None:
        """The driver's callbacks have seen ``steps`` env steps (workers pause while too far ahead of them)."""

    @property
    @abstractmethod
    def progress(self) -> int:
        """The env steps the driver's callbacks have seen, as last published."""

    @abstractmethod
    def wait_for_driver(self, max_ahead: int, timeout: float) -> bool:
        """Block while the env steps run more than ``max_ahead`` ahead of the driver's callbacks, for at most
        ``timeout`` seconds (the worker beats between two waits).

        :return: True once the worker may go on, or at once when a stop is asked or the driver is gone (a worker
            then stops); False if it is still held after ``timeout``
        """

    @abstractmethod
    def beat(self, rank: int, activity: Activity, updates: int) -> None:
        """Worker ``rank`` is alive and ``activity``, having pushed ``updates`` updates.

        A worker beats at each change of activity and about every :data:`BEAT_INTERVAL` seconds within one, a few
        times per update: a store on another machine keeps the latest beat where the worker runs and sends it on
        about once a second, which is plenty against limits of seconds.
        """

    @abstractmethod
    def heartbeats(self) -> dict[int, Heartbeat]:
        """Each worker's latest beat, with its age in seconds; a worker that has not beaten yet is ``starting``,
        as old as the store. The driver ends the run when one is too old (a worker stopped or stuck)."""


class WorkerLoop(Protocol):
    """One worker, built in the process (or actor) that runs it."""

    def step(self) -> bool:
        """One update: pull, roll out, compute the gradient, push. False once the worker should stop."""
        ...

    def finish(self) -> None:
        """Send the last report."""
        ...

    def close(self) -> None:
        """Release the worker's envs."""
        ...


class WorkerJob(Protocol):
    """What every worker runs: picklable, built into a loop where the worker runs."""

    def enter_process(self, rank: int) -> None:
        """Prepare a fresh process (or actor) for worker ``rank`` (threads, random streams); a backend that runs
        the worker in the driver does not call it."""
        ...

    def build(self, rank: int, store: ParameterStore, send: Callable[[Message], None]) -> WorkerLoop:
        """The loop of worker ``rank``, on ``store``, reporting through ``send``."""
        ...


@dataclass(frozen=True)
class GlobalModel:
    """What a backend's store starts from.

    :param policy: the driver's policy, with its optimizer: the global weights and optimizer state
    :param steps: env steps already taken (the global step counter's start)
    :param updates: updates already applied
    :param lock: serialise the optimizer steps (Hogwild is lock-free)
    :param shared_optimizer: one set of optimizer statistics for all workers (else one per worker)
    :param fast_paths: step the optimizer with pgplug's fast runner
    """

    policy: Any
    steps: int
    updates: int
    lock: bool
    shared_optimizer: bool
    fast_paths: bool


class WorkerBackend(ABC):
    """Starts workers on a store, relays their messages, reports failures and stops them.

    Constructor keyword arguments are the backend's options (an algorithm's ``backend_kwargs``).

    :cvar name: the registered name (``A3C(backend=...)``)
    :cvar max_workers: how many workers it can run (None: no limit)
    :cvar runs_in_driver: the workers run between the driver's callbacks, so never ahead of them
    """

    name: ClassVar[str]
    max_workers: ClassVar[int | None] = None
    runs_in_driver: ClassVar[bool] = False

    @classmethod
    def runs_workers_here(cls, **options: Any) -> bool:
        """Whether the workers share this machine's cores (so more workers than cores take turns on them).

        :param options: the backend's options, as its constructor takes them
        """
        return True

    @classmethod
    def prepare(cls, **options: Any) -> None:
        """Called when a model that will train on this backend is built: start what takes long (a forkserver).

        :param options: the backend's options, as its constructor takes them
        """
        return None

    @abstractmethod
    def start(self, job: WorkerJob, n_workers: int, model: GlobalModel) -> ParameterStore:
        """Start ``n_workers`` workers running ``job``; return the driver's view of their store.

        It may return while the workers are still starting (so that the driver watches their start-up too): until
        they all have started, :meth:`finished` is False."""

    @abstractmethod
    def poll(self, timeout: float) -> list[Message]:
        """Messages since the last call (waits up to ``timeout`` seconds for the first); a worker's error raises."""

    @abstractmethod
    def check(self) -> None:
        """Raise :class:`WorkerFailed` if a worker died unexpectedly."""

    @abstractmethod
    def finished(self) -> bool:
        """True once every worker has stopped."""

    def telemetry(self) -> dict[str, int | float]:
        """The backend's own figures for the live display and the logger (e.g. workers restarted); none by default."""
        return {}

    @abstractmethod
    def stop(self) -> list[Message]:
        """Ask the workers to stop, wait for them (ending stragglers, also a worker still being started) and return
        their last messages. Called once, also after a failure or an interrupt at any point of :meth:`start`; when
        it returns, nothing the backend started runs any more."""


#: The backend registry: filled by ``pgplug_register_backends``.
BACKENDS = RegistryKind("backend", "pgplug_register_backends", WorkerBackend)
