"""A3C on Ray (``backend="ray"``): learning, parity with the serial backend, faults survived and faults reported in
one line, nothing left running, local plugins shipped to the workers, and the command line.

Most tests join one two-node cluster of this module (``ray.cluster_utils.Cluster``: a head of 2 CPUs and a node of
1 CPU, 100 MiB object stores each, started in this loopback-only network namespace and shut down at the module's
end) through ``backend_kwargs={"address": ...}``; a few test pgplug's own local start (no address). Each Ray run
pays its actors' start (a few seconds), so each test checks several things about one run. Every test is marked
``ray``: conftest.py fails it outside a loopback-only namespace and checks that it leaves no process behind.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch as th
from a3c_helpers import (
    EXPLOSION,
    OWNER_VARIABLE,
    assert_same_model,
    deadline,
    descendant_pids,
    exploding_cartpole,
    flat_params,
    gone,
    loopback_only_failure,
    ray_actor_processes,
    ray_processes_left,
    ray_sessions,
    self_killing_cartpole,
)
from learning import until_reward
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

import pgplug
from pgplug import A3C, hookimpl
from pgplug.cli import main
from pgplug.contracts.backend import WorkerDied, WorkerFailed
from pgplug.contracts.registries import Host as PluginHost
from pgplug.errors import PgplugError, WorkerError
from pgplug.plugins.a3c import ray_backend
from pgplug.plugins.a3c.ray_backend import ParameterServerLost, RayBackend
from pgplug.plugins.a3c.ray_cluster import RAY_EXTRA, sigterm_kept
from pgplug.plugins.a3c.ray_store import FlatLayout
from pgplug.runtime.envs import run_name

pytestmark = pytest.mark.ray

TESTS = Path(__file__).resolve().parent
PLUGIN_FIXTURES = TESTS / "plugin_fixtures"
#: Every Ray node's object store (A3C moves weights and gradients, never data).
OBJECT_STORE = 100 * 2**20
#: The small runs' settings.
KWARGS: dict[str, Any] = {"n_workers": 2, "n_envs_per_worker": 2, "t_max": 5, "seed": 0}
#: The command line's quiet flags: no live display, no evaluations, a fixed seed.
QUIET = ["--no-progress", "--eval-freq", "-1", "--n-eval-episodes", "0", "--seed", "0"]
#: Workers on a cluster run on its nodes' cores: no warning about this machine's (an error if there is one).
MORE_WORKERS_THAN_LOCAL_CORES = "error:n_workers=3 is more than the CPU cores available:pgplug.errors.PgplugWarning"
#: The one line of a worker that died with no restarts left, and of a lost parameter server.
NO_RESTARTS_LEFT = (
    r"A3C worker [0-9] died \(\w+: its process was killed or its node lost\), and the 0 restart\(s\) of max_restarts "
    r"are used up"
)
SERVER_LOST = (
    r"the A3C parameter server was lost \(\w+\); the weights of update ([0-9]+) \(the driver's last copy\) are kept"
)
#: Seconds a command line gets to end once it should.
CLI_TIMEOUT = 120
#: What Ray itself writes to a driver's stderr: its core's log records (``[2026-12-01 04:45:57,833 W 12 12]
#: network_util.cc:330: ...``; in this namespace it warns at every start and connection that it has no route out),
#: its Python loggers' records, and the output it forwards from its processes, prefixed ``(raylet)`` or ``(<actor>
#: pid=<pid>)`` (the resource tracker of a parameter server killed by SIGKILL warns of leaked semaphores, and is
#: sometimes forwarded in time).
RAY_OUTPUT = re.compile(
    r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ [DIWEF] \d+ \d+\] \w+\.cc:\d+: .*"
    r"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+\t[A-Z]+ \w+\.py:\d+ -- .*"
    r"|(?:\x1b\[\d+m)?\((?:raylet|\w+ pid=\d+(?:, ip=[\d.]+)?)\)(?:\x1b\[0m)? .*"
)


# ------------------------------------------------------------------------------------------------
# Fixtures and helpers
# ------------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def process_sigterm_handler_kept() -> Iterator[None]:
    """Each test leaves this process's SIGTERM handler as it found it (``ray.init`` outside pgplug's connect, in a
    test that connects first, sets one of Ray's)."""
    with sigterm_kept():
        yield


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """The module's two-node cluster: a head of 2 CPUs and a node of 1 CPU, with ``tests/`` on the nodes'
    ``PYTHONPATH`` (the env factories of ``a3c_helpers``, as a real cluster has the user's code on every node). At
    the end every process of it is gone."""
    failure = loopback_only_failure()  # checked before anything starts: conftest's own check comes after this
    if failure is not None:
        pytest.fail(failure, pytrace=False)
    from ray.cluster_utils import Cluster

    owner, sessions = "test-cluster", ray_sessions()
    # Ray's Node objects, made in this process, set a SIGTERM handler of their own (tests after these expect the
    # process's); pgplug's own connect() keeps it the same way.
    with pytest.MonkeyPatch.context() as patch, sigterm_kept():
        patch.setenv(OWNER_VARIABLE, owner)
        patch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])))
        cluster = Cluster(initialize_head=True, head_node_args=node_args(cpus=2, include_dashboard=False))
        try:
            cluster.add_node(**node_args(cpus=1))
        except BaseException:
            cluster.shutdown()
            raise
    try:
        yield cluster
    finally:
        cluster.shutdown()
        left = ray_processes_left(owner, ray_sessions() - sessions)
        assert not left, f"the cluster's processes left running: {left}"


