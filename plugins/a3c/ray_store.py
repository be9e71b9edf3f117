"""The parameter store as two views of one Ray actor: the worker's and the driver's.

The global policy, its optimizer and the counters live in a parameter-server actor (``ray_actors.py``).
What crosses the network is flat numpy buffers (one per dtype, which Ray moves without copying on one node
and far faster than torch tensors), and as few round trips as an update allows:

- a worker's push sends its gradient together with everything it has to tell (steps counted, its latest
  beat, its reports) and gets the new weights back, so the next pull costs nothing: one round trip per
  update. Counters and the stop flag are read from the last reply; a worker's own steps count at once.
  With ``pipeline`` the push is sent while the next rollout runs on the weights the previous push returned.
- the driver syncs once per poll (messages, counters, beats) and fetches the weights only when they changed.

A worker's beats stay where it runs and travel with its next call, or on their own about once a second.

Timing counters, for benchmarks (``benchmarks/a3c_ray.py``): with ``PGPLUG_RAY_STATS=1`` in the environment of
the actors' processes (a local instance inherits the driver's; on a cluster, the job's ``runtime_env``), the
parameter server times its calls (``ParameterServer.stats()``) and each worker's store times its round trips and
the worker's activities (from its beats), and adds the running totals to the worker's reports under
``ray_store``. Without it (the default) nothing is timed: the server's methods are the plain ones, and the
worker's store makes one ``None`` test per call.
"""

from __future__ import annotations

import functools
import os
import time
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch as th

from pgplug.contracts.backend import Activity, Heartbeat, Message, ParameterStore

#: Seconds between two beats a busy worker sends on their own (between its calls, which carry them too).
BEAT_SEND_INTERVAL = 1.0
#: Seconds between two looks at the server of a worker waiting for the driver's callbacks.
WAIT_POLL = 0.02
#: Keep the timing counters (``PGPLUG_RAY_STATS=1``), read once when this module is imported in a process.
STATS = os.environ.get("PGPLUG_RAY_STATS", "") == "1"


class Timings:
    """Running totals of seconds and counts by kind, seconds by worker activity, and the policy lags seen."""

    def __init__(self) -> None:
        self.seconds: defaultdict[str, float] = defaultdict(float)
        self.counts: defaultdict[str, int] = defaultdict(int)
        self.lags: Counter[int] = Counter()
        self._activity: str | None = None
        self._since = time.perf_counter()

    def add(self, kind: str, seconds: float) -> None:
        self.seconds[kind] += seconds
        self.counts[kind] += 1

    def enter(self, activity: str) -> None:
        """A beat: the time since the previous beat was spent on the previous beat's activity."""
        now = time.perf_counter()
        if self._activity is not None:
            self.seconds[f"activity/{self._activity}"] += now - self._since
        self._activity, self._since = activity, now

    def snapshot(self) -> dict[str, Any]:
        """The totals so far, with this process's ``perf_counter`` and pid."""
        return {
            "clock": time.perf_counter(),
            "pid": os.getpid(),
            "seconds": dict(self.seconds),
            "counts": dict(self.counts),
            "lags": dict(self.lags),
        }


