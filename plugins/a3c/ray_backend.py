"""The ray backend: A3C's workers as Ray actors on any node, one parameter-server actor on the driver's node.

``A3C(backend="ray")`` starts a local Ray instance for ``learn()`` and shuts it down after (nothing of it
outlives the call); ``backend_kwargs={"address": "auto"}`` (or ``HOST:PORT``, or the CLI's ``--address``)
joins an existing cluster and only disconnects from it. The parameter server (``ray_actors.ParameterServer``,
no CPU reserved) holds the global policy and its optimizer; ``n_workers`` ``A3CWorker`` actors of one CPU
each run pgplug's worker loop. The driver keeps the SB3 face: it syncs with the server once per poll.

Faults: a worker actor that dies (killed, its node lost) is replaced, up to ``max_restarts`` times in all,
and only its rollout in flight is lost; one more death ends the run in one line. A worker's own error
(an env raising, divergence) ends the run as with local processes. Losing the parameter server ends the
run with the weights the driver fetched last, which the caller saves.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

import cloudpickle

from pgplug.contracts.backend import GlobalModel, Message, ParameterStore, WorkerBackend, WorkerDied, WorkerJob
from pgplug.errors import PgplugError
from pgplug.plugins.a3c.process_backend import sigint_deferred
from pgplug.plugins.a3c.ray_actors import A3CWorker, ParameterServer
from pgplug.plugins.a3c.ray_cluster import (
    DEFAULT_OBJECT_STORE_MIB,
    Connection,
    ShippedPlugins,
    check_ray_installed,
    connect,
    local_versions,
    require_ray,
    ship_plugins,
)
from pgplug.plugins.a3c.ray_store import RayDriverStore
from pgplug.plugins.a3c.worker import error_of
from pgplug.validation import check_bool, check_non_negative_int, check_positive_int

logger = logging.getLogger("pgplug")

#: Seconds the driver waits for the parameter server's answer before calling it lost.
SERVER_TIMEOUT = 30.0
#: Seconds the parameter server gets to start (a busy node, a runtime env to install) before the run ends.
SERVER_START_TIMEOUT = 180.0
#: Seconds the workers get, once asked to stop, to finish their update and send their last report.
STOP_GRACE = 5.0


class ParameterServerLost(WorkerDied):
    """The parameter-server actor died or stopped answering; the driver keeps the weights it fetched last."""


class RayBackend(WorkerBackend):
    """A3C's workers as Ray actors, around a parameter-server actor on the driver's node.

    :param address: a Ray cluster to join (``auto``, ``HOST:PORT``, ``ray://HOST:PORT``); None starts a local
        instance for ``learn()`` and shuts it down after
    :param max_restarts: worker actors that died (killed, node lost) are replaced this many times in all
    :param pipeline: push each gradient while the next rollout runs (on the weights the previous push
        returned): more throughput, one more update of policy lag
    :param object_store_mib: the object store of a local instance pgplug starts, in MiB
    """

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        max_restarts: int = 3,
        pipeline: bool = False,
        object_store_mib: int = DEFAULT_OBJECT_STORE_MIB,
    ) -> None:
        self.prepare(address, max_restarts, pipeline, object_store_mib)
        self.address, self.max_restarts, self.pipeline = address, max_restarts, pipeline
        self.object_store_mib = object_store_mib
        self.restarts = 0  # worker actors replaced so far
        self._ray: Any = None
        self._connection: Connection | None = None
        self._shipped: ShippedPlugins | None = None
        self._server: Any = None
        self._store: RayDriverStore | None = None
        self._policy: Any = None  # the driver's global policy, which gets the server's optimizer state at the end
        self._job_bytes = b""
        self._actors: dict[int, Any] = {}
        self._runs: dict[Any, int] = {}  # a worker's run() in flight → its rank
        self._done: set[int] = set()  # ranks whose run() returned
        self._n_workers = 0
        self._stopping = False

    @classmethod
    def runs_workers_here(cls, address: str | None = None, **options: Any) -> bool:
        """Only pgplug's own local Ray instance (no ``address``) runs the workers on this machine's cores."""
        return address is None

    @classmethod
    def prepare(
        cls,
        address: str | None = None,
        max_restarts: int = 3,
        pipeline: bool = False,
        object_store_mib: int = DEFAULT_OBJECT_STORE_MIB,
    ) -> None:
        """Check the options and that Ray is installed, in one line each, when the model is built."""
        if address is not None and (not isinstance(address, str) or not address.strip()):
            raise PgplugError(f"address must be 'auto', HOST:PORT or ray://HOST:PORT, got {address!r}")
        check_non_negative_int("max_restarts", max_restarts)
        check_bool("pipeline", pipeline)
        check_positive_int("object_store_mib", object_store_mib)
        check_ray_installed()

    # -- start ---------------------------------------------------------------------------------------

    def start(self, job: WorkerJob, n_workers: int, model: GlobalModel) -> ParameterStore:
        self._shipped = ship_plugins()
        # connect() first: it sets a local instance's defaults before Ray is first imported, when Ray reads them.
        self._connection = connect(self.address, n_workers, self.object_store_mib, self._shipped)
        self._ray = ray = require_ray()
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        print(f"A3C on Ray: {self._connection.description}", flush=True)
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        server_class = ray.remote(ParameterServer).options(num_cpus=0, scheduling_strategy=here)
        self._server = server_class.remote(cloudpickle.dumps(model), n_workers, self._shipped.modules)
        self._store = RayDriverStore(self._server, self._server_get, model.steps, model.updates)
        self._wait_for_the_server()
        self._policy = model.policy
        self._job_bytes = cloudpickle.dumps(job)
        self._n_workers = n_workers
        for rank in range(n_workers):
            self._start_worker(rank)
        return self._store

    def _start_worker(self, rank: int) -> None:
        assert self._shipped is not None
        worker_class = self._ray.remote(A3CWorker).options(num_cpus=1)
        actor = worker_class.remote(
            rank, self._job_bytes, self._server, self._shipped.modules, local_versions(), self.pipeline
        )
        self._actors[rank] = actor
        self._runs[actor.run.remote()] = rank

    # -- watching ------------------------------------------------------------------------------------

    def poll(self, timeout: float) -> list[Message]:
        started = time.monotonic()
        messages = self._sync()
        self._reap(raise_errors=True)
        if not messages:
            time.sleep(max(timeout - (time.monotonic() - started), 0.0))
        return messages

    def _sync(self) -> list[Message]:
        """The driver's round trip to the server."""
        assert self._store is not None
        return self._store.sync()

    def _wait_for_the_server(self) -> None:
        """Until the server has started: its start-up gets longer than a call (SERVER_START_TIMEOUT)."""
        assert self._store is not None
        ray = self._ray
        try:
            ray.get(self._server.pid.remote(), timeout=SERVER_START_TIMEOUT)
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError) as exc:
            self._store.server_lost = self._stopping = True
            raise ParameterServerLost(
                f"the A3C parameter server did not start ({type(exc).__name__}; {SERVER_START_TIMEOUT:.0f} s allowed)"
            ) from None

    def _server_get(self, ref: Any, timeout: float | None = None) -> Any:
        """``ray.get`` for every call of the driver to the server (its store's included), waiting ``timeout`` or
        :data:`SERVER_TIMEOUT` seconds: a server that died or does not answer ends the run in one line, whichever
        call finds out."""
        assert self._store is not None
        ray = self._ray
        try:
            return ray.get(ref, timeout=SERVER_TIMEOUT if timeout is None else timeout)
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError) as exc:
            self._store.server_lost = self._stopping = True
            raise ParameterServerLost(
                f"the A3C parameter server was lost ({type(exc).__name__}); the weights of update "
                f"{self._store.weights_at} (the driver's last copy) are kept"
            ) from None

    def _reap(self, raise_errors: bool) -> None:
        """Look at the workers whose ``run()`` ended: done, failed (raised if ``raise_errors``), or died
        (replaced while restarts are left)."""
        ray = self._ray
        ended, _ = ray.wait(list(self._runs), num_returns=len(self._runs), timeout=0) if self._runs else ([], [])
        for ref in ended:
            rank = self._runs.pop(ref)
            try:
                result = ray.get(ref)
            except ray.exceptions.RayActorError as exc:
                if not self._stopping:
                    self._replace(rank, exc)
                continue
            self._done.add(rank)
            if result is not None and raise_errors and not self._stopping:
                self._stopping = True
                raise error_of(rank, result[2])

    def _replace(self, rank: int, exc: BaseException) -> None:
        """A new actor for worker ``rank``, if restarts are left; one line otherwise."""
        why = f"A3C worker {rank} died ({type(exc).__name__}: its process was killed or its node lost)"
        if self.restarts >= self.max_restarts:
            self._stopping = True
            raise WorkerDied(f"{why}, and the {self.max_restarts} restart(s) of max_restarts are used up")
        self.restarts += 1
        logger.warning("%s; restarting it (restart %d of max_restarts=%d)", why, self.restarts, self.max_restarts)
        with contextlib.suppress(Exception):
            self._ray.kill(self._actors[rank], no_restart=True)
        self._server.restarting.remote(rank)
        self._start_worker(rank)

    def telemetry(self) -> dict[str, int | float]:
        return {"worker restarts": self.restarts} if self.restarts else {}

    def check(self) -> None:
        if not self._stopping:
            self._reap(raise_errors=True)

    def finished(self) -> bool:
        return len(self._done) == self._n_workers

    # -- stop ----------------------------------------------------------------------------------------

    def stop(self) -> list[Message]:
        with sigint_deferred():
            return self._stop()

    def _stop(self) -> list[Message]:
        self._stopping = True
        messages: list[Message] = []
        try:
            if self._store is not None and not self._store.server_lost:
                messages = self._finish_workers()
        finally:
            self._end_everything()
        return [m for m in messages if m[0] != "error"]

    def _finish_workers(self) -> list[Message]:
        """Ask the workers to stop, take their last reports, fetch the final weights (which ``pull`` then gives) and
        the optimizer's final state (which the driver's policy takes now: it is saved with the model, and a next
        ``learn()`` starts from it, as with the other backends, whose optimizer state is the driver's own)."""
        assert self._store is not None
        ray, messages = self._ray, []
        with contextlib.suppress(ray.exceptions.RayError, PgplugError):
            self._store.request_stop()
            deadline = time.monotonic() + STOP_GRACE
            while self._runs and time.monotonic() < deadline:
                messages += self._sync()
                self._reap(raise_errors=False)
                time.sleep(0.02)
            messages += self._sync()
            self._store.fetch_weights()
            optimizer_state = self._server_get(self._server.optimizer_state.remote())
            if optimizer_state is not None:
                self._policy.optimizer.load_state_dict(optimizer_state)
        return messages

    def _end_everything(self) -> None:
        """Kill the actors this run started and stop (or leave) Ray: nothing the backend started runs after."""
        ray = self._ray
        try:
            if self._store is not None:
                self._store.server_lost = True  # gone now: the driver keeps the weights it has, and calls Ray no more
            for actor in [*self._actors.values(), self._server]:
                if actor is not None:
                    with contextlib.suppress(Exception):
                        ray.kill(actor, no_restart=True)
        finally:
            if self._shipped is not None:
                self._shipped.remove()
            if self._connection is not None:
                self._connection.close()
