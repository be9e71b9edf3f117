"""A3C's Ray backend against the local process backend, and where one parameter server stops scaling.

Every command that starts Ray must run in a loopback-only network namespace (``tests/loopback.sh``): the
script refuses to start otherwise, unless ``--address`` names a real cluster to use instead.

    tests/loopback.sh .venv/bin/python benchmarks/a3c_ray.py --quick          # a smoke run, under 3 minutes
    tests/loopback.sh .venv/bin/python benchmarks/a3c_ray.py                  # everything, about 20 minutes
    tests/loopback.sh .venv/bin/python benchmarks/a3c_ray.py --part compare --no-pong --pairs 5

Parts (``--part``, default all):

- ``compare``: CartPole-v1 (``MlpPolicy``, 4 envs per worker, t_max 5, the settings of ``a3c_throughput.py``)
  at ``--workers`` 1, 2 and 4 workers, on the ``process`` backend, the ``ray`` backend and (2 workers) the
  ``ray`` backend with ``pipeline=True``; and Pong (the Nature CNN, 2 workers × 8 envs) on ``process``, ``ray``
  and ``ray`` with a 1 GiB object store (``object_store_mib=1024``; the default is 100 MiB). Alternating
  rounds (A B C, C B A, ...), each run a fresh subprocess. Steady steps/s (from 20% of the budget, once every
  worker runs, to 90%) and steps per CPU-second, the CPU being that of the driver, all its descendants and
  every process of its Ray session (utime+stime+reaped children from ``/proc/<pid>/stat``, before and after
  the window). Ratios are medians of per-round ratios. From the Ray runs (with ``PGPLUG_RAY_STATS=1``: the
  server's and the workers' timing counters, see ``plugins/a3c/ray_store.py``): server updates/s, the server's
  busy fraction (time inside its calls, its main thread's CPU, its process's CPU) and calls by kind, the
  per-update time split (pull, rollout, gradient, push round trip; the server's push call and optimizer
  step), the policy-lag distribution, start-up (``ray.init`` to the first update), and the MiB the object
  store spilled to disk (from the session's raylet log).
- ``recovery``: SIGKILL one A3CWorker actor's process (by pid) mid-run; the time until the driver replaced it
  and until the replacement's first update reached the server.
- ``compute``: the real cost of one update on this machine, one worker in-process (``backend="serial"``):
  rollout and gradient of the CartPole MLP (4 envs) and of the Nature CNN on Pong (8 envs, the settings of
  ``a3c_throughput.py``), the local optimizer step, and packing the gradient / unpacking the weights into flat
  buffers; the floats and bytes a push and a pull move.
- ``simulate``: the scale-out study. The real ``ParameterServer`` actor (real optimizer steps, real weight
  packing, real Ray calls) serves simulated workers: threads that sleep for the measured compute time (rollout +
  gradient + pack/unpack, from ``compute``) instead of computing, then call the server's ``push`` with a
  synthetic gradient of the real size, with a modelled network around each call: one-way latency
  (``--latency-ms``) and the server's link (``--bandwidth-gbit``, one transfer at a time per direction, bytes
  from the flat buffers). A simulated driver polls the server as the real one does (``driver_sync`` and the
  weights every 10 ms). For each worker count: server updates/s, the server's busy fraction, and the prediction
  (saturation at worker update period / server time per update).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from typing import Any

CARTPOLE, PONG = "CartPole-v1", "PongNoFrameskip-v4"
TICKS = os.sysconf("SC_CLK_TCK")
#: The Ray backend's timing counters (plugins/a3c/ray_store.py), on in every Ray run of this script.
STATS_ENV = {"PGPLUG_RAY_STATS": "1"}
#: policy name -> what ``compute`` and ``simulate`` build (the settings of a3c_throughput.py).
POLICIES: dict[str, dict[str, Any]] = {
    "mlp": {"policy": "MlpPolicy", "env": CARTPOLE, "n_envs": 4, "kwargs": {"ent_coef": 0.0}},
    "cnn": {"policy": "CnnPolicy", "env": PONG, "n_envs": 8, "kwargs": {"ent_coef": 0.01, "vf_coef": 0.25}},
}
SETUP_NAMES = {"process": "process", "ray": "ray", "ray-pipe": "ray pipeline", "ray-os1g": "ray 1 GiB store"}


# -- where we are, and the CPU time of what we started ----------------------------------------------------


def non_loopback_interfaces() -> list[str]:
    """The network interfaces of this namespace other than ``lo`` (``/proc/net/dev``)."""
    with open("/proc/net/dev") as dev:
        lines = dev.read().splitlines()[2:]
    return [name for line in lines if (name := line.split(":", 1)[0].strip()) != "lo"]


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) clock ticks of all the machine's cores so far, every process's (``/proc/stat``)."""
    with open("/proc/stat") as stat:
        ticks = [int(x) for x in stat.readline().split()[1:]]
    idle = ticks[3] + ticks[4]  # idle, iowait
    total = sum(ticks[:8])  # guest time is already in user
    return total - idle, total


def machine_busy(before: tuple[int, int], after: tuple[int, int]) -> float:
    """The fraction of the machine's cores busy between two :func:`machine_jiffies` readings (any process's)."""
    return (after[0] - before[0]) / max(after[1] - before[1], 1)


def proc_stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds: utime + stime + those of its reaped children) of a live process."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[1]), sum(int(x) for x in fields[11:15]) / TICKS


