"""Nothing a run learnt is lost: stop signals save, failures after the first update save, saves are atomic.

The commands run as real subprocesses (signals, file-size limits); the envs that fail live in
``tests/failure_envs/failing_envs.py``.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import pgplug
from pgplug import A2C

FAILURE_ENVS = Path(__file__).parent / "failure_envs"
QUIET = ["--no-progress", "--eval-freq", "-1", "--n-eval-episodes", "0", "--seed", "0"]


def pgplug_command(*args: str, cwd: Path, **popen: object) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(FAILURE_ENVS)}
    return subprocess.Popen(
        [sys.executable, "-m", "pgplug", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def wait_for_training(process: subprocess.Popen) -> list[str]:
    """Read stdout until the run folder is announced (training starts right after)."""
    lines = []
    for line in process.stdout:
        lines.append(line)
        if line.startswith("run folder:"):
            return lines
    raise AssertionError(f"the command ended before training: {process.stderr.read()}")


@pytest.mark.parametrize("algo", ["a2c", "a3c"])
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_stop_signal_saves_the_model_as_ctrl_c_does(algo: str, signum: int, tmp_path) -> None:
    process = pgplug_command("train", "--algo", algo, "--env", "CartPole-v1", "-n", "10000000", *QUIET, cwd=tmp_path)
    try:
        wait_for_training(process)
        import time

        time.sleep(4)  # a few updates
        process.send_signal(signum)
        out, err = process.communicate(timeout=120)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 128 + signum, err
    model_path = tmp_path / "logs" / algo / "CartPole-v1_1" / "CartPole-v1.zip"
    assert f"interrupted: model saved to {model_path.relative_to(tmp_path)}" in out
    assert pgplug.load(model_path).num_timesteps > 0


@pytest.mark.parametrize(
    "env, error",
    [
        ("failing_envs:RaisingCartPole-v0", "RuntimeError: the simulator crashed"),
        ("failing_envs:NanRewardCartPole-v0", "pgplug: error: the loss is nan: training diverged"),
    ],
)
def test_a_failure_after_the_first_update_saves_the_model_then_reports(env: str, error: str, tmp_path) -> None:
    process = pgplug_command("train", "--algo", "a2c", "--env", env, "-n", "100000", *QUIET, cwd=tmp_path)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 1
    run = tmp_path / "logs" / "a2c" / f"{env.partition(':')[2]}_1"
    saved = run / f"{env.partition(':')[2]}_interrupted.zip"
    assert f"training failed: model saved to {saved.relative_to(tmp_path)}" in out
    assert err.strip().splitlines()[-1].startswith(error)
    if error.startswith("pgplug:"):
        assert len(err.strip().splitlines()) == 1  # pgplug's own error: one line
    model = pgplug.load(saved)
    assert model.num_timesteps > 0 and model._n_updates > 0


def test_a_failure_before_the_first_update_saves_nothing(tmp_path) -> None:
    env = "failing_envs:RaisingAtOnceCartPole-v0"
    process = pgplug_command("train", "--algo", "a2c", "--env", env, "-n", "1000", *QUIET, cwd=tmp_path)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 1 and "the simulator crashed" in err
    assert "training failed" not in out
    assert not list(tmp_path.rglob("*.zip"))


def _limit_file_size(limit: int):
    def set_limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, as on a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return set_limit


SAVE_OVER = """
import sys
import time
from pgplug import A2C
model = A2C("MlpPolicy", "CartPole-v1", n_steps=5, seed=1, policy_kwargs=dict(net_arch=[256, 256]))
try:
    model.save(sys.argv[1])
except OSError as exc:
    print(exc.errno)