def node_args(cpus: int, **kwargs: Any) -> dict[str, Any]:
    return {"num_cpus": cpus, "object_store_memory": OBJECT_STORE, **kwargs}


def raylet_pid(node: Any) -> int:
    """The pid of a cluster node's raylet (the parent of the node's workers)."""
    from ray._private import ray_constants

    return node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid


def on_ray(cluster: Any = None, **backend_kwargs: Any) -> dict[str, Any]:
    """A3C's arguments for a run on Ray: joining ``cluster``, or (None) on a local Ray that pgplug starts."""
    address = {} if cluster is None else {"address": cluster.address}
    return {"backend": "ray", "backend_kwargs": {**address, **backend_kwargs}}


@pytest.fixture
def ray_backends(monkeypatch: pytest.MonkeyPatch) -> list[RayBackend]:
    """The ray backends that ``learn()`` starts, in order."""
    started: list[RayBackend] = []
    original = RayBackend.start

    def start(self: RayBackend, *args: Any) -> Any:
        started.append(self)
        return original(self, *args)

    monkeypatch.setattr(RayBackend, "start", start)
    return started


@pytest.fixture
def server_weights(monkeypatch: pytest.MonkeyPatch) -> list[tuple[list[np.ndarray], int]]:
    """The parameter server's weights and update count, pulled afresh at the end of each run: once the workers
    have stopped, just before the backend kills its actors."""
    pulled: list[tuple[list[np.ndarray], int]] = []
    original = RayBackend._end_everything

    def end_everything(self: RayBackend) -> None:
        pulled.append(self._ray.get(self._server.weights.remote(), timeout=30))
        original(self)

    monkeypatch.setattr(RayBackend, "_end_everything", end_everything)
    return pulled


class AtStep(BaseCallback):
    """Runs ``action()`` once, at the first ``on_step`` at or past ``step`` env steps; keeps what it returned."""

    def __init__(self, step: int, action: Callable[[], Any]) -> None:
        super().__init__()
        self.step, self.action = step, action
        self.result: Any = None
        self.ran = False

    def _on_step(self) -> bool:
        if not self.ran and self.num_timesteps >= self.step:
            self.ran = True
            self.result = self.action()
        return True


class PlacementProbe(BaseCallback):
    """Every ``every`` env steps, notes the raylets (nodes) whose A3C worker processes run at that moment."""

    def __init__(self, every: int) -> None:
        super().__init__()
        self.every, self.raylets, self._next = every, set(), every

    def _on_step(self) -> bool:
        if self.num_timesteps >= self._next:
            self._next += self.every
            self.raylets |= worker_raylets()
        return True


class StopAtCall(BaseCallback):
    """Returns False on its ``stop_at``-th call."""

    def __init__(self, stop_at: int) -> None:
        super().__init__()
        self.stop_at = stop_at

    def _on_step(self) -> bool:
        return self.n_calls < self.stop_at