def main_thread_cpu(pid: int) -> float:
    """CPU seconds of a process's main thread, where a Ray actor runs its calls one at a time."""
    try:
        with open(f"/proc/{pid}/task/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def session_cpu(root: int, session: str | None) -> dict[int, float]:
    """CPU seconds of ``root``, its descendants and every process whose command line names the Ray ``session``."""
    stats = {int(e): s for e in os.listdir("/proc") if e.isdigit() and (s := proc_stat(int(e))) is not None}
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    chosen, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid in stats and pid not in chosen:
            chosen.add(pid)
            todo += children.get(pid, [])
    if session:
        chosen |= {pid for pid in stats if pid not in chosen and session in cmdline(pid)}
    return {pid: stats[pid][1] for pid in chosen}


def cpu_between(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds spent between two :func:`session_cpu` readings (a process born in between counts whole)."""
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


def ray_session() -> str | None:
    import ray

    try:
        return ray._private.worker._global_node.session_name  # type: ignore[attr-defined]
    except AttributeError:  # joined a cluster through a client: no local node object
        return None


def spilled_mib(session: str | None) -> int:
    """MiB the session's object store spilled to disk, from its raylet's log (the last running total)."""
    import re

    if not session:
        return 0
    try:
        with open(os.path.join("/tmp/ray", session, "logs", "raylet.out"), errors="replace") as log:
            totals = re.findall(r"Spilled (\d+) MiB", log.read())
    except OSError:
        return 0
    return int(totals[-1]) if totals else 0


def diff_counts(after: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    """``Timings.snapshot`` totals after minus before, by key (seconds, counts, lags)."""
    out: dict[str, Any] = {}
    for part in ("seconds", "counts", "lags"):
        a, b = after.get(part, {}), before.get(part, {})
        out[part] = {k: v - b.get(k, 0) for k, v in a.items() if v - b.get(k, 0)}
    return out


def lag_summary(lags: dict[Any, int]) -> dict[str, float]:
    """Mean, quantiles and shares of a {lag: count} histogram."""
    counts = sorted((int(k), v) for k, v in lags.items())
    total = sum(v for _, v in counts)
    if not total:
        return {}

    def quantile(q: float) -> int:
        seen = 0
        for lag, n in counts:
            seen += n
            if seen >= q * total:
                return lag
        return counts[-1][0]

    share = Counter({min(lag, 3): 0 for lag, _ in counts})
    for lag, n in counts:
        share[min(lag, 3)] += n
    return {
        "n": total,
        "mean": sum(lag * n for lag, n in counts) / total,
        "p50": quantile(0.5),
        "p90": quantile(0.9),
        "p99": quantile(0.99),
        "max": counts[-1][0],
        **{f"share{k}": share.get(k, 0) / total for k in range(4)},
    }


# -- one run of A3C on CartPole (a subprocess) -----------------------------------------------------------


def run_a3c(spec: dict[str, Any]) -> dict[str, Any]:
    """One timed ``learn`` in this process: steady rates, CPU, and with Ray the server's and workers' counters."""
    import torch as th
    from stable_baselines3.common.callbacks import BaseCallback

    th.set_num_threads(1)
    ray_run = spec["backend"] == "ray"
    steps, n_workers = spec["steps"], spec["n_workers"]
    marks: dict[str, float] = {}
    backend_kwargs: dict[str, Any] = {}
    if ray_run:
        import ray

        from pgplug.plugins.a3c import ray_backend

        backend_kwargs = {"pipeline": spec["pipeline"]}
        if spec.get("object_store_mib"):
            backend_kwargs["object_store_mib"] = spec["object_store_mib"]
        if spec["address"]:
            # Joined here, so that the actors' job carries the timing switch; the backend uses this connection.
            ray.init(address=spec["address"], runtime_env={"env_vars": STATS_ENV})
        connect = ray_backend.connect

        def timed_connect(*args: Any, **kwargs: Any) -> Any:
            marks["connect_start"] = time.perf_counter()
            try:
                return connect(*args, **kwargs)
            finally:
                marks["connected"] = time.perf_counter()

        ray_backend.connect = timed_connect

    model = build_model(spec["policy"], spec["backend"], n_workers, spec["seed"], backend_kwargs)
    root = os.getpid()

    class Probe(BaseCallback):
        """The steady window's readings; the workers' latest counters; the kill and the recovery."""

        def __init__(self) -> None:
            super().__init__()
            self.window: list[dict[str, Any]] = []
            self.workers: dict[int, dict[str, Any]] = {}  # rank -> its store's latest Timings snapshot
            self.lags: Counter[int] = Counter()  # lags the workers reported within the window
            self.session: str | None = None
            self.first_update: float | None = None
            self.kill: dict[str, Any] = {}
            self._looked = 0.0

        def server(self) -> Any:
            return self.locals["store"].server

        def reading(self) -> dict[str, Any]:
            out: dict[str, Any] = {"t": time.perf_counter(), "steps": self.num_timesteps}
            if ray_run:
                import ray

                stats = ray.get(self.server().stats.remote())
                out["server"], out["server_cpu"] = stats, (proc_stat(stats["pid"]) or (0, 0.0))[1]
                out["server_main"] = main_thread_cpu(stats["pid"])
                out["workers"] = {rank: dict(s) for rank, s in self.workers.items()}
            out["cpu"] = session_cpu(root, self.session)
            out["machine"] = machine_jiffies()
            return out

        def all_running(self) -> bool:
            return sum(key.startswith("worker ") for key in self.model.live_metrics()) == n_workers

        def _on_step(self) -> bool:
            now = time.perf_counter()
            if self.first_update is None and self.locals["store"].n_updates >= 1:
                self.first_update = now
                if ray_run:
                    self.session = ray_session()
            if spec.get("kill"):
                if self.kill or (self.num_timesteps >= spec["kill_at"] and self.all_running()):
                    return self.kill_and_watch(now)
                return True
            opens = not self.window and self.num_timesteps >= 0.2 * steps and self.all_running()
            if opens or (len(self.window) == 1 and self.num_timesteps >= 0.9 * steps):
                self.window.append(self.reading())
            return True

        def kill_and_watch(self, now: float) -> bool:
            """Kill one worker's process once; True until its replacement's first update reached the server."""
            import ray

            backend, kill = self.locals["backend"], self.kill
            if not kill:
                pids = sorted(p for p in session_cpu(root, self.session) if cmdline(p).startswith("ray::A3CWorker"))
                if not pids:
                    raise SystemExit("no A3CWorker process found to kill")
                kill.update(pid=pids[0], actors=dict(backend._actors), t=time.perf_counter())
                os.kill(pids[0], signal.SIGKILL)
                return True
            if now - self._looked < 0.005:
                return True
            self._looked = now
            if "detected" not in kill:
                if backend.restarts == 0:
                    return True
                kill["detected"] = now
                kill["rank"] = next(r for r, a in backend._actors.items() if a is not kill["actors"].get(r))
                kill["pushes"] = ray.get(self.server().stats.remote())["counts"].get(f"push/{kill['rank']}", 0)
                return True
            if ray.get(self.server().stats.remote())["counts"].get(f"push/{kill['rank']}", 0) > kill["pushes"]:
                kill["recovered"] = time.perf_counter()
                return False  # measured: end the run
            return True

        def _on_rollout_end(self) -> None:
            report, rank = self.locals.get("report"), self.locals.get("worker")
            if report is None:
                return
            if "ray_store" in report:
                self.workers[rank] = report["ray_store"]
            if len(self.window) == 1:
                self.lags.update(int(u["a3c/policy_lag"]) for u in report["updates"])

    probe = Probe()
    start = time.perf_counter()
    model.learn(steps, callback=probe)
    wall = time.perf_counter() - start
    out: dict[str, Any] = {"spec": spec, "wall_s": wall, "steps": model.num_timesteps}
    out["spilled_mib"] = spilled_mib(probe.session) if ray_run else 0
    out["startup"] = {
        "to_first_update": (probe.first_update or float("nan")) - marks.get("connect_start", start),
        "connect": marks["connected"] - marks["connect_start"] if "connected" in marks else None,
    }
    if spec.get("kill"):
        kill = probe.kill
        if "recovered" not in kill:
            raise SystemExit(f"the killed worker's replacement did not update within {steps} steps")
        out["recovery"] = {"detected": kill["detected"] - kill["t"], "first_update": kill["recovered"] - kill["t"]}
        return out
    if len(probe.window) < 2:
        raise SystemExit(f"the workers never all ran between 20% and 90% of {steps} steps; raise --steps")
    a, b = probe.window
    seconds = b["t"] - a["t"]
    cpu = cpu_between(a["cpu"], b["cpu"])
    out.update(
        window_s=seconds,
        steady=(b["steps"] - a["steps"]) / seconds,
        per_cpu_s=(b["steps"] - a["steps"]) / cpu,
        cores=cpu / seconds,
        processes=len(b["cpu"]),
        machine_busy=machine_busy(a["machine"], b["machine"]),
        lag_hist=dict(probe.lags),  # the workers' reports (pipeline: each update's lag reported one update late)
    )
    if ray_run:
        server = diff_counts(b["server"], a["server"])
        workers: dict[str, Any] = {"seconds": Counter(), "counts": Counter()}
        for rank, after in b["workers"].items():
            d = diff_counts(after, a["workers"].get(rank, {}))
            workers["seconds"].update(d["seconds"])
            workers["counts"].update(d["counts"])
        out.update(server=server, workers=workers)
        out.update(server_cpu=b["server_cpu"] - a["server_cpu"], server_main=b["server_main"] - a["server_main"])
        out["lag_hist"] = server["lags"]  # the server's: every gradient applied in the window
    return out


# -- the real cost of one update, in-process ---------------------------------------------------------------


def build_model(
    name: str,
    backend: str = "serial",
    n_workers: int = 1,
    seed: int = 0,
    backend_kwargs: dict[str, Any] | None = None,
) -> Any:
    """A3C with the settings of ``a3c_throughput.py`` for ``POLICIES[name]`` (t_max 5)."""
    from pgplug import A3C  # type: ignore[attr-defined]

    config = POLICIES[name]
    kwargs: dict[str, Any] = dict(config["kwargs"])
    if config["env"] == PONG:
        from stable_baselines3.common.sb2_compat.rmsprop_tf_like import RMSpropTFLike

        kwargs["policy_kwargs"] = {"optimizer_class": RMSpropTFLike, "optimizer_kwargs": {"eps": 1e-5}}
    return A3C(
        config["policy"],
        config["env"],
        n_workers=n_workers,
        n_envs_per_worker=config["n_envs"],
        t_max=5,
        seed=seed,
        device="cpu",
        backend=backend,
        backend_kwargs=backend_kwargs or {},
        **kwargs,
    )


def run_compute(name: str, updates: int) -> dict[str, Any]:
    """Seconds per update of one in-process worker (serial backend), by activity, and of the flat-buffer copies."""
    import torch as th

    from pgplug.plugins.a3c import serial_backend
    from pgplug.plugins.a3c.ray_store import FlatLayout, Timings

    th.set_num_threads(1)
    timings = Timings()

    class TimedStore(serial_backend.SharedMemoryStore):  # type: ignore[name-defined,misc]
        def beat(self, rank: int, activity: Any, updates: int) -> None:
            timings.enter(activity.name.lower())
            super().beat(rank, activity, updates)

        def push(self, grads: Any, learning_rate: float, rank: int) -> int:
            started = time.perf_counter()
            try:
                return super().push(grads, learning_rate, rank)
            finally:
                timings.add("apply", time.perf_counter() - started)

    serial_backend.SharedMemoryStore = TimedStore  # type: ignore[attr-defined,misc]
    model = build_model(name)
    config = POLICIES[name]
    per_update = config["n_envs"] * 5
    model.learn(5 * per_update)  # warm-up: the first updates build caches
    before = timings.snapshot()
    model.learn(updates * per_update, reset_num_timesteps=False)
    d = diff_counts(timings.snapshot(), before)
    n = d["counts"]["apply"]
    params = list(model.policy.parameters())
    state = list(model.policy.state_dict().values())
    grads = [th.randn_like(p) for p in params]
    grad_layout, state_layout = FlatLayout(grads), FlatLayout(state)
    packed, weights = grad_layout.pack(grads), state_layout.pack(state)
    copies = []
    for _ in range(max(5, min(200, 20_000_000 // max(sum(w.size for w in weights), 1)))):
        started = time.perf_counter()
        grad_layout.pack(grads)
        state_layout.unpack_into(weights, state)
        copies.append(time.perf_counter() - started)
    return {
        "name": name,
        "updates": n,
        "rollout": d["seconds"].get("activity/stepping", 0.0) / n,
        "gradient": d["seconds"].get("activity/computing", 0.0) / n,
        "apply": d["seconds"]["apply"] / n,
        "copies": statistics.median(copies),
        "grad_floats": int(sum(p.size for p in packed)),
        "weight_floats": int(sum(w.size for w in weights)),
        "param_floats": int(sum(p.numel() for p in params)),
        "grad_bytes": int(sum(p.nbytes for p in packed)),
        "weight_bytes": int(sum(w.nbytes for w in weights)),
        "optimizer": type(model.policy.optimizer).__name__,
        "steps_per_update": per_update,
    }


# -- the scale-out simulation (a subprocess) -------------------------------------------------------------


class Link:
    """One direction of the server's network link: transfers go one at a time, at ``rate`` bytes/s (FIFO)."""

    def __init__(self, rate: float) -> None:
        self.rate, self.free_at, self.lock = rate, 0.0, threading.Lock()

    def transfer(self, size: int) -> None:
        if self.rate <= 0:
            return
        with self.lock:
            start = max(time.perf_counter(), self.free_at)
            self.free_at = start + size / self.rate
            end = self.free_at
        time.sleep(max(end - time.perf_counter(), 0.0))


def run_simulation(spec: dict[str, Any]) -> dict[str, Any]:
    """The real parameter server under simulated workers (threads of this process) and a simulated driver."""
    import cloudpickle
    import numpy as np
    import ray
    import torch as th
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from pgplug.contracts.backend import Activity, GlobalModel
    from pgplug.plugins.a3c.ray_actors import ParameterServer
    from pgplug.plugins.a3c.ray_cluster import connect
    from pgplug.plugins.a3c.ray_store import FlatLayout, RayDriverStore, WorkerNews

    th.set_num_threads(1)
    counts = spec["workers"]
    model = build_model(spec["policy"])
    global_model = GlobalModel(
        policy=model.policy, steps=0, updates=0, lock=False, shared_optimizer=True, fast_paths=model.runner.fast
    )
    if spec["address"]:
        ray.init(address=spec["address"], runtime_env={"env_vars": STATS_ENV})
    connection = connect(spec["address"], 1, object_store_mib=spec["object_store_mib"])
    try:
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        server = (
            ray.remote(ParameterServer)
            .options(num_cpus=0, scheduling_strategy=here)
            .remote(cloudpickle.dumps(global_model), max(counts), [])
        )
        server_pid = ray.get(server.pid.remote())
        session = ray_session()
        params = list(model.policy.parameters())
        rng = np.random.default_rng(0)
        packed = FlatLayout(params).pack(
            [th.from_numpy(rng.normal(0, 1e-3, tuple(p.shape)).astype(np.float32)) for p in params]
        )
        grad_bytes = sum(p.nbytes for p in packed)
        # Large gradients go to the object store once; each push passes the reference, which Ray resolves before
        # the call as it does a real worker's argument (whose own copy happens on the worker's machine).
        grads_arg = ray.put(packed) if grad_bytes > 100_000 else packed
        weight_bytes = sum(w.nbytes for w in ray.get(server.weights.remote())[0])
        compute_s, latency = spec["compute_s"], spec["latency_ms"] / 1000
        rate = spec["bandwidth_gbit"] * 1e9 / 8
        uplink, downlink = Link(rate), Link(rate)
        steps_per_update = POLICIES[spec["policy"]]["n_envs"] * 5
        stop = threading.Event()
        totals: dict[int, list[float]] = {}  # rank -> [pushes, seconds in the push round trip]

        def worker(rank: int) -> None:
            synced, done, total = 0, 0, totals[rank]
            lr = model.policy.optimizer.param_groups[0]["lr"]
            while not stop.is_set():
                time.sleep(compute_s)  # rollout + gradient + flat-buffer copies, measured, not computed
                uplink.transfer(grad_bytes)
                time.sleep(latency)
                news = WorkerNews(steps=steps_per_update, beat=(Activity.PUSHING.value, done))
                started = time.perf_counter()
                reply = ray.get(server.push.remote(rank, grads_arg, (), lr, synced, news))
                total[1] += time.perf_counter() - started
                total[0] += 1
                time.sleep(latency)
                downlink.transfer(weight_bytes)
                synced, done = reply.updates, done + 1
                del reply  # its weights would pin an object-store buffer until the next push

        def driver() -> None:
            """The driver loop's calls: sync, sleep out the 10 ms poll, fetch the weights when they changed."""
            store = RayDriverStore(server, ray.get, 0, 0)
            state = list(model.policy.state_dict().values())
            while not stop.is_set():
                started = time.perf_counter()
                store.sync()
                time.sleep(max(0.01 - (time.perf_counter() - started), 0.0))
                store.pull(state)

        driver_errors: list[BaseException] = []

        def watched_driver() -> None:
            try:
                driver()
            except BaseException as exc:  # a dead driver thread would silently simulate no driver at all
                driver_errors.append(exc)
                raise

        threads = [threading.Thread(target=watched_driver, daemon=True)] if spec["driver"] else []
        for thread in threads:
            thread.start()

        def reading() -> tuple[float, dict[str, Any], dict[int, float], float, float, tuple[int, int]]:
            cpu = session_cpu(os.getpid(), session)
            stats = ray.get(server.stats.remote())
            return time.perf_counter(), stats, cpu, main_thread_cpu(server_pid), time.process_time(), machine_jiffies()

        points = []
        for n in counts:
            for rank in range(len(totals), n):
                totals[rank] = [0, 0.0]
                threads.append(threading.Thread(target=worker, args=(rank,), daemon=True))
                threads[-1].start()
            time.sleep(spec["warmup_s"])
            before = reading()
            pushes_before = {r: list(t) for r, t in totals.items()}
            time.sleep(spec["seconds"])
            after = reading()
            if driver_errors:
                raise RuntimeError(f"the simulated driver failed: {driver_errors[0]!r}")
            seconds = after[0] - before[0]
            d = diff_counts(after[1], before[1])
            pushes = sum(t[0] - pushes_before[r][0] for r, t in totals.items())
            round_trip = sum(t[1] - pushes_before[r][1] for r, t in totals.items())
            calls = {k[5:]: v for k, v in d["seconds"].items() if k.startswith("call/")}
            points.append(
                {
                    "workers": n,
                    "seconds": seconds,
                    "updates_per_s": d["counts"].get("call/push", 0) / seconds,
                    "busy_calls": sum(calls.values()) / seconds,
                    "busy_push": calls.get("push", 0.0) / seconds,
                    "server_cpu": (after[2].get(server_pid, 0.0) - before[2].get(server_pid, 0.0)) / seconds,
                    "server_main": (after[3] - before[3]) / seconds,
                    "simulator_cpu": (after[4] - before[4]) / seconds,
                    "machine_busy": machine_busy(before[5], after[5]),
                    "session_cores": cpu_between(before[2], after[2]) / seconds,
                    "round_trip": round_trip / max(pushes, 1),
                    "push_call": calls.get("push", 0.0) / max(d["counts"].get("call/push", 0), 1),
                    "apply": d["seconds"].get("apply", 0.0) / max(d["counts"].get("apply", 1), 1),
                    "lag": lag_summary(d["lags"]).get("mean", float("nan")),
                    "driver_calls_per_s": sum(d["counts"].get(f"call/{k}", 0) for k in ("driver_sync", "weights"))
                    / seconds,
                }
            )
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        return {"spec": spec, "grad_bytes": grad_bytes, "weight_bytes": weight_bytes, "points": points}
    finally:
        connection.close()


# -- the parent: subprocesses, tables --------------------------------------------------------------------


def child(args: list[str], ray_env: bool) -> dict[str, Any]:
    env = {**os.environ, **(STATS_ENV if ray_env else {})}
    command = [sys.executable, __file__, *args]
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args[:2])} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def console() -> Any:
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=200)


