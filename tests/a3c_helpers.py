"""Module-level helpers that A3C's spawned worker processes must be able to import.

With the ``spawn`` start method a child unpickles its target and the env factory by module and
name, and it starts with the parent's ``sys.path``: pytest puts ``tests/`` on it (rootdir-relative
"prepend" import mode, no ``__init__.py``), so ``import a3c_helpers`` works in parent and child.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import gymnasium as gym
from gymnasium.envs.classic_control import CartPoleEnv
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecEnv

#: The environment variable the env-reading factory reports from inside a worker.
MARK_VARIABLE = "PGPLUG_TEST_MARK"

#: The message of the exception the exploding env raises, so tests can find it in the worker's traceback.
EXPLOSION = "env exploded on purpose at step"


def in_worker_process() -> bool:
    """True in a spawned worker, so a sabotaged env never harms the test process that builds one too."""
    return multiprocessing.parent_process() is not None


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


if "pgplug-test/SlowToBuild-v0" not in gym.registry:  # for the command line: --env a3c_helpers:pgplug-test/...
    gym.register("pgplug-test/SlowToBuild-v0", entry_point=slow_to_build_cartpole_env, max_episode_steps=500)


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
