"""A3C never hangs. A worker that sends nothing for ``worker_timeout`` seconds (an env blocked in ``step()``, a
worker stopped by SIGSTOP, a forkserver that does not answer) ends the run with one line naming it and what it
was doing; Ctrl-C while the workers start ends as Ctrl-C in training does; and whichever way a run ends, every
process the backend started (the stuck ones killed) and, after a failure, the forkserver are gone and reaped
when ``learn()`` returns or raises.

The process tests run with a timeout of a few seconds (an update of CartPole takes milliseconds) after the
forkserver has finished its imports, and allow generous margins: the machine is shared.
"""

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing import forkserver
from pathlib import Path
from typing import Any

import pytest
import torch.multiprocessing as mp
from a3c_helpers import (
    cartpole_blocking_in_worker_1,
    cartpole_blocking_on_close,
    cartpole_slow_to_build,
    child_pids,
    deadline,
    gone,
)

from pgplug import A3C
from pgplug.contracts.backend import BEAT_INTERVAL, Activity, GlobalModel, Heartbeat
from pgplug.errors import PgplugError, WorkerTimeoutError
from pgplug.plugins.a3c import liveness
from pgplug.plugins.a3c.liveness import SLOWEST_UPDATE_FACTOR, WorkerWatch
from pgplug.plugins.a3c.process_backend import START_GRACE, STOP_GRACE, ProcessBackend
from pgplug.plugins.a3c.shared_memory import SharedMemoryStore

#: The worker_timeout of the process tests, in seconds.
TIMEOUT = 4.0
#: Seconds allowed on top of what a test waits for by design, for a loaded machine.
MARGIN = 8.0
KWARGS: dict[str, Any] = {"n_workers": 2, "n_envs_per_worker": 1, "t_max": 5, "seed": 0}
#: The one line of a silent worker; groups: rank, seconds, last activity, limit.
SILENT = re.compile(
    r"A3C worker (\d+) sent nothing for (\d+(?:\.\d)?) s \(last: ([^)]+)\); the limit is (\d+(?:\.\d)?) s "
    rf"\(worker_timeout, or {SLOWEST_UPDATE_FACTOR} × the slowest update if longer\)"
)


# ------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------


@pytest.fixture
def backends(monkeypatch: pytest.MonkeyPatch) -> list[ProcessBackend]:
    """The process backends that ``learn()`` starts, in order (their ``processes`` outlive ``stop``)."""
    started: list[ProcessBackend] = []
    original = ProcessBackend.start

    def start(self: ProcessBackend, *args: Any) -> Any:
        started.append(self)
        return original(self, *args)

    monkeypatch.setattr(ProcessBackend, "start", start)
    return started


@pytest.fixture
def sigint_raises() -> Iterator[None]:
    """SIGINT raises KeyboardInterrupt, also when the test runner was started with SIGINT ignored (in background)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def ready_forkserver() -> int:
    """The forkserver's pid, once it has finished its imports (it forks its first child only then)."""
    probe = mp.get_context("forkserver").Process(target=time.sleep, args=(0,))
    probe.start()
    probe.join(120)
    pid = forkserver._forkserver._forkserver_pid
    assert probe.exitcode == 0 and pid is not None
    return pid


def ctrl_c() -> None:
    """What a Ctrl-C does to the main process: SIGINT, in its main thread."""
    signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)


@contextmanager
def when(condition: Callable[[], bool], action: Callable[[], None], timeout: float = 60.0) -> Iterator[list[float]]:
    """Run ``action`` from a thread as soon as ``condition()`` holds (checked every 10 ms); yields a list that then
    holds the time it ran."""
    ran_at: list[float] = []
    cancel = threading.Event()

    def watch() -> None:
        end = time.monotonic() + timeout
        while not cancel.is_set() and time.monotonic() < end:
            if condition():
                action()
                ran_at.append(time.monotonic())
                return
            time.sleep(0.01)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield ran_at
    finally:
        cancel.set()
        thread.join()