def table(title: str, columns: list[str]) -> Any:
    from rich import box
    from rich.table import Table

    t = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for i, column in enumerate(columns):
        t.add_column(column, justify="left" if i == 0 else "right")
    return t


def med(values: list[float]) -> float:
    values = [v for v in values if v == v]  # not NaN
    return statistics.median(values) if values else float("nan")


def spec_of(setup: str, policy: str, n: int, steps: int, seed: int, address: str | None) -> dict[str, Any]:
    return {
        "backend": "process" if setup == "process" else "ray",
        "pipeline": setup == "ray-pipe",
        "object_store_mib": 1024 if setup == "ray-os1g" else None,
        "policy": policy,
        "n_workers": n,
        "steps": steps,
        "seed": seed,
        "address": address,
    }


def benches(args: argparse.Namespace) -> list[dict[str, Any]]:
    """What ``compare`` runs: CartPole at each worker count, Pong (CNN) at 2 workers unless ``--no-pong``."""
    out = [
        {
            "label": f"CartPole {n}×4",
            "policy": "mlp",
            "n": n,
            "setups": ["process", "ray", *(["ray-pipe"] if n == 2 else [])],
            "steps": {"process": args.steps, "ray": args.ray_steps},
        }
        for n in args.workers
    ]
    if not args.no_pong:
        out.append(
            {
                "label": "Pong 2×8",
                "policy": "cnn",
                "n": 2,
                "setups": ["process", "ray", "ray-os1g"],
                "steps": {"process": args.pong_steps, "ray": args.pong_ray_steps},
            }
        )
    return out


