"""A3C's callback gate (``callback_lag``) and the environment its workers run with.

Workers ask their parameter store to wait (``wait_for_driver``) before each update while the steps run
more than ``callback_lag`` ahead of the driver's callbacks; the driver publishes how far its callbacks
got (``publish_progress``) after each catch-up. A callback that holds the main process therefore holds
the workers back, unless ``callback_lag`` is None. Process tests pay the workers' start-up (about a second each).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from multiprocessing import forkserver
from typing import Any

import pytest
from a3c_helpers import MARK_VARIABLE, cartpole_reporting_mark, deadline
from stable_baselines3.common.callbacks import BaseCallback

from pgplug import A3C
from pgplug.contracts.backend import ParameterStore, WorkerFailed
from pgplug.plugins.a3c.serial_backend import SerialBackend
from pgplug.plugins.a3c.worker import WorkerSpec

N_WORKERS, N_ENVS, T_MAX = 2, 4, 5
ROLLOUT = N_ENVS * T_MAX  # env steps one worker update adds to the shared counter
BUDGET, HOLD_AT = 3_000, 600


def wait_for(condition: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    """Poll ``condition`` every 5 ms; fail (rather than hang) after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, f"{what} not reached within {timeout} s"
        time.sleep(0.005)


def wait_until_settled(shared: ParameterStore, quiet: float = 0.5, timeout: float = 30.0) -> int:
    """The shared step counter once it has not moved for ``quiet`` seconds (workers paused or done)."""
    end = time.monotonic() + timeout
    last, since = shared.steps, time.monotonic()
    while time.monotonic() - since < quiet:
        assert time.monotonic() < end, f"the step counter kept moving for {timeout} s"
        time.sleep(0.01)
        now = shared.steps
        if now != last:
            last, since = now, time.monotonic()
    return last


class HoldOnce(BaseCallback):
    """Records every ``on_step``; at the first one at or past ``at`` it keeps the main process busy
    (as a slow evaluation would) until ``hold(shared)`` returns, and records what the workers did meanwhile.

    The parameter store is read from the ``learn()`` locals SB3 hands every callback.
    """

    def __init__(self, at: int, hold: Callable[[ParameterStore], Any]) -> None:
        super().__init__()
        self.at, self.hold = at, hold
        self.timesteps: list[int] = []
        self.held_at: int | None = None
        self.published: int | None = None  # callbacks_at, as the workers saw it during the hold
        self.result: Any = None

    def _on_step(self) -> bool:
        self.timesteps.append(self.num_timesteps)
        if self.held_at is None and self.num_timesteps >= self.at:
            shared: ParameterStore = self.locals["store"]
            self.held_at, self.published = self.num_timesteps, shared.progress
            self.result = self.hold(shared)
        return True


def run_with_hold(callback_lag: int | None, hold: Callable[[ParameterStore], Any]) -> tuple[A3C, HoldOnce]:
    model = A3C(
        "MlpPolicy",
        "CartPole-v1",
        n_workers=N_WORKERS,
        n_envs_per_worker=N_ENVS,
        t_max=T_MAX,
        seed=0,
        callback_lag=callback_lag,
    )
    callback = HoldOnce(HOLD_AT, hold)
    with deadline(120):
        model.learn(BUDGET, callback=callback)
    return model, callback


def assert_ran_to_budget(model: A3C, callback: HoldOnce) -> None:
    """The run still ends at the budget (at most one rollout per worker past it), every on_step called once."""
    assert BUDGET <= model.num_timesteps <= BUDGET + N_WORKERS * ROLLOUT
    assert model.num_timesteps == model._n_updates * ROLLOUT
    assert callback.timesteps == list(range(N_ENVS, model.num_timesteps + 1, N_ENVS))
    assert callback.held_at == HOLD_AT  # on_step counts in N_ENVS steps and 600 is a multiple of 4