def assert_all_reaped(backend: ProcessBackend, *pids: int) -> None:
    """Every worker the backend started, and ``pids``, have exited and been reaped."""
    started = {process.pid for process in backend.processes.values()}
    assert all(process.exitcode is not None for process in backend.processes.values())
    left = sorted(pid for pid in started | set(pids) if not gone(pid))
    assert not left, f"processes left: {left}"


def silent_worker(error: BaseException) -> re.Match[str]:
    message = str(error)
    assert "\n" not in message
    match = SILENT.fullmatch(message)
    assert match, message
    return match


# ------------------------------------------------------------------------------------------------
# A silent worker ends the run in one line, and nothing is left behind
# ------------------------------------------------------------------------------------------------


def test_a_worker_blocked_in_env_step_ends_the_run_in_one_line(backends: list[ProcessBackend]) -> None:
    """Worker 1's env blocks in its 30th step (update 6 of 5 steps): after TIMEOUT s the run ends naming it."""
    model = A3C("MlpPolicy", cartpole_blocking_in_worker_1, worker_timeout=TIMEOUT, **KWARGS)
    server = ready_forkserver()
    started = time.monotonic()
    with deadline(120), pytest.raises(WorkerTimeoutError) as info:
        model.learn(10_000_000)
    elapsed = time.monotonic() - started
    rank, seconds, last, limit = silent_worker(info.value).groups()
    assert (rank, last) == ("1", "stepping its envs in update 6")
    # The limit is TIMEOUT, or 20 × the slowest update so far if longer (a busy machine's first updates).
    assert TIMEOUT <= float(limit) <= float(seconds) < float(limit) + MARGIN
    assert elapsed < float(limit) + STOP_GRACE + MARGIN
    backend = backends[0]
    assert backend.processes[1].exitcode == -signal.SIGKILL
    assert backend.processes[0].exitcode == 0  # asked to stop, it stopped
    assert_all_reaped(backend, server)  # the run failed: the forkserver was reaped too
    assert model.num_timesteps > 0  # what the workers did still counts


def test_a_worker_stopped_by_sigstop_is_named_killed_and_reaped(backends: list[ProcessBackend]) -> None:
    model = A3C("MlpPolicy", "CartPole-v1", worker_timeout=TIMEOUT, **KWARGS)
    server = ready_forkserver()

    def worker_1_updating() -> bool:
        return bool(backends) and 1 in backends[0].processes and backends[0].store.heartbeats()[1].updates >= 3

    def sigstop() -> None:
        os.kill(backends[0].processes[1].pid, signal.SIGSTOP)

    with when(worker_1_updating, sigstop) as stopped_at, deadline(120), pytest.raises(WorkerTimeoutError) as info:
        model.learn(10_000_000)
    raised_after = time.monotonic() - stopped_at[0]
    rank, seconds, last, limit = silent_worker(info.value).groups()
    assert rank == "1" and any(last.startswith(activity) for activity in Activity)
    assert TIMEOUT <= float(limit) <= float(seconds) < float(limit) + MARGIN  # (the limit: as above)
    # Its last beat was at most BEAT_INTERVAL before the SIGSTOP; once named, it is killed within a second or two.
    assert float(limit) - BEAT_INTERVAL <= raised_after < float(limit) + STOP_GRACE + MARGIN
    backend = backends[0]
    assert backend.processes[1].exitcode == -signal.SIGKILL
    assert_all_reaped(backend, server)