def compare(args: argparse.Namespace) -> dict[str, Any]:
    """Alternating rounds of the process backend and the Ray setups, for each bench."""
    out: dict[str, Any] = {}
    for bench in benches(args):
        setups = bench["setups"]
        runs: dict[str, list[dict[str, Any]]] = {s: [] for s in setups}
        t = table(
            f"{bench['label']} (workers × envs): alternating rounds (load avg at start {os.getloadavg()[0]:.1f})",
            [
                "round",
                "setup",
                "steady steps/s",
                "steps per CPU-s",
                "cores busy",
                "machine busy",
                "processes",
                "spilled MiB",
                "window s",
                "wall s",
            ],
        )
        for r in range(args.pairs):
            for setup in setups if r % 2 == 0 else list(reversed(setups)):
                steps = bench["steps"]["process" if setup == "process" else "ray"]
                spec = spec_of(setup, bench["policy"], bench["n"], steps, args.seed + r, args.address)
                result = child(["--_run", json.dumps(spec)], ray_env=setup != "process")
                runs[setup].append(result)
                t.add_row(
                    str(r + 1),
                    SETUP_NAMES[setup],
                    f"{result['steady']:.0f}",
                    f"{result['per_cpu_s']:.0f}",
                    f"{result['cores']:.2f}",
                    f"{100 * result['machine_busy']:.0f}%",
                    str(result["processes"]),
                    str(result["spilled_mib"]),
                    f"{result['window_s']:.1f}",
                    f"{result['wall_s']:.1f}",
                )
                print(f"  [{bench['label']}] round {r + 1} {SETUP_NAMES[setup]} done", file=sys.stderr, flush=True)
        console().print(t)
        out[bench["label"]] = runs
    return out


