"""Module-level helpers that A3C's spawned worker processes must be able to import.

With the ``spawn`` start method a child unpickles its target and the env factory by module and
name, and it starts with the parent's ``sys.path``: pytest puts ``tests/`` on it (rootdir-relative
"prepend" import mode, no ``__init__.py``), so ``import a3c_helpers`` works in parent and child.
Ray workers import it too: a local Ray that pgplug starts gets the driver's ``sys.path``, and the
test cluster's nodes are started with ``tests/`` on ``PYTHONPATH``.

Also here: which processes a test left behind, Ray's included (read from /proc).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch as th
from gymnasium.envs.classic_control import CartPoleEnv
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecEnv

#: The environment variable the env-reading factory reports from inside a worker.
MARK_VARIABLE = "PGPLUG_TEST_MARK"

#: The message of the exception the exploding env raises, so tests can find it in the worker's traceback.
EXPLOSION = "env exploded on purpose at step"


def in_worker_process() -> bool:
    """True in a worker (a spawned process, or a Ray worker process), so a sabotaged env never harms the test
    process, or a command line's driver, that builds one too."""
    return multiprocessing.parent_process() is not None or in_ray_worker()


def in_ray_worker() -> bool:
    """True in a Ray worker process (where actors run); False in a Ray driver, and where Ray was never imported.

    A Ray worker is started by its node's raylet, not by multiprocessing: it has no multiprocessing parent.
    """
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized() and ray.get_runtime_context().worker.mode == ray.WORKER_MODE


class SabotageAfter(gym.Wrapper):
    """Sabotages ``step`` once it has been stepped ``after`` times (in a worker only); subclasses say how."""

    def __init__(self, env: gym.Env, after: int) -> None:
        super().__init__(env)
        self.after, self.steps = after, 0

    def step(self, action: Any):
        self.steps += 1
        if self.steps >= self.after and in_worker_process():
            self.sabotage()
        return self.env.step(action)

    def sabotage(self) -> None:
        raise NotImplementedError


class ExplodeAfter(SabotageAfter):
    """Raises ``RuntimeError``, as an env with a bug would."""

    def sabotage(self) -> None:
        raise RuntimeError(f"{EXPLOSION} {self.steps}")


class KillAfter(SabotageAfter):
    """SIGKILLs its own process, as the OOM killer would."""

    def sabotage(self) -> None:
        os.kill(os.getpid(), signal.SIGKILL)


class BlockAfter(SabotageAfter):
    """Blocks forever, as a hung env would."""

    def sabotage(self) -> None:
        threading.Event().wait()


def cartpole_blocking_in_worker_1(n_envs: int, seed: int | None) -> VecEnv:
    """CartPole whose envs block forever in ``step`` after 30 steps in worker 1 of a run seeded 0 with one env per
    worker (the worker whose envs are seeded 1)."""
    if seed == 1:
        return make_vec_env(
            "CartPole-v1", n_envs=n_envs, seed=seed, wrapper_class=BlockAfter, wrapper_kwargs={"after": 30}
        )
    return make_vec_env("CartPole-v1", n_envs=n_envs, seed=seed)


class BlockOnClose(gym.Wrapper):
    """Blocks forever in ``close`` (in a worker only), as an env whose simulator does not shut down."""

    def close(self) -> None:
        if in_worker_process():
            threading.Event().wait()
        super().close()


def cartpole_blocking_on_close(n_envs: int, seed: int | None) -> VecEnv:
    """CartPole whose envs block forever in ``close``, in worker processes."""
    return make_vec_env("CartPole-v1", n_envs=n_envs, seed=seed, wrapper_class=BlockOnClose)


def cartpole_slow_to_build(n_envs: int, seed: int | None) -> VecEnv:
    """CartPole that takes a minute to build in a worker (as a simulator that loads for long), at once elsewhere."""
    if in_worker_process():
        time.sleep(60)
    return make_vec_env("CartPole-v1", n_envs=n_envs, seed=seed)


def slow_to_build_cartpole_env(**kwargs: Any) -> gym.Env:
    """The env of ``a3c_helpers:pgplug-test/SlowToBuild-v0``: CartPole, after a minute's wait in a worker."""
    if in_worker_process():
        time.sleep(60)
    return CartPoleEnv(**kwargs)