"""


def test_a_save_that_fails_leaves_the_old_file_and_no_partial_file(tmp_path) -> None:
    path = tmp_path / "model.zip"
    A2C("MlpPolicy", "CartPole-v1", n_steps=5, seed=0).save(path)
    before = path.read_bytes()
    done = subprocess.run(
        [sys.executable, "-c", SAVE_OVER, str(path)],
        preexec_fn=_limit_file_size(len(before) + 10_000),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.stdout.strip() == "27", done.stderr  # EFBIG: the bigger model did not fit
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.zip"]
    assert A2C.load(path).num_timesteps == 0


def test_a_full_disk_at_the_final_save_is_one_line(tmp_path) -> None:
    process = pgplug_command(
        "train",
        "--algo",
        "a2c",
        "--env",
        "CartPole-v1",
        "-n",
        "200",
        *QUIET,
        cwd=tmp_path,
        preexec_fn=_limit_file_size(40_000),
    )
    _, err = process.communicate(timeout=300)
    lines = err.strip().splitlines()
    assert process.returncode == 1 and len(lines) == 1 and "File too large" in lines[0], err
    assert not list(tmp_path.rglob("*.zip")) and not list(tmp_path.rglob("*.partial"))


def test_a_signal_during_a_save_waits_for_the_save() -> None:
    from pgplug.cli.signals import Stopped, exit_code, stop_signals_interrupt, uninterrupted

    finished = False
    with pytest.raises(Stopped) as stopped, stop_signals_interrupt(), uninterrupted():
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)  # a second one: still the first that counts
        finished = True
    assert finished and stopped.value.signum == signal.SIGTERM and exit_code(stopped.value) == 143
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def descendants(pid: int) -> set[int]:
    from a3c_helpers import child_pids

    found, frontier = set(), {pid}
    while frontier:
        children = set().union(*(child_pids(parent) for parent in frontier)) - found
        found |= children
        frontier = children
    return found


def test_a_killed_a3c_worker_saves_the_model_and_is_one_line(tmp_path) -> None:
    """The forkserver's children are the workers; one of them is killed by SIGKILL mid-run."""
    import time

    process = pgplug_command("train", "--algo", "a3c", "--env", "CartPole-v1", "-n", "10000000", *QUIET, cwd=tmp_path)
    try:
        wait_for_training(process)
        time.sleep(6)  # the workers have started and pushed updates
        forkservers = [p for p in descendants(process.pid) if descendants(p)]
        workers = sorted(set().union(*(descendants(p) for p in forkservers)))
        assert workers, "no A3C worker found"
        os.kill(workers[0], signal.SIGKILL)
        out, err = process.communicate(timeout=120)
    finally:
        process.kill()
        process.wait()
    lines = err.strip().splitlines()
    assert process.returncode == 1 and len(lines) == 1, err
    assert lines[0].startswith("pgplug: error: A3C worker")
    assert f"was killed by signal {int(signal.SIGKILL)}" in lines[0]
    saved = tmp_path / "logs" / "a3c" / "CartPole-v1_1" / "CartPole-v1_interrupted.zip"
    assert f"training failed: model saved to {saved.relative_to(tmp_path)}" in out
    assert pgplug.load(saved).num_timesteps > 0


def test_checkpoints_write_their_vecnormalize_statistics_atomically_in_sb3s_format(tmp_path) -> None:
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    from pgplug.cli.run_folder import AtomicCheckpointCallback

    venv = VecNormalize(make_vec_env("CartPole-v1", n_envs=2, seed=0))
    model = A2C("MlpPolicy", venv, n_steps=5, seed=0)
    checkpoints = AtomicCheckpointCallback(save_freq=10, save_path=str(tmp_path), save_vecnormalize=True)
    model.learn(60, callback=checkpoints)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(
        [f"rl_model_{n}_steps.zip" for n in (20, 40, 60)]
        + [f"rl_model_vecnormalize_{n}_steps.pkl" for n in (20, 40, 60)]
    )
    restored = VecNormalize.load(str(tmp_path / "rl_model_vecnormalize_60_steps.pkl"), make_vec_env("CartPole-v1"))
    assert restored.obs_rms.count == venv.obs_rms.count


def test_a_plain_keyboard_interrupt_after_sigterm_exits_143() -> None:
    """A library that catches the ``Stopped`` of a SIGTERM and raises a plain ``KeyboardInterrupt`` (Ray's ``ray.get``
    can) still exits 128 + 15; a plain one with no signal received is Ctrl-C's 130."""
    from pgplug.cli.signals import exit_code, stop_signals_interrupt

    with stop_signals_interrupt():
        assert exit_code(KeyboardInterrupt()) == 130
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
        except KeyboardInterrupt:
            plain = KeyboardInterrupt()  # what the library raised instead
        assert exit_code(plain) == 143