class UpdateRecorder:
    """A throw-away plugin that keeps the metrics of every worker update (``pgplug_after_update``, in the driver)."""

    def __init__(self) -> None:
        self.updates: list[dict[str, float]] = []

    @hookimpl
    def pgplug_after_update(self, algorithm: Any, metrics: dict[str, float]) -> None:
        self.updates.append(dict(metrics))


def sigkill_one(class_name: str) -> int:
    """SIGKILL the process of the first actor of ``class_name`` of this session's Ray; its pid."""
    actors = ray_actor_processes(class_name)
    assert actors, f"no ray::{class_name} process found"
    os.kill(actors[0].pid, signal.SIGKILL)
    return actors[0].pid


def worker_raylets() -> set[int]:
    """The raylets (one per node) whose A3C worker processes are running now, by pid."""
    return {int(worker.environ["RAY_RAYLET_PID"]) for worker in ray_actor_processes("A3CWorker")}


def single_line(error: BaseException) -> str:
    """The error's message, which must be one line."""
    message = str(error)
    assert "\n" not in message, message
    return message


def pgplug_command(*args: str, cwd: Path, env: dict[str, str | None] | None = None, **popen: Any) -> subprocess.Popen:
    """``python -m pgplug ARGS`` in a subprocess (its Ray, if it starts one, inherits the test's owner label), with
    the variables of ``env`` set, or removed where None."""
    environ = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(TESTS), "COLUMNS": "250"}
    for name, value in (env or {}).items():
        if value is None:
            environ.pop(name, None)
        else:
            environ[name] = value
    return subprocess.Popen(
        [sys.executable, "-m", "pgplug", *args],
        cwd=cwd,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def wait_for_file(path: Path, process: subprocess.Popen, timeout: float = CLI_TIMEOUT) -> None:
    """Wait until ``path`` exists (a checkpoint: training has made progress), failing if the command ends first."""
    end = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            out, err = process.communicate()
            raise AssertionError(f"the command ended (code {process.returncode}) before {path} existed:\n{out}{err}")
        assert time.monotonic() < end, f"{path} did not appear within {timeout} s"
        time.sleep(0.1)


def finish(process: subprocess.Popen) -> tuple[str, str]:
    """The command's output once it has ended (killed if it takes longer than ``CLI_TIMEOUT``)."""
    try:
        return process.communicate(timeout=CLI_TIMEOUT)
    finally:
        process.kill()
        process.wait()


def pgplug_lines(err: str) -> list[str]:
    """A command's stderr without what Ray wrote there (:data:`RAY_OUTPUT`): what pgplug wrote."""
    return [line for line in err.strip().splitlines() if not RAY_OUTPUT.fullmatch(line)]


def run_folder(cwd: Path, env_id: str) -> Path:
    """The folder of the first ``pgplug train --algo a3c`` run on ``env_id`` in ``cwd``."""
    return cwd / "logs" / "a3c" / f"{run_name(env_id)}_1"


# ------------------------------------------------------------------------------------------------
# Learning, and the weights the driver ends with
# ------------------------------------------------------------------------------------------------


@pytest.mark.filterwarnings(MORE_WORKERS_THAN_LOCAL_CORES)
def test_three_workers_on_two_nodes_learn_cartpole_save_and_load(
    cluster: Any, server_weights: list[tuple[list[np.ndarray], int]], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Three workers on the cluster's three CPUs (so both nodes run workers) learn CartPole: an evaluation of the
    global weights reaches 200 (random play: about 22). The settings are those of the process backend's learning
    test; measured when this was written (one run each of seeds 0-5), ``learn()`` stopped after 4.5k-11k steps, but
    asynchronous updates make each run differ (one CI run was still at 172 after 30k): the budget is 80k steps.

    When ``learn()`` returns, the driver's policy holds the server's final weights (pulled afresh as the run ended),
    and the model saves, loads, predicts and evaluates as any SB3 model.
    """
    model = A3C(
        "MlpPolicy",
        "CartPole-v1",
        n_workers=3,
        n_envs_per_worker=4,
        t_max=5,
        learning_rate=1e-3,
        ent_coef=0.0,
        seed=0,
        **on_ray(cluster),
    )
    evaluation = until_reward("CartPole-v1", 200, every_steps=2_000, n_envs=4, eval_seed=100)
    placement = PlacementProbe(every=500)
    with deadline(300):
        model.learn(80_000, callback=[placement, evaluation])
    assert evaluation.best_mean_reward >= 200
    assert f"A3C on Ray: the Ray cluster at {cluster.address} (2 nodes, 3 CPUs)" in capsys.readouterr().out
    assert placement.raylets == {raylet_pid(node) for node in cluster.list_all_nodes()}

    ((weights, updates),) = server_weights
    state = list(model.policy.state_dict().values())
    assert updates == model._n_updates > 0
    for driver, server in zip(FlatLayout(state).pack(state), weights, strict=True):
        np.testing.assert_array_equal(driver, server)

    model.save(tmp_path / "a3c.zip")
    loaded = A3C.load(tmp_path / "a3c.zip")
    assert (loaded.backend, loaded.backend_kwargs) == ("ray", {"address": cluster.address})
    assert th.equal(flat_params(loaded), flat_params(model))
    obs = np.stack([make_vec_env("CartPole-v1", n_envs=1, seed=s).reset()[0] for s in range(64)])
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0])
    mean_reward, _ = evaluate_policy(loaded, make_vec_env("CartPole-v1", n_envs=1, seed=200), n_eval_episodes=3)
    assert mean_reward >= 8  # CartPole episodes last at least 8 steps


def test_one_worker_on_ray_equals_the_serial_backend_update_for_update(cluster: Any) -> None:
    """One Ray worker runs the serial backend's loop on the same envs: same weights, optimizer statistics, update
    and step counts, bitwise.

    The random streams: a Ray worker enters its process with ``WorkerSpec.enter_process(rank)``, which seeds
    torch's global generator (its actions are drawn from it) with ``seed + rank``; the serial backend's worker runs
    in the driver, whose generator is wherever the model's construction left it. Seeding the driver's generator as
    worker 0's before the serial run makes the comparison fair. The envs are seeded alike by both.
    """
    updates, n_envs, t_max = 100, 2, 5
    kwargs = {**KWARGS, "n_workers": 1, "n_envs_per_worker": n_envs, "t_max": t_max}
    on_ray_model = A3C("MlpPolicy", "CartPole-v1", **kwargs, **on_ray(cluster))
    with deadline(300):
        on_ray_model.learn(updates * t_max * n_envs)
    serial = A3C("MlpPolicy", "CartPole-v1", **kwargs, backend="serial")
    th.manual_seed(kwargs["seed"] + 0)  # what enter_process(0) does in the Ray worker
    serial.learn(updates * t_max * n_envs)
    assert on_ray_model._n_updates == serial._n_updates == updates
    assert on_ray_model.num_timesteps == serial.num_timesteps == updates * t_max * n_envs
    assert serial.policy.optimizer.state_dict()["state"][0]["step"] == updates
    assert_same_model(on_ray_model, serial)


def test_a_pipelined_worker_on_a_local_ray_learns_one_update_late_and_leaves_nothing(plugin_host: PluginHost) -> None:
    """``pipeline=True``: the worker pushes each gradient while the next rollout runs on the weights the previous
    push returned, so its gradients are one update late (policy lag 1, as its reports say from its third update
    on); it still learns CartPole: an evaluation reaches 150 (one run each of seeds 0-5 stopped after 3k-7k steps
    when this was written; the budget is 3x the slowest).

    The run starts pgplug's own local Ray (no address): once ``learn()`` has returned, no process of that Ray is
    left, whether found by its session folder in command lines, by the test's owner label in the environment (the
    workers, whose command line Ray replaced by a title) or as a descendant of this process.
    """
    recorder = UpdateRecorder()
    plugin_host.pm.register(recorder)
    sessions, descendants = ray_sessions(), descendant_pids()
    model = A3C(
        "MlpPolicy",
        "CartPole-v1",
        n_workers=1,
        n_envs_per_worker=4,
        t_max=5,
        learning_rate=1e-3,
        ent_coef=0.0,
        seed=0,
        **on_ray(pipeline=True),
    )
    evaluation = until_reward("CartPole-v1", 150, every_steps=2_000, n_envs=4, eval_seed=100)
    with deadline(300):
        model.learn(21_000, callback=evaluation)
    assert evaluation.best_mean_reward >= 150
    lags = np.array([update["a3c/policy_lag"] for update in recorder.updates])
    assert len(lags) == model._n_updates and list(lags[:2]) == [0, 0]
    assert np.all(lags[2:] == 1), np.unique(lags, return_counts=True)  # one worker: exactly one update late

    started = ray_sessions() - sessions
    assert len(started) == 1  # pgplug's own Ray
    assert not ray_processes_left(os.environ[OWNER_VARIABLE], started)
    assert descendant_pids() <= descendants


# ------------------------------------------------------------------------------------------------
# Faults survived and faults reported
# ------------------------------------------------------------------------------------------------


def test_a_worker_killed_mid_run_is_replaced_and_the_run_reaches_its_budget(
    cluster: Any, ray_backends: list[RayBackend], caplog: pytest.LogCaptureFixture
) -> None:
    """A worker's process is SIGKILLed from a callback (as the OOM killer would): its actor is replaced, one
    restart of three, said in one warning, and the run goes on to its budget."""
    budget = 3_000
    model = A3C("MlpPolicy", "CartPole-v1", **KWARGS, **on_ray(cluster, max_restarts=3))
    kill = AtStep(500, lambda: sigkill_one("A3CWorker"))
    with deadline(300), caplog.at_level(logging.WARNING, logger="pgplug"):
        model.learn(budget, callback=kill)
    assert kill.ran and gone(kill.result)
    assert ray_backends[0].restarts == 1
    (warning,) = [record.getMessage() for record in caplog.records if "restarting it" in record.getMessage()]
    assert re.fullmatch(
        r"A3C worker [01] died \(\w+: its process was killed or its node lost\); restarting it "
        r"\(restart 1 of max_restarts=3\)",
        warning,
    ), warning
    assert budget <= model.num_timesteps <= budget + 2 * 5 * 2


def test_a_worker_killed_with_no_restarts_left_is_one_line(cluster: Any) -> None:
    """The workers' envs SIGKILL their process after 30 steps; with ``max_restarts=0`` the first death ends the run."""
    model = A3C("MlpPolicy", self_killing_cartpole, **KWARGS, **on_ray(cluster, max_restarts=0))
    with deadline(120), pytest.raises(WorkerDied) as info:
        model.learn(100_000)
    assert re.fullmatch(NO_RESTARTS_LEFT, single_line(info.value)), str(info.value)


def test_a_worker_killed_with_no_restarts_left_on_the_command_line_saves_the_model(
    cluster: Any, tmp_path: Path
) -> None:
    env_id = "a3c_helpers:pgplug-test/SelfKillingCartPole-v0"
    process = pgplug_command(
        "train", "--algo", "a3c", "--env", env_id, "-n", "100000", *QUIET,
        "--backend", "ray", "--address", cluster.address, "-params", "backend_kwargs={max_restarts: 0}",
        cwd=tmp_path,
    )  # fmt: skip
    out, err = finish(process)
    lines = pgplug_lines(err)
    assert process.returncode == 1 and len(lines) == 1, err
    assert re.fullmatch(f"pgplug: error: {NO_RESTARTS_LEFT}", lines[0]), lines[0]
    saved = run_folder(tmp_path, env_id) / f"{run_name(env_id)}_interrupted.zip"
    assert f"training failed: model saved to {saved.relative_to(tmp_path)}" in out
    assert pgplug.load(saved).num_timesteps > 0


def test_a_worker_exception_is_reraised_with_its_traceback(cluster: Any) -> None:
    """As with local processes: ``WorkerFailed`` with the worker's traceback, ending in the env's own error."""
    model = A3C("MlpPolicy", exploding_cartpole, **KWARGS, **on_ray(cluster))
    with deadline(120), pytest.raises(WorkerFailed) as info:
        model.learn(100_000)
    message = str(info.value)
    assert re.match(r"A3C worker [01] raised an exception:\nTraceback \(most recent call last\)", message), message
    assert f"RuntimeError: {EXPLOSION} 30" in message
    assert "a3c_helpers.py" in message  # the frame that raised, in the worker


def test_a_callback_returning_false_stops_learning_early(cluster: Any) -> None:
    """As with local processes; the actors stopped are gone when ``learn()`` returns (conftest.py checks)."""
    budget = 1_000_000
    model = A3C("MlpPolicy", "CartPole-v1", **KWARGS, **on_ray(cluster))
    callback = StopAtCall(50)
    with deadline(120):
        model.learn(budget, callback=callback)
    assert callback.n_calls == 50  # on_step is not called again after the False
    assert 50 * 2 <= model.num_timesteps < 50_000


def test_a_node_lost_mid_run_costs_one_restart(cluster: Any, ray_backends: list[RayBackend]) -> None:
    """The worker is made to run on a third node (the only free CPU: placeholder actors hold the others), which is
    removed mid-run, once the placeholders are gone: the worker is replaced on the nodes left, and the run reaches
    its budget after one restart."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    class Placeholder:
        def ready(self) -> bool:
            return True

    budget = 3_000
    extra = cluster.add_node(**node_args(cpus=1))
    ray.init(address=cluster.address, logging_level=logging.WARNING)
    try:
        placeholders = [
            ray.remote(Placeholder)
            .options(num_cpus=cpus, scheduling_strategy=NodeAffinitySchedulingStrategy(node.node_id, soft=False))
            .remote()
            for node, cpus in (
                (cluster.head_node, 2),
                *((node, 1) for node in cluster.worker_nodes if node is not extra),
            )
        ]
        ray.get([placeholder.ready.remote() for placeholder in placeholders], timeout=60)
        model = A3C("MlpPolicy", "CartPole-v1", **{**KWARGS, "n_workers": 1}, **on_ray(max_restarts=1))

        def lose_the_node() -> tuple[set[int], int]:
            placed, extra_raylet = worker_raylets(), raylet_pid(extra)
            for placeholder in placeholders:
                ray.kill(placeholder)
            cluster.remove_node(extra)
            return placed, extra_raylet

        loss = AtStep(500, lose_the_node)
        with deadline(300):
            model.learn(budget, callback=loss)
    finally:
        ray.shutdown()
        if extra in cluster.worker_nodes:
            cluster.remove_node(extra)
    placed, extra_raylet = loss.result
    assert placed == {extra_raylet}  # the worker ran on the node that was lost
    assert ray_backends[0].restarts == 1
    assert budget <= model.num_timesteps <= budget + 5 * 2


def test_versions_that_differ_from_the_workers_are_one_line(cluster: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The driver sends the versions it expects; a worker whose node has others stops in one line naming them."""
    real = ray_backend.local_versions()
    monkeypatch.setattr(ray_backend, "local_versions", lambda: {**real, "torch": "0.0.1+fake"})
    model = A3C("MlpPolicy", "CartPole-v1", **KWARGS, **on_ray(cluster))
    with deadline(120), pytest.raises(WorkerError) as info:
        model.learn(10_000)
    assert isinstance(info.value, PgplugError)
    torch_version = re.escape(importlib.metadata.version("torch"))
    assert re.fullmatch(
        r"A3C worker [01]: versions differ between the driver and worker [01]'s node \([0-9.]+\): "
        rf"torch {torch_version} there, 0\.0\.1\+fake on the driver; "
        r"install the same pgplug, torch and stable-baselines3 on every node",
        single_line(info.value),
    ), str(info.value)


def test_losing_the_parameter_server_keeps_the_last_weights_fetched(cluster: Any) -> None:
    """The server's process is killed from a callback: the run ends in one line, and the driver's policy holds the
    weights it had fetched when the server died (those the callback saw), not the initial ones."""
    model = A3C("MlpPolicy", "CartPole-v1", **KWARGS, **on_ray(cluster))
    initial = flat_params(model)

    def kill_the_server() -> th.Tensor:
        sigkill_one("ParameterServer")
        return flat_params(model)

    kill = AtStep(500, kill_the_server)
    with deadline(120), pytest.raises(ParameterServerLost) as info:
        model.learn(1_000_000, callback=kill)
    match = re.fullmatch(SERVER_LOST, single_line(info.value))
    assert match and int(match.group(1)) > 0, str(info.value)
    assert th.equal(flat_params(model), kill.result)
    assert not th.equal(flat_params(model), initial)


def test_a_parameter_server_that_stops_answering_ends_the_run_in_one_line(
    cluster: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server's process is frozen (SIGSTOP) from a callback: every call of the driver waits at most
    SERVER_TIMEOUT, so the run ends with ParameterServerLost (GetTimeoutError) instead of hanging."""
    monkeypatch.setattr(ray_backend, "SERVER_TIMEOUT", 8.0)
    model = A3C("MlpPolicy", "CartPole-v1", **KWARGS, **on_ray(cluster))
    frozen: list[int] = []

    def freeze_the_server() -> None:
        (server,) = ray_actor_processes("ParameterServer")
        os.kill(server.pid, signal.SIGSTOP)
        frozen.append(server.pid)

    try:
        with deadline(120), pytest.raises(ParameterServerLost) as info:
            model.learn(1_000_000, callback=AtStep(500, freeze_the_server))
    finally:
        for pid in frozen:  # the backend killed its actors; a stopped process dies once it runs again
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    assert frozen, str(info.value)
    assert "(GetTimeoutError)" in single_line(info.value)
    assert re.fullmatch(SERVER_LOST, single_line(info.value)), str(info.value)


def test_losing_the_parameter_server_on_the_command_line_saves_the_model(cluster: Any, tmp_path: Path) -> None:
    """The server is killed from outside, at any moment of the driver's loop, once a checkpoint shows progress."""
    process = pgplug_command(
        "train", "--algo", "a3c", "--env", "CartPole-v1", "-n", "10000000", *QUIET,
        "--backend", "ray", "--address", cluster.address, "--save-freq", "200",
        cwd=tmp_path,
    )  # fmt: skip
    folder = run_folder(tmp_path, "CartPole-v1")
    wait_for_file(folder / "rl_model_200_steps.zip", process)
    sigkill_one("ParameterServer")
    out, err = finish(process)
    lines = pgplug_lines(err)
    assert process.returncode == 1 and len(lines) == 1, err
    match = re.fullmatch(f"pgplug: error: {SERVER_LOST}", lines[0])
    assert match and int(match.group(1)) > 0, lines[0]
    saved = folder / "CartPole-v1_interrupted.zip"
    assert f"training failed: model saved to {saved.relative_to(tmp_path)}" in out
    assert pgplug.load(saved).num_timesteps >= 200


# ------------------------------------------------------------------------------------------------
# Local plugins on the workers
# ------------------------------------------------------------------------------------------------


@pytest.mark.filterwarnings(MORE_WORKERS_THAN_LOCAL_CORES)
def test_a_plugin_file_is_shipped_to_the_workers_on_both_nodes(cluster: Any, plugin_host: PluginHost) -> None:
    """``scaled_td`` comes from a plugin file, loaded in the driver under a module name nothing else can import
    (``pgplug_local_...``): the workers can only run it from the copy shipped with their runtime env. Its scale 0
    zeroes every advantage, so every update's policy loss is 0 (and only this estimator makes it so); three workers
    on the cluster's three CPUs put workers on both nodes."""
    plugin_host.load_local(str(PLUGIN_FIXTURES / "scaled_td_plugin.py"))
    recorder = UpdateRecorder()
    plugin_host.pm.register(recorder)
    model = A3C(
        "MlpPolicy",
        "CartPole-v1",
        **{**KWARGS, "n_workers": 3},
        estimator="scaled_td",
        estimator_kwargs={"scale": 0.0},
        **on_ray(cluster),
    )
    placement = PlacementProbe(every=100)
    with deadline(120):
        model.learn(1_500, callback=placement)
    assert placement.raylets == {raylet_pid(node) for node in cluster.list_all_nodes()}
    assert {update["a3c/worker"] for update in recorder.updates} == {0, 1, 2}
    assert all(update["train/policy_loss"] == 0 for update in recorder.updates)
    assert all(update["train/value_loss"] > 0 for update in recorder.updates)


# ------------------------------------------------------------------------------------------------
# Without Ray, and the command line's flags
# ------------------------------------------------------------------------------------------------

#: Python run as if Ray were not installed: the path finder finds no ``ray`` (``importlib.util.find_spec`` returns
#: None and ``import ray`` raises ModuleNotFoundError, as without the package), everything else as usual.
WITHOUT_RAY = textwrap.dedent(
    """
    import importlib.util
    import sys
    from importlib.machinery import PathFinder


    class PathFinderWithoutRay(PathFinder):
        @classmethod
        def find_spec(cls, fullname, path=None, target=None):
            if fullname.partition(".")[0] == "ray":
                return None
            return super().find_spec(fullname, path, target)


    sys.meta_path[sys.meta_path.index(PathFinder)] = PathFinderWithoutRay
    assert importlib.util.find_spec("ray") is None
    """
)
BUILD_ON_RAY = """
from pgplug import A3C, PgplugError
try:
    A3C("MlpPolicy", "CartPole-v1", backend="ray")
except PgplugError as error:
    print(error)
assert "ray" not in sys.modules
"""
CLI = """
from pgplug.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_without_ray_the_backend_says_how_to_install_it(tmp_path: Path) -> None:
    hint = f"the ray backend needs Ray, which is not installed; install it with: {RAY_EXTRA}"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    built = subprocess.run(
        [sys.executable, "-c", WITHOUT_RAY + BUILD_ON_RAY], env=env, capture_output=True, text=True, timeout=300
    )
    assert built.returncode == 0 and built.stdout.splitlines() == [hint], built.stderr
    trained = subprocess.run(
        [sys.executable, "-c", WITHOUT_RAY + CLI, "train", "--algo", "a3c", "--env", "CartPole-v1", *QUIET,
         "--backend", "ray"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert trained.returncode == 1 and trained.stderr.splitlines() == [f"pgplug: error: {hint}"], trained.stderr
    assert not list(tmp_path.glob("logs/*/*"))  # no run folder left behind


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--algo", "a3c", "--address", "auto"],
            "--address applies to backends that join a cluster (ray); the backend is 'process' (add --backend ray)",
        ),
        (
            ["--algo", "a3c", "--backend", "serial", "--address", "auto"],
            "--address applies to backends that join a cluster (ray); the backend is 'serial' (add --backend ray)",
        ),
        (["--algo", "a2c", "--backend", "ray"], "--backend does not apply to a2c; algorithms with workers: a3c"),
        (["--algo", "a2c", "--address", "auto"], "--address does not apply to a2c; algorithms with workers: a3c"),
    ],
    ids=["address-with-process", "address-with-serial", "backend-on-a2c", "address-on-a2c"],
)
def test_backend_flags_that_do_not_apply_are_one_line(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], plugin_host: PluginHost
) -> None:
    assert main(["train", "--env", "CartPole-v1", "--no-progress", *args, "-f", str(tmp_path / "logs")]) == 1
    assert capsys.readouterr().err.splitlines() == [f"pgplug: error: {message}"]
    assert not list(tmp_path.glob("logs/*/*"))


def test_sigterm_to_a_command_line_run_on_ray_saves_the_model_and_leaves_no_ray(tmp_path: Path) -> None:
    """The command line starts its own local Ray; SIGTERM once a checkpoint shows progress stops it as Ctrl-C does:
    the model is saved, the exit code is 128 + 15, and nothing of that Ray is left.

    It runs as a user's would, without this session's Ray settings: pgplug's local Ray authenticates with a token of
    the process's own, rather than one Ray writes into ``~/.ray``.
    """
    sessions, home = ray_sessions(), tmp_path / "home"
    process = pgplug_command(
        "train", "--algo", "a3c", "--env", "CartPole-v1", "-n", "10000000", *QUIET, "--backend", "ray",
        "--save-freq", "200",
        cwd=tmp_path,
        env={"HOME": str(home), "RAY_USAGE_STATS_ENABLED": None, "RAY_AUTH_MODE": None, "RAY_AUTH_TOKEN": None},
    )  # fmt: skip
    folder = run_folder(tmp_path, "CartPole-v1")
    wait_for_file(folder / "rl_model_200_steps.zip", process)
    process.send_signal(signal.SIGTERM)
    out, err = finish(process)
    assert process.returncode == 128 + signal.SIGTERM and "Traceback" not in err, err
    saved = folder / "CartPole-v1.zip"
    assert f"interrupted: model saved to {saved.relative_to(tmp_path)}" in out
    assert pgplug.load(saved).num_timesteps >= 200
    started = ray_sessions() - sessions
    assert len(started) == 1  # the command line's own Ray
    assert not ray_processes_left(os.environ[OWNER_VARIABLE], started)
    assert not (home / ".ray").exists()