def test_a_forkserver_that_does_not_answer_ends_the_run_at_the_timeout(backends: list[ProcessBackend]) -> None:
    """Start-up counts as silence too: no worker ever starts, and the stopped forkserver is killed and reaped."""
    model = A3C("MlpPolicy", "CartPole-v1", worker_timeout=3, **KWARGS)
    server = ready_forkserver()
    os.kill(server, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with deadline(120), pytest.raises(WorkerTimeoutError) as info:
            model.learn(10_000)
        elapsed = time.monotonic() - started
    finally:
        if not gone(server):
            os.kill(server, signal.SIGCONT)
    rank, _, last, _ = silent_worker(info.value).groups()
    assert (rank, last) == ("0", "starting")
    assert 3 <= elapsed < 3 + START_GRACE + MARGIN
    assert backends[0].processes == {}
    assert gone(server)


def test_a_worker_stuck_closing_its_envs_is_ended_and_the_run_completes(backends: list[ProcessBackend]) -> None:
    """Its last update is done and reported: after STOP_GRACE s it is killed, and ``learn()`` returns as usual."""
    model = A3C("MlpPolicy", cartpole_blocking_on_close, worker_timeout=TIMEOUT, **KWARGS)
    server = ready_forkserver()
    started = time.monotonic()
    with deadline(120):
        model.learn(500)
    assert STOP_GRACE <= time.monotonic() - started < STOP_GRACE + MARGIN
    assert model.num_timesteps >= 500
    backend = backends[0]
    assert [process.exitcode for process in backend.processes.values()] == [-signal.SIGKILL] * 2
    assert_all_reaped(backend, server)


# ------------------------------------------------------------------------------------------------
# Ctrl-C during start-up
# ------------------------------------------------------------------------------------------------


def test_ctrl_c_while_the_workers_build_their_envs_ends_as_in_training(
    backends: list[ProcessBackend], sigint_raises: None, tmp_path: Path
) -> None:
    """The workers take a minute to build their envs; Ctrl-C meanwhile raises KeyboardInterrupt from ``learn()``,
    with both workers killed after the stop's grace and reaped, and the model can be saved as the CLI does. A
    second Ctrl-C while the workers are being stopped does not cut that short."""
    model = A3C("MlpPolicy", cartpole_slow_to_build, **KWARGS)
    server = ready_forkserver()

    def building() -> bool:
        if not backends or len(backends[0].processes) < 2:
            return False
        return all(beat.activity is Activity.BUILDING_ENVS for beat in backends[0].store.heartbeats().values())

    def stopping() -> bool:
        return bool(backends) and backends[0]._stopping

    with (
        when(building, ctrl_c) as pressed_at,
        when(stopping, ctrl_c) as pressed_again_at,
        deadline(120),
        pytest.raises(KeyboardInterrupt),
    ):
        model.learn(10_000)
    assert pressed_at and pressed_again_at and time.monotonic() - pressed_at[0] < STOP_GRACE + MARGIN
    backend = backends[0]
    assert [process.exitcode for process in backend.processes.values()] == [-signal.SIGKILL] * 2
    assert_all_reaped(backend, server)
    assert model.num_timesteps == 0
    model.save(tmp_path / "interrupted.zip")


def test_ctrl_c_while_the_forkserver_does_not_answer(backends: list[ProcessBackend], sigint_raises: None) -> None:
    """Start-up waits for a forkserver that never forks: Ctrl-C ends it after START_GRACE s, and reaps it."""
    model = A3C("MlpPolicy", "CartPole-v1", **KWARGS)
    server = ready_forkserver()
    os.kill(server, signal.SIGSTOP)
    begun = time.monotonic()
    try:
        with (
            when(lambda: time.monotonic() - begun > 1.0, ctrl_c) as pressed_at,
            deadline(120),
            pytest.raises(KeyboardInterrupt),
        ):
            model.learn(10_000)
    finally:
        if not gone(server):
            os.kill(server, signal.SIGCONT)
    assert pressed_at and time.monotonic() - pressed_at[0] < START_GRACE + MARGIN
    assert backends[0].processes == {}
    assert gone(server)


@pytest.mark.parametrize("workers", [0, 2], ids=["forkserver-importing", "workers-building-envs"])
def test_ctrl_c_to_the_command_line_during_start_up_ends_without_a_traceback(tmp_path: Path, workers: int) -> None:
    """Ctrl-C in a terminal signals the whole process group: the CLI, the forkserver and the workers. Sent half a
    second after the forkserver started (it imports torch, SB3 and pgplug for seconds), or once the workers run
    (they take a minute to build their envs), ``pgplug train`` ends with its interrupted line and exit code 130
    (and, once in ``learn()``, the model saved), no traceback from any process, the forkserver and workers reaped."""
    tests = str(Path(__file__).parent)
    environ = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [tests, os.environ.get("PYTHONPATH")]))}
    argv = ["train", "--algo", "a3c", "--env", "a3c_helpers:pgplug-test/SlowToBuild-v0", "-n", "10000", "--seed", "0"]
    argv += ["--no-progress", "--n-eval-episodes", "0", "--eval-freq", "0", "-f", str(tmp_path)]
    # As from a terminal, whatever this test runner ignores: SIGINT raises KeyboardInterrupt in the CLI.
    run_cli = "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    run_cli += f"from pgplug.cli import main; sys.exit(main({argv!r}))"
    cli = subprocess.Popen(
        [sys.executable, "-c", run_cli],
        start_new_session=True,  # its own process group, as a terminal's foreground job
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=environ,
    )
    try:
        with deadline(240):
            pids = wait_for_forkserver_children(cli.pid, workers)
            time.sleep(0.5)  # into the forkserver's imports (or the workers' minute)
            os.killpg(cli.pid, signal.SIGINT)
            output, _ = cli.communicate(timeout=STOP_GRACE + 60)
    finally:
        if cli.poll() is None:
            os.killpg(cli.pid, signal.SIGKILL)
            cli.wait()
    assert cli.returncode == 130, output
    assert "Traceback" not in output, output
    assert "pgplug: interrupted" in output or "interrupted: model saved to" in output
    if workers:
        assert "interrupted: model saved to" in output
    assert all(gone(pid) for pid in pids)