def ratio_rows(results: dict[str, Any]) -> None:
    t = table(
        "Ray vs local processes: medians, ratios = medians of per-round ratios",
        ["bench", "setup", "steps/s", "steps per CPU-s", "cores busy", "/process (wall)", "/process (CPU)", "rounds"],
    )
    for n, runs in results.items():
        base = runs["process"]
        for setup, rs in runs.items():
            wall = [r["steady"] / b["steady"] for r, b in zip(rs, base)]
            cpu = [r["per_cpu_s"] / b["per_cpu_s"] for r, b in zip(rs, base)]
            t.add_row(
                n,
                SETUP_NAMES[setup],
                f"{med([r['steady'] for r in rs]):.0f}",
                f"{med([r['per_cpu_s'] for r in rs]):.0f}",
                f"{med([r['cores'] for r in rs]):.2f}",
                "—" if setup == "process" else f"{med(wall):.3f}× ({', '.join(f'{x:.3f}' for x in wall)})",
                "—" if setup == "process" else f"{med(cpu):.3f}× ({', '.join(f'{x:.3f}' for x in cpu)})",
                str(len(rs)),
            )
    console().print(t)


def server_rows(results: dict[str, Any]) -> None:
    t = table(
        "The parameter server in the steady window (medians over runs)",
        [
            "bench",
            "setup",
            "updates/s",
            "busy in calls",
            "main thread",
            "server CPU",
            "calls/s push",
            "driver_sync",
            "weights",
            "other",
            "ms/push call",
            "ms apply",
            "ms pack",
            "ms driver calls",
        ],
    )
    for n, runs in results.items():
        for setup, rs in runs.items():
            if setup == "process":
                continue
            rows = []
            for r in rs:
                s, w = r["server"], r["window_s"]
                calls = {k[5:]: v for k, v in s["counts"].items() if k.startswith("call/")}
                secs = {k[5:]: v for k, v in s["seconds"].items() if k.startswith("call/")}
                other = sum(v for k, v in calls.items() if k not in ("push", "driver_sync", "weights"))
                driver = sum(calls.get(k, 0) for k in ("driver_sync", "weights"))
                rows.append(
                    [
                        calls.get("push", 0) / w,
                        sum(secs.values()) / w,
                        r["server_main"] / w,
                        r["server_cpu"] / w,
                        calls.get("push", 0) / w,
                        calls.get("driver_sync", 0) / w,
                        calls.get("weights", 0) / w,
                        other / w,
                        1e3 * secs.get("push", 0) / max(calls.get("push", 0), 1),
                        1e3 * s["seconds"].get("apply", 0) / max(s["counts"].get("apply", 0), 1),
                        1e3 * s["seconds"].get("pack", 0) / max(s["counts"].get("pack", 0), 1),
                        1e3 * sum(secs.get(k, 0) for k in ("driver_sync", "weights")) / max(driver, 1),
                    ]
                )
            m = [med([row[i] for row in rows]) for i in range(len(rows[0]))]
            t.add_row(
                n,
                SETUP_NAMES[setup],
                f"{m[0]:.0f}",
                *(f"{100 * x:.1f}%" for x in m[1:4]),
                *(f"{x:.0f}" for x in m[4:8]),
                *(f"{x:.3f}" for x in m[8:]),
            )
    console().print(t)