def self_killing_cartpole_env(**kwargs: Any) -> gym.Env:
    """The env of ``a3c_helpers:pgplug-test/SelfKillingCartPole-v0``: CartPole that SIGKILLs its worker after 30
    steps."""
    return KillAfter(CartPoleEnv(**kwargs), after=30)


# For the command line: --env a3c_helpers:pgplug-test/...
for _name, _entry_point in (
    ("pgplug-test/SlowToBuild-v0", slow_to_build_cartpole_env),
    ("pgplug-test/SelfKillingCartPole-v0", self_killing_cartpole_env),
):
    if _name not in gym.registry:
        gym.register(_name, entry_point=_entry_point, max_episode_steps=500)


def exploding_cartpole(n_envs: int, seed: int | None) -> VecEnv:
    """CartPole whose envs raise inside ``step`` after 30 steps, in worker processes."""
    return make_vec_env(
        "CartPole-v1", n_envs=n_envs, seed=seed, wrapper_class=ExplodeAfter, wrapper_kwargs={"after": 30}
    )


def self_killing_cartpole(n_envs: int, seed: int | None) -> VecEnv:
    """CartPole whose envs SIGKILL their worker process after 30 steps."""
    return make_vec_env("CartPole-v1", n_envs=n_envs, seed=seed, wrapper_class=KillAfter, wrapper_kwargs={"after": 30})


def cartpole_reporting_mark(n_envs: int, seed: int | None) -> VecEnv:
    """CartPole in the main process; in a worker, raises ``RuntimeError("mark=<$PGPLUG_TEST_MARK>")``.

    So a test can see which environment a worker runs with (the main process's at ``learn()``, or
    the forkserver's from when it started).
    """
    if in_worker_process():
        raise RuntimeError(f"mark={os.environ.get(MARK_VARIABLE)}")
    return make_vec_env("CartPole-v1", n_envs=n_envs, seed=seed)


def flat_params(model: Any) -> th.Tensor:
    return th.cat([p.detach().flatten() for p in model.policy.parameters()]).clone()


def assert_same_model(a: Any, b: Any) -> None:
    """Equal parameters and equal optimizer statistics (not merely close)."""
    sa, sb = a.policy.state_dict(), b.policy.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert th.equal(sa[key], sb[key]), key
    oa, ob = a.policy.optimizer.state_dict()["state"], b.policy.optimizer.state_dict()["state"]
    assert oa.keys() == ob.keys()
    for index in oa:
        for key in oa[index]:
            assert th.equal(th.as_tensor(oa[index][key]), th.as_tensor(ob[index][key])), (index, key)