def wait_for_forkserver_children(cli: int, n: int, timeout: float = 180.0) -> list[int]:
    """The pids of the forkserver of the command line ``cli`` and of ``n`` of its children (A3C workers), once
    they run."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for child in child_pids(cli):
            try:
                command = Path(f"/proc/{child}/cmdline").read_bytes()
            except OSError:
                continue
            if b"forkserver" in command and len(workers := sorted(child_pids(child))) >= n:
                return [child, *workers]
        time.sleep(0.02)
    raise AssertionError(f"no forkserver with {n} children within {timeout} s")


def test_the_main_process_reaps_its_forkserver_at_exit(tmp_path: Path) -> None:
    """Rather than leave it to outlive the main process (an orphan, or a zombie where nothing reaps orphans)."""
    script = tmp_path / "train.py"
    script.write_text(
        textwrap.dedent(
            """
            from multiprocessing import forkserver
            from pgplug import A3C

            if __name__ == "__main__":
                A3C("MlpPolicy", "CartPole-v1", n_workers=1, t_max=5, seed=0).learn(100)
                print(forkserver._forkserver._forkserver_pid)
            """
        )
    )
    with deadline(240):
        done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=200)
    assert done.returncode == 0, done.stderr
    assert gone(int(done.stdout.split()[-1]))


# ------------------------------------------------------------------------------------------------
# worker_timeout: where it applies, and its values
# ------------------------------------------------------------------------------------------------


def test_the_serial_backend_accepts_worker_timeout_and_has_nothing_to_watch() -> None:
    """Its worker runs in the driver, between the driver's looks: even a limit far below one update never fires."""
    model = A3C("MlpPolicy", "CartPole-v1", backend="serial", n_workers=1, worker_timeout=1e-9, t_max=5, seed=0)
    with deadline(60):
        model.learn(200)
    assert model.num_timesteps == 200


def test_a_normal_run_with_a_short_timeout_ends_at_the_budget(backends: list[ProcessBackend]) -> None:
    """Workers that finish early, or wait at the callback gate, are not silent. A first short run warms the
    forkserver's imports, so that a start-up slowed by a busy machine is not what the short limit measures."""
    model = A3C("MlpPolicy", "CartPole-v1", worker_timeout=60.0, callback_lag=10, **KWARGS)
    with deadline(120):
        model.learn(100)
    model.worker_timeout = TIMEOUT
    with deadline(120):
        model.learn(2_000)
    assert model.num_timesteps >= 2_000
    assert all(process.exitcode == 0 for process in backends[-1].processes.values())


@pytest.mark.parametrize("value", [0, -1.0, math.inf, math.nan, "60", True])
def test_a_bad_worker_timeout_is_one_line(value: Any) -> None:
    with pytest.raises(PgplugError, match=r"^worker_timeout must be a finite number > 0, got "):
        A3C("MlpPolicy", "CartPole-v1", backend="serial", n_workers=1, worker_timeout=value)