def split_rows(results: dict[str, Any]) -> None:
    t = table(
        "Per update, ms (medians over runs; worker activities from its beats, round trips from its store)",
        [
            "bench",
            "setup",
            "pull",
            "rollout",
            "gradient",
            "push (activity)",
            "push round trip",
            "server push call",
            "server apply",
            "worker period",
        ],
    )
    for n, runs in results.items():
        for setup, rs in runs.items():
            if setup == "process":
                continue
            rows = []
            for r in rs:
                sec, cnt = r["workers"]["seconds"], r["workers"]["counts"]
                updates = cnt.get("push", 0) or cnt.get("push sent", 0)
                rt = sec.get("push", 0.0) + sec.get("push sent", 0.0) + sec.get("push collected", 0.0)
                s = r["server"]
                acts = {k[9:]: v for k, v in sec.items() if k.startswith("activity/")}
                rows.append(
                    [
                        acts.get("pulling", 0.0) / updates,
                        acts.get("stepping", 0.0) / updates,
                        acts.get("computing", 0.0) / updates,
                        acts.get("pushing", 0.0) / updates,
                        rt / updates,
                        s["seconds"].get("call/push", 0.0) / max(s["counts"].get("call/push", 0), 1),
                        s["seconds"].get("apply", 0.0) / max(s["counts"].get("apply", 0), 1),
                        sum(acts.values()) / updates,
                    ]
                )
            m = [med([row[i] for row in rows]) for i in range(len(rows[0]))]
            t.add_row(n, SETUP_NAMES[setup], *(f"{1e3 * x:.3f}" for x in m))
    console().print(t)
    print(
        "  pull: unpacking the weights the last push returned (pipeline: also waiting for that push); push (activity):"
        " packing, the round trip (pipeline: only sending), the worker's report; push round trip: sending the push to"
        " having the server's reply (pipeline: send + the wait when collecting it)."
    )


def lag_rows(results: dict[str, Any]) -> None:
    t = table(
        "Policy lag (global updates between a worker's pull and its push being applied), steady window, runs pooled",
        ["bench", "setup", "source", "updates", "mean", "p50", "p90", "p99", "max", "0", "1", "2", "≥3"],
    )
    for n, runs in results.items():
        for setup, rs in runs.items():
            pooled: Counter[int] = Counter()
            for r in rs:
                pooled.update({int(k): v for k, v in r["lag_hist"].items()})
            s = lag_summary(pooled)
            if not s:
                continue
            t.add_row(
                n,
                SETUP_NAMES[setup],
                "worker reports" if setup == "process" else "server",
                str(s["n"]),
                f"{s['mean']:.2f}",
                *(f"{s[k]:.0f}" for k in ("p50", "p90", "p99", "max")),
                *(f"{100 * s[f'share{k}']:.1f}%" for k in range(4)),
            )
    console().print(t)


def startup_rows(results: dict[str, Any]) -> None:
    t = table(
        "Start-up (medians over runs, seconds)", ["bench", "setup", "ray.init", "ray.init → first update", "runs"]
    )
    for n, runs in results.items():
        for setup, rs in runs.items():
            connects = [r["startup"]["connect"] for r in rs if r["startup"]["connect"] is not None]
            t.add_row(
                n,
                SETUP_NAMES[setup],
                f"{med(connects):.2f}" if connects else "—",
                f"{med([r['startup']['to_first_update'] for r in rs]):.2f}",
                str(len(rs)),
            )
    console().print(t)
    print("  process: from learn() to the first update (the forkserver started when the model was built).")