@contextmanager
def deadline(seconds: int) -> Iterator[None]:
    """Fail instead of hanging: SIGALRM raises ``TimeoutError`` in the main thread after ``seconds``."""

    def on_alarm(signum: int, frame: Any) -> None:
        raise TimeoutError(f"no result within {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def child_pids(parent: int | None = None) -> set[int]:
    """Pids of the live or unreaped children of ``parent`` (default: this process), read from /proc."""
    parent, pids = parent or os.getpid(), set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:  # the process ended while we looked
            continue
        if int(fields[1]) == parent:
            pids.add(int(entry))
    return pids


def helper_pids() -> set[int]:
    """Long-lived helper children that multiprocessing itself keeps: the resource tracker and the forkserver."""
    from multiprocessing import forkserver, resource_tracker

    pids = {
        getattr(resource_tracker._resource_tracker, "_pid", None),
        getattr(forkserver._forkserver, "_forkserver_pid", None),
    }
    return {pid for pid in pids if pid is not None}


def worker_pids() -> set[int]:
    """This process's children and the forkserver's (A3C workers are forked by the forkserver)."""
    pids = child_pids()
    for helper in helper_pids():
        pids |= child_pids(helper)
    return pids


def assert_no_leftover_processes(before: set[int]) -> None:
    """No multiprocessing child and no other child process appeared since ``before`` (still alive or unreaped)."""
    started = {child.pid for child in multiprocessing.active_children()} - before
    assert not started, f"multiprocessing children left running: {sorted(started)}"
    leftover = worker_pids() - before - helper_pids()
    assert not leftover, f"child processes left running: {sorted(leftover)}"


# ------------------------------------------------------------------------------------------------
# Ray's processes
# ------------------------------------------------------------------------------------------------

#: Every Ray test sets this environment variable to a label of its own (conftest.py), and so does the test cluster
#: while it starts: the processes they start, Ray's included (nodes and workers inherit the environment of the
#: process that starts them), carry it, also once reparented to init and once Ray has replaced their command line
#: with a title (``ray::A3CWorker.run``), which neither the parent nor the command line would show.
OWNER_VARIABLE = "PGPLUG_TEST_OWNER"
#: How long Ray gets to end what it was told to end (its workers exit once their raylet is gone) before a process
#: still there counts as left behind.
RAY_EXIT_GRACE = 20.0


@dataclass(frozen=True)
class ProcessInfo:
    """One process, as /proc shows it."""

    pid: int
    ppid: int
    cmdline: str
    environ: dict[str, str]


def processes() -> list[ProcessInfo]:
    """This user's processes, read from /proc (those that end while we look are skipped)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                ppid = int(stat.read().rsplit(")", 1)[1].split()[1])
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            raw = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:  # ended, or another user's
            continue
        pairs = (item.decode(errors="replace").partition("=") for item in raw.split(b"\0") if b"=" in item)
        found.append(ProcessInfo(int(entry), ppid, cmdline.strip(), {key: value for key, _, value in pairs}))
    return found


def descendant_pids(parent: int | None = None) -> set[int]:
    """Pids of the processes descended from ``parent`` (default: this process): children, theirs, and so on."""
    children: dict[int, list[int]] = {}
    for process in processes():
        children.setdefault(process.ppid, []).append(process.pid)
    found, frontier = set(), [parent or os.getpid()]
    while frontier:
        for child in children.get(frontier.pop(), []):
            if child not in found:
                found.add(child)
                frontier.append(child)
    return found


def ray_root() -> str:
    """The folder under which every Ray of this test session keeps its sessions (``RAY_TMPDIR``, set by
    conftest.py)."""
    return os.environ["RAY_TMPDIR"]


def ray_sessions() -> set[str]:
    """The session folders of the Ray instances started in this test session so far."""
    return {str(path) for path in Path(ray_root(), "ray").glob("session_2*")}


def ray_processes(owner: str, sessions: Iterable[str] = ()) -> dict[int, str]:
    """The live processes (pid → command line) that carry ``OWNER_VARIABLE=owner``, whose command line mentions
    one of the Ray session folders ``sessions``, or that are Ray workers of this test session's Ray (a worker that
    served a test's job has no reason to outlive it; the nodes' agents are no workers). multiprocessing's own
    helpers (:func:`helper_pids`), which live as long as this process, are not counted."""
    sessions, helpers = tuple(sessions), helper_pids()
    return {
        process.pid: process.cmdline
        for process in processes()
        if process.pid not in helpers
        and (
            process.environ.get(OWNER_VARIABLE) == owner
            or any(session in process.cmdline for session in sessions)
            or ("RAY_JOB_ID" in process.environ and process.environ.get("RAY_TMPDIR") == ray_root())
        )
    }


def ray_processes_left(owner: str, sessions: Iterable[str] = (), grace: float = RAY_EXIT_GRACE) -> dict[int, str]:
    """:func:`ray_processes` once they are gone, or after ``grace`` seconds: what Ray left behind."""
    deadline = time.monotonic() + grace
    while (left := ray_processes(owner, sessions)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def ray_actor_processes(class_name: str) -> list[ProcessInfo]:
    """The live processes of this test session's Ray that run an actor of class ``class_name`` (Ray titles them
    ``ray::<class>`` or ``ray::<class>.<method>``), by pid."""
    return sorted(
        (
            process
            for process in processes()
            if process.cmdline.partition(" ")[0].partition(".")[0] == f"ray::{class_name}"
            and process.environ.get("RAY_TMPDIR") == ray_root()
        ),
        key=lambda process: process.pid,
    )


def gone(pid: int) -> bool:
    """The process has exited and been reaped (a zombie keeps its /proc entry)."""
    return not os.path.exists(f"/proc/{pid}")


def loopback_only_failure() -> str | None:
    """None in a network namespace whose only interface is loopback; else the one line to fail a Ray test with.

    /proc/net/dev lists the interfaces of the reading process's namespace (/sys/class/net need not).
    """
    lines = Path("/proc/net/dev").read_text().splitlines()[2:]
    others = sorted(name for name in (line.split(":")[0].strip() for line in lines) if name != "lo")
    if not others:
        return None
    return (
        f"Ray tests run only in a loopback-only network namespace (tests/loopback.sh .venv/bin/python -m pytest ...); "
        f"this one also has: {', '.join(others)}"
    )