def test_worker_timeout_is_saved_and_none_never_times_out(tmp_path: Path) -> None:
    model = A3C("MlpPolicy", "CartPole-v1", backend="serial", n_workers=1, worker_timeout=None)
    model.save(tmp_path / "model.zip")
    assert A3C.load(tmp_path / "model.zip").worker_timeout is None
    watch = WorkerWatch(None)
    watch.check({0: Heartbeat(Activity.STEPPING, 3, seconds=1e9)})


# ------------------------------------------------------------------------------------------------
# The watch and the store's heartbeats, in-process
# ------------------------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(liveness.time, "monotonic", fake)
    return fake


def beats(*seconds: float, activity: Activity = Activity.STEPPING) -> dict[int, Heartbeat]:
    return {rank: Heartbeat(activity, 4, s) for rank, s in enumerate(seconds)}


def test_the_watch_names_the_worker_silent_longest_past_the_limit(clock: FakeClock) -> None:
    watch = WorkerWatch(10.0)
    for _ in range(11):  # the driver looks every second
        clock.now += 1.0
        watch.check(beats(0.1, 10.0, 0.2))
    clock.now += 0.5
    with pytest.raises(WorkerTimeoutError) as info:
        watch.check(beats(0.1, 10.5, 0.2))
    assert str(info.value).startswith("A3C worker 1 sent nothing for 10 s (last: stepping its envs in update 5); ")
    watch.check(beats(0.1, 10.5, 0.2, activity=Activity.FINISHING))  # finishing workers are not silent


def test_the_limit_grows_with_the_slowest_update(clock: FakeClock) -> None:
    watch = WorkerWatch(10.0)
    watch.saw_reports([("report", 0, {"slowest_update": 0.2}), ("report", 1, {"slowest_update": None})])
    assert watch.limit == 10.0
    watch.saw_reports([("report", 1, {"slowest_update": 1.5})])
    assert watch.limit == SLOWEST_UPDATE_FACTOR * 1.5
    for _ in range(25):
        clock.now += 1.0
        watch.check(beats(25.0))  # under 30 s: slow, not stuck


def test_silence_while_the_driver_was_away_does_not_count(clock: FakeClock) -> None:
    """A callback that ran for a minute, or the whole process group suspended (Ctrl-Z): the workers' beats are as
    old as the driver's absence, which is not held against them; silence while it watches still is."""
    watch = WorkerWatch(10.0)
    clock.now += 60.0
    watch.check(beats(60.0, 59.0))
    for since_back in range(1, 10):
        clock.now += 1.0
        watch.check(beats(60.0 + since_back, 0.0))
    clock.now += 1.0
    with pytest.raises(WorkerTimeoutError, match=r"^A3C worker 0 sent nothing for 71 s "):
        watch.check(beats(71.0, 0.0))


def test_workers_yet_to_start_are_named_by_their_lowest_rank(clock: FakeClock) -> None:
    watch = WorkerWatch(1.0)
    clock.now += 0.5
    watch.check(beats(0.5, 0.5, 0.5, activity=Activity.STARTING))
    clock.now += 0.6
    with pytest.raises(WorkerTimeoutError, match=r"^A3C worker 0 sent nothing for 1\.1 s \(last: starting\); "):
        watch.check(beats(1.1, 1.1, 1.1, activity=Activity.STARTING))


def test_the_shared_memory_store_keeps_each_workers_latest_beat() -> None:
    model = A3C("MlpPolicy", "CartPole-v1", backend="serial", n_workers=1)
    store = SharedMemoryStore(GlobalModel(model.policy, 0, 0, False, True, True), mp.get_context("spawn"), 3)
    time.sleep(0.05)
    store.beat(1, Activity.PUSHING, 7)
    heartbeats = store.heartbeats()
    assert [beat.activity for beat in heartbeats.values()] == [Activity.STARTING, Activity.PUSHING, Activity.STARTING]
    assert heartbeats[1].updates == 7 and heartbeats[1].seconds < 0.05 <= heartbeats[0].seconds
    assert not store.stop_requested()
    store.request_stop()
    assert store.stop_requested()