def recovery(args: argparse.Namespace) -> list[dict[str, Any]]:
    t = table(
        "Recovery: SIGKILL one A3CWorker process (ray, 2 workers × 4 envs, CartPole-v1), seconds",
        ["run", "driver replaced it", "replacement's first update"],
    )
    out = []
    for r in range(args.recoveries):
        spec = {**spec_of("ray", "mlp", 2, 1_000_000, args.seed + r, args.address), "kill": True, "kill_at": 4_000}
        result = child(["--_run", json.dumps(spec)], ray_env=True)
        out.append(result["recovery"])
        t.add_row(str(r + 1), f"{result['recovery']['detected']:.3f}", f"{result['recovery']['first_update']:.2f}")
        print(f"  recovery run {r + 1} done", file=sys.stderr, flush=True)
    if out:
        t.add_row("median", f"{med([x['detected'] for x in out]):.3f}", f"{med([x['first_update'] for x in out]):.2f}")
    console().print(t)
    return out


def compute(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    t = table(
        "Real cost of one update on this machine (one in-process worker, serial backend, 1 torch thread), ms",
        [
            "policy",
            "env × envs",
            "rollout",
            "gradient",
            "flat copies",
            "compute (sum)",
            "local apply",
            "optimizer",
            "params",
            "floats/push",
            "floats/pull",
            "MB push",
            "MB pull",
        ],
    )
    out = {}
    for name in args.policies:
        updates = args.compute_updates[name]
        result = child(["--_compute", name, "--updates", str(updates)], ray_env=False)
        result["compute"] = result["rollout"] + result["gradient"] + result["copies"]
        out[name] = result
        c = POLICIES[name]
        t.add_row(
            f"{name} ({c['policy']})",
            f"{c['env']} × {c['n_envs']}",
            f"{1e3 * result['rollout']:.2f}",
            f"{1e3 * result['gradient']:.2f}",
            f"{1e3 * result['copies']:.2f}",
            f"{1e3 * result['compute']:.2f}",
            f"{1e3 * result['apply']:.2f}",
            result["optimizer"],
            f"{result['param_floats']:,}",
            f"{result['grad_floats']:,}",
            f"{result['weight_floats']:,}",
            f"{result['grad_bytes'] / 1e6:.3f}",
            f"{result['weight_bytes'] / 1e6:.3f}",
        )
        print(f"  compute {name}: {result['updates']} updates timed", file=sys.stderr, flush=True)
    console().print(t)
    print(
        "  flat copies: packing the gradient into its flat buffer + unpacking the weights into the local policy (what"
        " a Ray worker adds). floats/pull: the state_dict's distinct tensors (a features extractor shared under"
        " several names travels once)."
    )
    return out


def fit_server_cost(points: list[dict[str, Any]], period: float) -> tuple[float, float]:
    """The server main thread's seconds per update (slope) and fixed load (intercept: the driver's polling, Ray's
    own threads' share), least squares over the points still within 80% of the ideal rate (not saturated)."""
    free = [p for p in points if p["updates_per_s"] >= 0.8 * p["workers"] / period]
    if len(free) < 2:
        free = points[:2]
    xs, ys = [p["updates_per_s"] for p in free], [p["server_main"] for p in free]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0.0
    if slope <= 0:  # noise: fall back on the main thread's time per update at one worker
        return ys[0] / xs[0], 0.0
    return slope, my - slope * mx


def simulate(args: argparse.Namespace, measured: dict[str, dict[str, Any]]) -> dict[str, Any]:
    out = {}
    for name in args.policies:
        for gbit in args.bandwidth_gbit if name == "cnn" else args.bandwidth_gbit[:1]:
            out[f"{name} {gbit:g}"] = simulate_one(args, name, gbit, measured[name])
    print(
        "  simulated: the workers' compute (a sleep of the measured time), the network (latency sleeps, a FIFO link"
        " per direction at the server; 0 Gbit/s: no link limit). Real: the ParameterServer actor, its optimizer steps"
        " and weight packing, Ray's calls, object store and serialisation, the driver's polling calls. On this 2-core"
        " machine the simulated workers' Ray calls (the simulator process), the raylet and the driver thread share"
        " the cores with the server: a server node of its own would saturate later."
    )
    return out


def simulate_one(args: argparse.Namespace, name: str, gbit: float, measured: dict[str, Any]) -> dict[str, Any]:
    spec = {
        "policy": name,
        "compute_s": measured["compute"],
        "workers": args.sim_workers[name],
        "seconds": args.sim_seconds,
        "warmup_s": args.sim_warmup,
        "latency_ms": args.latency_ms,
        "bandwidth_gbit": gbit,
        "driver": not args.no_driver,
        "address": args.address,
        "object_store_mib": args.object_store_mib,
    }
    result = child(["--_simulate", json.dumps(spec)], ray_env=True)
    points = result["points"]
    one = points[0]
    period = one["workers"] / one["updates_per_s"]  # a worker's update period when alone
    per_update, fixed = fit_server_cost(points, period)
    link = f"{gbit:g} Gbit/s" if gbit > 0 else "unlimited"
    t = table(
        f"Simulated scale-out, {name} ({POLICIES[name]['policy']}): simulated workers sleeping"
        f" {1e3 * measured['compute']:.2f} ms per update, the real parameter server; latency {args.latency_ms} ms"
        f" one way, server link {link}; push {result['grad_bytes'] / 1e6:.3f} MB, pull"
        f" {result['weight_bytes'] / 1e6:.3f} MB",
        [
            "workers",
            "updates/s",
            "ideal",
            "in calls",
            "in push",
            "main thread",
            "server CPU",
            "simulator CPU",
            "session cores",
            "machine busy",
            "ms round trip",
            "ms push call",
            "ms apply",
            "mean lag",
            "driver calls/s",
        ],
    )
    for p in points:
        t.add_row(
            str(p["workers"]),
            f"{p['updates_per_s']:.1f}",
            f"{p['workers'] / period:.1f}",
            *(f"{100 * p[k]:.1f}%" for k in ("busy_calls", "busy_push", "server_main", "server_cpu", "simulator_cpu")),
            f"{p['session_cores']:.2f}",
            f"{100 * p['machine_busy']:.0f}%",
            f"{1e3 * p['round_trip']:.2f}",
            f"{1e3 * p['push_call']:.3f}",
            f"{1e3 * p['apply']:.3f}",
            f"{p['lag']:.2f}",
            f"{p['driver_calls_per_s']:.0f}",
        )
    console().print(t)
    best = max(points, key=lambda p: p["updates_per_s"])
    reach = next(p for p in points if p["updates_per_s"] >= 0.9 * best["updates_per_s"])
    link_s = max(result["grad_bytes"], result["weight_bytes"]) / (gbit * 1e9 / 8) if gbit > 0 else 0.0
    capped = f"{1 / link_s:.0f} updates/s, ~{period / link_s:.1f} workers" if link_s else "no cap"
    print(
        f"  prediction: update period of a worker alone {1e3 * period:.2f} ms / server main-thread time per update"
        f" {1e3 * per_update:.3f} ms (slope over the unsaturated points; fixed load {100 * fixed:.0f}% of the thread)"
        f" = saturation at ~{period / per_update:.1f} workers, ~{period * (1 - fixed) / per_update:.1f} with the fixed"
        f" load, at ~{(1 - fixed) / per_update:.0f} updates/s; the link alone: {capped}"
    )
    print(
        f"  measured: at most {best['updates_per_s']:.1f} updates/s (at {best['workers']} workers, main thread"
        f" {100 * best['server_main']:.0f}% busy); 90% of that first reached at {reach['workers']} workers"
    )
    result.update(period=period, per_update=per_update, fixed=fixed, link_s=link_s)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="Run it under tests/loopback.sh (a loopback-only network namespace), or pass --address.",
    )
    parts = ("compare", "recovery", "compute", "simulate")
    parser.add_argument("--part", nargs="+", choices=parts, default=list(parts), help="what to run (default all)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 2 workers, 1 round, short runs (< 3 min)")
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 2, 4], help="CartPole worker counts of compare")
    parser.add_argument("--pairs", type=int, default=3, help="alternating rounds per worker count (default 3)")
    parser.add_argument("--steps", type=int, default=40_000, help="env steps of a process-backend run")
    parser.add_argument("--ray-steps", type=int, default=16_000, help="env steps of a ray-backend run")
    parser.add_argument("--pong-steps", type=int, default=8_000, help="env steps of a process-backend Pong run")
    parser.add_argument("--pong-ray-steps", type=int, default=3_200, help="env steps of a ray-backend Pong run")
    parser.add_argument("--no-pong", action="store_true", help="compare on CartPole only")
    parser.add_argument("--recoveries", type=int, default=3, help="kill-and-recover runs (default 3)")
    parser.add_argument("--policies", nargs="+", choices=list(POLICIES), default=list(POLICIES))
    parser.add_argument("--sim-seconds", type=float, default=8.0, help="measured seconds per simulated point")
    parser.add_argument("--sim-warmup", type=float, default=2.0, help="seconds before each simulated point")
    parser.add_argument("--latency-ms", type=float, default=0.25, help="simulated one-way latency (default 0.25)")
    parser.add_argument(
        "--bandwidth-gbit",
        type=float,
        nargs="+",
        default=[10.0, 0.0],
        help="the server's simulated link, per direction, Gbit/s; 0: no limit (default 10 0; the MLP: the first)",
    )
    parser.add_argument("--no-driver", action="store_true", help="simulate without the driver's polling calls")
    parser.add_argument(
        "--object-store-mib", type=int, default=1024, help="object store of the simulation's Ray instance"
    )
    parser.add_argument("--address", help="use this Ray cluster instead of local instances in loopback namespaces")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--updates", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--_run", help=argparse.SUPPRESS)
    parser.add_argument("--_compute", help=argparse.SUPPRESS)
    parser.add_argument("--_simulate", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._compute:
        print(json.dumps(run_compute(args._compute, args.updates)))
        return
    if not args.address and (others := non_loopback_interfaces()):
        raise SystemExit(
            f"a3c_ray.py: not in a loopback-only network namespace (also {', '.join(others)}); "
            "run it as tests/loopback.sh .venv/bin/python benchmarks/a3c_ray.py ..., or pass --address"
        )
    if args._run:
        print(json.dumps(run_a3c(json.loads(args._run))))
        return
    if args._simulate:
        print(json.dumps(run_simulation(json.loads(args._simulate))))
        return
    args.sim_workers = {"mlp": [1, 2, 4, 6, 8, 12, 16, 24, 32], "cnn": [1, 2, 4, 8, 12, 16, 24, 32]}
    args.compute_updates = {"mlp": 400, "cnn": 40}
    if args.quick:
        args.workers, args.pairs, args.steps, args.ray_steps, args.recoveries = [2], 1, 20_000, 8_000, 1
        args.no_pong = True
        args.sim_workers = {"mlp": [1, 4, 16], "cnn": [1, 4, 16]}
        args.sim_seconds, args.sim_warmup = 3.0, 1.0
        args.compute_updates = {"mlp": 100, "cnn": 10}
    started = time.perf_counter()
    print(f"a3c_ray.py {' '.join(argv if argv is not None else sys.argv[1:])}  (load avg {os.getloadavg()[0]:.1f})")
    if "compare" in args.part:
        results = compare(args)
        ratio_rows(results)
        server_rows(results)
        split_rows(results)
        lag_rows(results)
        startup_rows(results)
    if "recovery" in args.part:
        recovery(args)
    measured = compute(args) if {"compute", "simulate"} & set(args.part) else {}
    if "simulate" in args.part:
        simulate(args, measured)
    print(f"total {time.perf_counter() - started:.0f} s (load avg now {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