def test_a_slow_callback_holds_the_workers_within_callback_lag() -> None:
    """While a callback holds the main process at step 600, workers stop at most ``lag + n_workers·rollout``
    steps past the step ``P`` the callbacks had published (``P`` < 600: it is published after each catch-up).

    Why that bound: a worker starts an update only if ``steps − P ≤ lag`` at its gate, and an update adds
    one rollout (t_max · n_envs = 20 steps). Once the counter exceeds ``P + lag`` (reaching at most
    ``P + lag + 4``: it moves in vec-env steps of 4) no update can start, and only those in flight finish:
    at most 16 more steps of the crossing worker's and 20 of the other's, so at most ``P + lag + 40``.
    And the counter does pass ``P + lag``: workers only stop once they are more than ``lag`` ahead.
    """
    lag = 400

    def hold(shared: ParameterStore) -> int:
        published = shared.progress
        wait_for(lambda: shared.steps > published + lag, what="the gate")
        return wait_until_settled(shared)  # paused at the gate: not moving for 0.5 s

    model, callback = run_with_hold(lag, hold)
    assert callback.published is not None and callback.published < HOLD_AT
    assert callback.published % N_ENVS == 0
    paused_at = callback.result
    assert callback.published + lag < paused_at <= callback.published + lag + N_WORKERS * ROLLOUT
    assert paused_at < BUDGET  # so it was the gate, not the budget, that stopped them
    assert_ran_to_budget(model, callback)


def test_without_callback_lag_the_workers_run_on_to_the_budget() -> None:
    """With ``callback_lag=None`` workers never wait: while the callback holds at step 600, they finish
    the whole 3000-step budget (far beyond the 600 + 400 + 40 a lag of 400 would allow)."""

    def hold(shared: ParameterStore) -> int:
        wait_for(lambda: shared.steps >= BUDGET, what="the budget")
        return shared.steps

    model, callback = run_with_hold(None, hold)
    assert callback.published is not None and callback.published < HOLD_AT
    assert callback.result >= BUDGET
    assert_ran_to_budget(model, callback)


def test_serial_backend_ignores_callback_lag(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process the callbacks run between the worker's updates, so its spec carries no lag and the
    run completes even with ``callback_lag=1`` (less than one update)."""
    specs: list[WorkerSpec] = []
    original_start = SerialBackend.start

    def recording_start(self: SerialBackend, spec: WorkerSpec, *args: Any) -> ParameterStore:
        specs.append(spec)
        return original_start(self, spec, *args)

    monkeypatch.setattr(SerialBackend, "start", recording_start)
    model = A3C(
        "MlpPolicy", "CartPole-v1", backend="serial", n_workers=1, n_envs_per_worker=2, t_max=5, seed=0, callback_lag=1
    )
    callback = HoldOnce(HOLD_AT, lambda shared: None)
    with deadline(60):
        model.learn(1_000, callback=callback)
    assert model.callback_lag == 1
    assert [spec.callback_lag for spec in specs] == [None]
    assert model.num_timesteps == 1_000
    assert model._n_updates == 100
    assert callback.timesteps == list(range(2, 1_001, 2))


def test_workers_get_the_environment_of_learn_time_not_the_forkservers(monkeypatch: pytest.MonkeyPatch) -> None:
    """A variable set after the forkserver started still reaches the workers: they are forked from the
    server (whose environment is the one it started with) but take the main process's at ``learn()``."""
    model = A3C("MlpPolicy", cartpole_reporting_mark, n_workers=1, n_envs_per_worker=1, t_max=5, seed=0)
    server = forkserver._forkserver._forkserver_pid  # started by building the model (if not before)
    assert server is not None
    mark = f"mark-{uuid.uuid4().hex}"
    monkeypatch.setenv(MARK_VARIABLE, mark)
    with open(f"/proc/{server}/environ", "rb") as environ:
        assert mark.encode() not in environ.read()  # the server itself never saw it
    with deadline(60), pytest.raises(WorkerFailed) as info:
        model.learn(1_000)
    assert f"RuntimeError: mark={mark}" in str(info.value)


def test_a_policy_too_large_for_the_forkserver_is_refused_in_one_line() -> None:
    """Over ~240 shared tensors (here 30-layer MLPs with RMSprop state) the forkserver cannot hand them over."""
    from pgplug.errors import PgplugError

    model = A3C("MlpPolicy", "CartPole-v1", n_workers=1, seed=0, policy_kwargs={"net_arch": [8] * 30})
    with pytest.raises(PgplugError, match=r"tensors to share, more than the forkserver can pass a worker \(240\)"):
        model.learn(100)