def timed(kind: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A method decorator adding each call's seconds to ``self.timings`` under ``kind``; with ``STATS`` off, the
    method itself, untouched."""

    def decorate(method: Callable[..., Any]) -> Callable[..., Any]:
        if not STATS:
            return method

        @functools.wraps(method)
        def timed_method(self: Any, *args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return method(self, *args, **kwargs)
            finally:
                self.timings.add(kind, time.perf_counter() - started)

        return timed_method

    return decorate


def as_tensor(array: np.ndarray) -> th.Tensor:
    """A tensor viewing ``array``, which may be read-only (Ray hands out object-store buffers so): only read."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return th.from_numpy(array)


def first_views(tensors: Sequence[th.Tensor]) -> list[int]:
    """The positions of ``tensors`` that are not a repeat of an earlier one (the same memory, shape and dtype).

    A ``state_dict`` lists a shared tensor once per name (SB3's ``CnnPolicy`` lists its one features extractor as
    ``features_extractor``, ``pi_features_extractor`` and ``vf_features_extractor``): moving it once is enough,
    and copying it into one name updates the others. A policy and its pickled copies share alike."""
    seen: set[tuple[int, tuple[int, ...], tuple[int, ...], str]] = set()
    firsts = []
    for position, tensor in enumerate(tensors):
        key = (tensor.data_ptr(), tuple(tensor.shape), tuple(tensor.stride()), str(tensor.dtype))
        if tensor.numel() == 0 or key not in seen:
            seen.add(key)
            firsts.append(position)
    return firsts


class FlatLayout:
    """Packs a list of tensors into one flat numpy buffer per dtype, and back, in a fixed order; a tensor listed
    twice (shared memory) travels once."""

    def __init__(self, tensors: Sequence[th.Tensor]) -> None:
        self.count = len(tensors)
        self.positions = first_views(tensors)
        distinct = [tensors[i] for i in self.positions]
        self.dtypes = sorted({str(t.dtype) for t in distinct})
        self.slots = [(self.dtypes.index(str(t.dtype)), t.numel(), tuple(t.shape)) for t in distinct]

    def _distinct(self, tensors: Sequence[th.Tensor]) -> list[th.Tensor]:
        if len(tensors) != self.count:
            raise ValueError(f"expected {self.count} tensors, got {len(tensors)}")
        return [tensors[i] for i in self.positions]

    def pack(self, tensors: Sequence[th.Tensor]) -> list[np.ndarray]:
        """One buffer per dtype."""
        parts: list[list[np.ndarray]] = [[] for _ in self.dtypes]
        for (group, _, _), tensor in zip(self.slots, self._distinct(tensors), strict=True):
            parts[group].append(tensor.detach().reshape(-1).cpu().numpy())
        return [np.concatenate(p) for p in parts]

    def unpack_into(self, buffers: Sequence[np.ndarray], into: Sequence[th.Tensor]) -> None:
        """Copy the buffers' values into ``into`` (same layout), in place."""
        offsets = [0] * len(self.dtypes)
        with th.no_grad():
            for (group, numel, shape), tensor in zip(self.slots, self._distinct(into), strict=True):
                start = offsets[group]
                tensor.copy_(as_tensor(buffers[group][start : start + numel]).reshape(shape))
                offsets[group] = start + numel

    def tensors(self, buffers: Sequence[np.ndarray]) -> list[th.Tensor]:
        """New tensors viewing the buffers (the server's gradients, as its optimizer wants them)."""
        offsets = [0] * len(self.dtypes)
        out = []
        for group, numel, shape in self.slots:
            start = offsets[group]
            out.append(as_tensor(buffers[group][start : start + numel]).reshape(shape))
            offsets[group] = start + numel
        return out


@dataclass
class WorkerNews:
    """What a worker tells the server with each call: steps counted since, its latest beat, its reports."""

    steps: int = 0
    beat: tuple[str, int] | None = None  # (activity, updates)
    messages: list[Message] = field(default_factory=list)


@dataclass
class Reply:
    """The server's answer to a worker: counters and flags, and the weights when asked for."""

    steps: int
    updates: int
    stop: bool
    progress: int
    weights: list[np.ndarray] | None = None
    lag: int | None = None  # the pushed gradient's policy lag: updates applied between its pull and its push


@dataclass
class DriverView:
    """The server's answer to the driver's sync: everything the driver loop reads each poll."""

    steps: int
    updates: int
    stop: bool
    messages: list[Message]
    heartbeats: dict[int, tuple[str, int, float]]  # rank → (activity, updates, seconds ago)


class RayWorkerStore(ParameterStore):
    """A worker's view of the parameter server: a :class:`ParameterStore` whose calls go to a Ray actor.

    :param server: the parameter server's actor handle
    :param rank: the worker's rank
    :param get: ``ray.get`` (passed in so that this module imports without Ray)
    :param pipeline: send each push without waiting for it; the next pull takes the weights it returns
    """

    def __init__(self, server: Any, rank: int, get: Callable[[Any], Any], pipeline: bool = False) -> None:
        self.server, self.rank, self._get, self.pipeline = server, rank, get, pipeline
        self._news = WorkerNews()
        self._last: Reply = self._get(server.status.remote(rank, WorkerNews()))
        self._fresh: tuple[list[np.ndarray], int] | None = None  # (weights, their update count) for the next pull
        self._synced_at = 0  # the update count of the weights in the local policy
        self._in_flight: Any = None  # a pipelined push not yet collected
        self._lags: list[int] = []  # lags of pipelined pushes collected, not yet reported by a push
        self._beat_sent = time.monotonic()
        self._layout: FlatLayout | None = None
        self._grad_layouts: dict[tuple[int, ...], FlatLayout] = {}
        self.timings: Timings | None = Timings() if STATS else None

    def _wait(self, kind: str, ref: Any, since: float | None = None) -> Any:
        """``get(ref)``; with timings, its seconds (from ``since`` if given: the call's sending) under ``kind``."""
        if self.timings is None:
            return self._get(ref)
        started = time.perf_counter() if since is None else since
        value = self._get(ref)
        self.timings.add(kind, time.perf_counter() - started)
        return value

    def send(self, message: Message) -> None:
        """The worker loop's ``send``: the message travels with the next call (a report with the timings)."""
        if self.timings is not None and message[0] == "report":
            message[2]["ray_store"] = self.timings.snapshot()
        self._news.messages.append(message)

    def _take_news(self) -> WorkerNews:
        news, self._news = self._news, WorkerNews()
        self._beat_sent = time.monotonic()
        return news

    def _took(self, reply: Reply) -> Reply:
        self._last = reply
        return reply

    def flush(self) -> None:
        """Send what is pending (the last report) and wait until the server has it."""
        self._collect_in_flight()
        self._took(self._wait("status", self.server.status.remote(self.rank, self._take_news())))

    def local_policy(self) -> Any:
        return self._get(self.server.local_policy.remote())

    def pull(self, into: Sequence[th.Tensor]) -> int:
        """The newest weights a reply brought, else (pipelined, a push in flight) the local ones as they are, else
        a round trip."""
        if self._layout is None:
            self._layout = FlatLayout(into)
        if self._fresh is None and self._in_flight is None:
            reply = self._took(self._wait("pull", self.server.pull.remote(self.rank, self._take_news())))
            self._fresh = (reply.weights, reply.updates)
        if self._fresh is not None:
            weights, self._synced_at = self._fresh
            self._layout.unpack_into(weights, into)
            self._fresh = None
        return self._synced_at

    def push(self, grads: Sequence[th.Tensor | None], learning_rate: float, rank: int) -> int:
        present = [g for g in grads if g is not None]
        missing = tuple(i for i, g in enumerate(grads) if g is None)  # parameters without a gradient (frozen)
        if missing not in self._grad_layouts:
            self._grad_layouts[missing] = FlatLayout(present)
        packed = self._grad_layouts[missing].pack(present)
        sent = time.perf_counter() if self.timings is not None else None
        ref = self.server.push.remote(self.rank, packed, missing, learning_rate, self._synced_at, self._take_news())
        if not self.pipeline:
            reply = self._took(self._wait("push", ref, since=sent))
            self._fresh = (reply.weights, reply.updates)
            return reply.updates
        if self.timings is not None and sent is not None:
            self.timings.add("push sent", time.perf_counter() - sent)
        # Pipelined: this push is applied while the next rollout runs on the weights the previous one returned.
        self._collect_in_flight()
        self._in_flight = ref
        # Its lag is known once it is applied: each update reports the exact lag of the worker's previous one.
        lag = self._lags.pop(0) if self._lags else 0
        return self._synced_at + 1 + lag

    def _collect_in_flight(self) -> None:
        if self._in_flight is None:
            return
        reply = self._took(self._wait("push collected", self._in_flight))
        self._in_flight = None
        self._fresh = (reply.weights, reply.updates)
        if reply.lag is not None:
            self._lags.append(reply.lag)

    def add_steps(self, n: int) -> int:
        self._news.steps += n
        return self.steps

    @property
    def steps(self) -> int:
        return self._last.steps + self._news.steps

    @property
    def n_updates(self) -> int:
        return self._last.updates

    def request_stop(self) -> None:
        self._get(self.server.request_stop.remote())

    def stop_requested(self) -> bool:
        return self._last.stop

    def publish_progress(self, steps: int) -> None:
        raise NotImplementedError("the driver publishes progress through RayDriverStore")

    @property
    def progress(self) -> int:
        return self._last.progress

    def wait_for_driver(self, max_ahead: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.steps - self.progress > max_ahead and not self.stop_requested():
            if time.monotonic() >= deadline:
                return False
            time.sleep(WAIT_POLL)
            self._took(self._wait("status", self.server.status.remote(self.rank, self._take_news())))
        return True

    def beat(self, rank: int, activity: Activity, updates: int) -> None:
        if self.timings is not None:
            self.timings.enter(activity.name.lower())
        self._news.beat = (activity.value, updates)
        if time.monotonic() - self._beat_sent >= BEAT_SEND_INTERVAL:
            self.server.beat.remote(self.rank, self._take_news())  # on its own, not waited for

    def heartbeats(self) -> dict[int, Heartbeat]:
        raise NotImplementedError("the driver reads the heartbeats through RayDriverStore")


class RayDriverStore(ParameterStore):
    """The driver's view of the parameter server: synced once per poll, weights fetched when they changed.

    When the server is lost, the last weights fetched stay: what the driver saves.
    """

    def __init__(self, server: Any, get: Callable[..., Any], steps: int, updates: int) -> None:
        self.server, self._get = server, get
        self._view = DriverView(steps=steps, updates=updates, stop=False, messages=[], heartbeats={})
        self._synced = time.monotonic()
        self._progress = steps
        self._weights: list[np.ndarray] | None = None
        self.weights_at = -1  # the update count of the weights fetched (-1: none yet)
        self._layout: FlatLayout | None = None
        self.server_lost = False

    def sync(self) -> list[Message]:
        """One round trip: publish the driver's progress, take the workers' messages and the counters."""
        view: DriverView = self._get(self.server.driver_sync.remote(self._progress))
        self._view, self._synced = view, time.monotonic()
        return view.messages

    def fetch_weights(self) -> None:
        """Fetch the global weights if they changed since the last fetch."""
        if self.weights_at == self._view.updates and self._weights is not None:
            return
        self._weights, self.weights_at = self._get(self.server.weights.remote())

    def local_policy(self) -> Any:
        return self._get(self.server.local_policy.remote())

    def pull(self, into: Sequence[th.Tensor]) -> int:
        if not self.server_lost:
            self.fetch_weights()
        if self._weights is not None:
            if self._layout is None:
                self._layout = FlatLayout(into)
            self._layout.unpack_into(self._weights, into)
        return self.weights_at

    def push(self, grads: Sequence[th.Tensor | None], learning_rate: float, rank: int) -> int:
        raise NotImplementedError("only workers push")

    def add_steps(self, n: int) -> int:
        raise NotImplementedError("only workers count steps")

    @property
    def steps(self) -> int:
        return self._view.steps

    @property
    def n_updates(self) -> int:
        return self._view.updates

    def request_stop(self) -> None:
        if not self.server_lost:
            self._get(self.server.request_stop.remote(), timeout=5.0)

    def stop_requested(self) -> bool:
        return self._view.stop

    def publish_progress(self, steps: int) -> None:
        self._progress = steps  # sent with the next sync

    @property
    def progress(self) -> int:
        return self._progress

    def wait_for_driver(self, max_ahead: int, timeout: float) -> bool:
        raise NotImplementedError("only workers wait for the driver")

    def beat(self, rank: int, activity: Activity, updates: int) -> None:
        raise NotImplementedError("only workers beat")

    def heartbeats(self) -> dict[int, Heartbeat]:
        since = time.monotonic() - self._synced
        return {
            rank: Heartbeat(Activity(activity), updates, seconds + since)
            for rank, (activity, updates, seconds) in self._view.heartbeats.items()
        }
