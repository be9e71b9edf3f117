"""Defaults that fit: torch threads from the policy, plain progress lines off a terminal, evaluation progress,
H.264 video, the human-normalised score over complete episodes only, and ``train``'s own curve.png."""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import gymnasium as gym
import imageio_ffmpeg
import numpy as np
import pytest
import torch
import yaml
from gymnasium import spaces
from rich.console import Console
from stable_baselines3.common.env_util import make_vec_env

import pgplug
from pgplug.cli import main
from pgplug.cli.progress import EvaluationProgress, RichProgressCallback
from pgplug.cli.threads import set_num_threads
from pgplug.interop import plotting
from pgplug.interop.evaluation import EpisodeTracker, EvaluationResult, evaluate, even_frame, write_h264
from pgplug.runtime import precision_choice, threads
from pgplug.runtime.precision_choice import choose_precision
from pgplug.runtime.threads import choose_num_threads, idle_cores


def plain_console() -> tuple[Console, io.StringIO]:
    """A console on a captured, non-terminal stdout (as under CI, Slurm or nohup)."""
    out = io.StringIO()
    return Console(file=out, width=200), out


# -- a. threads -----------------------------------------------------------------------------------


def test_threads_follow_the_policy_unless_asked(tmp_path: Path, monkeypatch) -> None:
    mlp = pgplug.A2C("MlpPolicy", "CartPole-v1", device="cpu").policy
    cnn = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3))
    assert choose_num_threads(-1, mlp)[0] == 1
    assert choose_num_threads(3, mlp) == (3, "--num-threads")
    monkeypatch.setattr(threads, "idle_cores", lambda: 2)  # a live reading could change between two calls
    assert choose_num_threads(-1, cnn)[0] == 2
    assert "CNN policy: the idle cores" in choose_num_threads(-1, cnn)[1]
    try:
        assert set_num_threads(2, mlp) == "torch threads: 2 (--num-threads; --num-threads N to change)"
        assert torch.get_num_threads() == 2
        line = set_num_threads(-1, mlp, worker_threads=3)
        assert (
            line.startswith("torch threads: 3 in each worker, 1 in the driver (MLP policy")
            and torch.get_num_threads() == 1
        )
    finally:
        torch.set_num_threads(1)


def snapshots(busy_fractions: list[float]) -> Iterator[dict[int, tuple[int, int]]]:
    """Two ``/proc/stat`` readings 100 ticks apart in which core ``i`` was busy ``busy_fractions[i]`` of the time."""
    yield {core: (1000, 5000) for core in range(len(busy_fractions))}
    yield {core: (1000 + round(100 * (1 - busy)), 5100) for core, busy in enumerate(busy_fractions)}


@pytest.mark.parametrize(
    ("busy", "expected"),
    [([0.0, 0.02], 2), ([1.0, 0.0], 1), ([0.6, 0.6], 1), ([1.0, 1.0], 1), ([0.9, 0.8, 0.9, 0.7, 0, 0, 0.1, 0], 5)],
)
def test_a_cnn_gets_the_cores_idle_now(monkeypatch, busy: list[float], expected: int) -> None:
    """The cores less those other processes keep busy now (the kernel's idle ticks over a short window, rounded),
    at least one."""
    readings = snapshots(busy)
    monkeypatch.setattr(threads, "cpu_times", lambda: next(readings))
    monkeypatch.setattr(threads, "IDLE_WINDOW_S", 0.0)
    monkeypatch.setattr(threads, "available_cpus", lambda: len(busy))
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: set(range(len(busy))))
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (9.0, 9.0, 9.0))  # a trailing load average is not read
    assert idle_cores() == expected


def test_the_kernel_says_how_busy_the_cores_are() -> None:
    """Where the kernel keeps /proc/stat (Linux), a reading between none and all of this process's cores; elsewhere
    none, and the load average stands in (tested below)."""
    busy = threads.busy_cores(0.05)
    if threads.cpu_times() is None:
        assert busy is None
    else:
        assert busy is not None and 0.0 <= busy <= len(os.sched_getaffinity(0)) + 1e-9


@pytest.mark.parametrize(
    ("cores", "load", "expected"), [(2, 0.3, 2), (2, 1.4, 1), (2, 9.8, 1), (8, 3.4, 5), (4, None, 4)]
)
def test_without_proc_stat_the_load_average_stands_in(
    monkeypatch, cores: int, load: float | None, expected: int
) -> None:
    """Without /proc/stat: the cores less the rounded 1-minute load average, at least one; without a load average
    either, every core."""

    def loadavg() -> tuple[float, float, float]:
        if load is None:
            raise OSError("no load average here")
        return (load, load, load)

    monkeypatch.setattr(threads, "cpu_times", lambda: None)
    monkeypatch.setattr(threads, "available_cpus", lambda: cores)
    monkeypatch.setattr(threads.os, "getloadavg", loadavg)
    assert idle_cores() == expected
    cnn = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3))
    assert choose_num_threads(-1, cnn) == (
        expected,
        f"CNN policy: the idle cores, {expected} of {cores} at the current load",
    )


@pytest.mark.parametrize(("idle", "learners", "each"), [(2, 1, 2), (2, 2, 1), (8, 2, 4), (8, 3, 2), (1, 4, 1)])
def test_cnn_learners_side_by_side_share_the_idle_cores(monkeypatch, idle: int, learners: int, each: int) -> None:
    """A3C's workers on one machine: learners × threads fits the idle cores, one thread at least."""
    monkeypatch.setattr(threads, "idle_cores", lambda: idle)
    cnn = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3))
    assert choose_num_threads(-1, cnn, learners=learners)[0] == each
    assert choose_num_threads(-1, torch.nn.Linear(2, 2), learners=learners)[0] == 1  # an MLP: one thread


def test_a3c_workers_get_their_share_of_the_cores(monkeypatch) -> None:
    """A3C chooses its workers' threads: one for an MLP, the idle cores shared for a CNN; a worker process enters
    with its spec's count, and learn() puts the choice into the spec."""
    monkeypatch.setattr(threads, "idle_cores", lambda: 4)
    mlp = pgplug.A3C("MlpPolicy", "CartPole-v1", n_workers=1, backend="serial", device="cpu")
    mlp.n_workers = 2  # the choice reads n_workers; the serial backend would run only one
    assert mlp.worker_threads() == 1
    cnn_policy = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3))
    monkeypatch.setattr(mlp, "policy", cnn_policy)
    assert mlp.worker_threads() == 2
    mlp.n_workers = 3
    assert mlp.worker_threads() == 1


def test_a3c_learn_sends_the_worker_threads_and_a_worker_enters_with_them(monkeypatch) -> None:
    from pgplug.plugins.a3c import algorithm
    from pgplug.plugins.a3c.worker import WorkerSpec

    specs: list[WorkerSpec] = []

    class Recorded(WorkerSpec):
        def __init__(self, **fields: object) -> None:
            super().__init__(**fields)
            specs.append(self)

    monkeypatch.setattr(algorithm, "WorkerSpec", Recorded)
    model = pgplug.A3C("MlpPolicy", "CartPole-v1", n_workers=1, backend="serial", t_max=5, device="cpu", seed=0)
    monkeypatch.setattr(model, "worker_threads", lambda: 3)
    model.learn(10)
    assert [spec.threads for spec in specs] == [3]
    try:
        specs[0].enter_process(0)
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(1)


# -- a2. precision ---------------------------------------------------------------------------------


def image_policy(recurrent: bool = False) -> Any:
    from stable_baselines3.common.policies import ActorCriticCnnPolicy

    image, actions = spaces.Box(0, 255, (4, 84, 84), np.uint8), spaces.Discrete(6)
    if recurrent:
        from sb3_contrib.common.recurrent.policies import RecurrentActorCriticCnnPolicy

        return RecurrentActorCriticCnnPolicy(image, actions, lambda _: 7e-4)
    return ActorCriticCnnPolicy(image, actions, lambda _: 7e-4)


def test_bf16_is_chosen_only_for_a_cnn_on_a_cpu_that_computes_it(monkeypatch) -> None:
    mlp = pgplug.A2C("MlpPolicy", "CartPole-v1", device="cpu").policy
    cnn = image_policy()
    monkeypatch.setattr(precision_choice, "native_bf16", lambda: True)
    assert choose_precision(cnn, fast=True) == ("bf16", "CNN policy on a CPU with bfloat16 instructions")
    assert choose_precision(mlp, fast=True) == ("fp32", "not a CNN policy")
    assert choose_precision(cnn, fast=False) == ("fp32", "the speed paths are off")
    assert choose_precision(image_policy(recurrent=True), fast=True)[0] == "fp32"
    monkeypatch.setattr(precision_choice, "native_bf16", lambda: False)
    assert choose_precision(cnn, fast=True)[0] == "fp32"


PONG_TRAIN = ["train", "--algo", "a2c", "--env", "PongNoFrameskip-v4", "-n", "32", "--seed", "0", "--no-progress"]
PONG_TRAIN += ["--eval-freq", "-1", "--n-eval-episodes", "0", "--hyperparams", "n_envs=2"]


@pytest.mark.parametrize(
    ("native", "flag", "expected", "line"),
    [
        (True, [], "bf16", "precision: bf16 (CNN policy on a CPU with bfloat16 instructions"),
        (False, [], "fp32", "precision: fp32 (this CPU has no bfloat16 instructions"),
        (True, ["--precision", "fp32"], "fp32", None),
    ],
)
def test_train_chooses_the_precision_of_a_new_model_and_says_it(
    tmp_path: Path, capsys, monkeypatch, native: bool, flag: list[str], expected: str, line: str | None
) -> None:
    monkeypatch.setattr(precision_choice, "native_bf16", lambda: native)
    assert main([*PONG_TRAIN, *flag, "-f", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert (line in out) if line else "precision:" not in out
    run_dir = tmp_path / "a2c" / "PongNoFrameskip-v4_1"
    assert yaml.safe_load((run_dir / "config.yml").read_text()).get("precision", "fp32") == expected
    assert pgplug.A2C.load(run_dir / "PongNoFrameskip-v4.zip", device="cpu").precision == expected


# -- b. plain progress lines ------------------------------------------------------------------------


def test_training_progress_is_plain_lines_when_stdout_is_not_a_terminal() -> None:
    console, out = plain_console()
    evaluation = SimpleNamespace(evaluations_timesteps=[64], last_mean_reward=21.5)
    progress = RichProgressCallback(console, evaluation=evaluation, plain_interval=0.0)
    model = pgplug.A2C("MlpPolicy", "CartPole-v1", n_steps=8, seed=0, device="cpu")
    model.learn(256, callback=progress)
    lines = out.getvalue().splitlines()
    assert len(lines) >= 2 and "\x1b[" not in out.getvalue()  # no escape codes, no redrawn display
    pattern = r"^steps [\d,]+/256 \(\d+%\)  [\d,]+ steps/s  reward (–|[\d.]+)  eval 21\.5 at 64  \d+ s$"
    assert all(re.match(pattern, line) for line in lines), lines
    assert lines[-1].startswith("steps 256/256 (100%)")


def test_evaluation_progress_prints_episodes_done_and_the_last_return() -> None:
    console, out = plain_console()
    with EvaluationProgress(3, console) as progress:  # 10 s between lines: only the last is due
        for done in (1, 2, 3):
            progress.episode(done, 10.0 * done, truncated=done == 3)
    assert out.getvalue() == "evaluation: 3/3 episodes, last return 30 (truncated)\n"
    console, out = plain_console()
    with EvaluationProgress(2, console, plain_interval=0.0) as progress:
        model = pgplug.A2C("MlpPolicy", "CartPole-v1", seed=0, device="cpu")
        evaluate(model, "CartPole-v1", n_episodes=2, seed=0, on_episode=progress.episode)
    lines = out.getvalue().splitlines()
    assert [line.split(",")[0] for line in lines] == ["evaluation: 1/2 episodes", "evaluation: 2/2 episodes"]


# -- d. H.264 video ---------------------------------------------------------------------------------


def probe(path: Path) -> dict:
    reader = imageio_ffmpeg.read_frames(str(path))
    try:
        return next(reader)
    finally:
        reader.close()


def test_videos_are_h264_yuv420p_with_even_frame_sizes(tmp_path: Path) -> None:
    assert even_frame(np.zeros((25, 33, 3), dtype=np.uint8)).shape == (26, 34, 3)
    frames = [np.full((25, 33, 3), 10 * i, dtype=np.uint8) for i in range(5)]
    write_h264(tmp_path / "odd.mp4", frames, fps=10)
    meta = probe(tmp_path / "odd.mp4")
    assert meta["codec"].startswith("h264") and meta["pix_fmt"].startswith("yuv420p") and meta["size"] == (34, 26)
    assert imageio_ffmpeg.count_frames_and_secs(str(tmp_path / "odd.mp4"))[0] == 5


# -- e. human-normalised score over complete episodes -------------------------------------------------


class CutEnv(gym.Env):
    """Reward 1 a step; odd episodes end after 3 steps, even ones run into a 5-step TimeLimit."""

    observation_space = spaces.Box(0.0, 1.0, (1,), dtype=np.float32)
    action_space = spaces.Discrete(2)

    def __init__(self) -> None:
        self.episode, self.t = 0, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.episode, self.t = self.episode + 1, 0
        return np.zeros(1, dtype=np.float32), {}

    def step(self, action):
        self.t += 1
        return np.zeros(1, dtype=np.float32), 1.0, self.episode % 2 == 1 and self.t >= 3, False, {}


def test_human_normalised_score_counts_complete_episodes_only() -> None:
    env = make_vec_env(lambda: gym.wrappers.TimeLimit(CutEnv(), 5), n_envs=1)
    model = pgplug.A2C("MlpPolicy", env, seed=0, device="cpu")
    result = evaluate(model, env, n_episodes=4, env_id="PongNoFrameskip-v4")
    assert result.returns == [3.0, 5.0, 3.0, 5.0] and result.truncated == [False, True, False, True]
    assert result.mean == 4.0 and result.complete_returns == [3.0, 3.0]
    assert result.human_normalized == pytest.approx(100 * (3.0 + 20.7) / 30.0)
    assert result.human_normalized_line() == "human-normalised score over 2 complete episodes: 79.0%"
    assert EvaluationResult([1.0], [1], 1.0, 0.0, env_id="CartPole-v1").human_normalized_line() is None


def test_episode_tracker_counts_as_sb3_does() -> None:
    seen = []
    tracker = EpisodeTracker(lambda done, value, cut: seen.append((done, value, cut)))
    base = {"is_monitor_wrapped": True, "i": 0, "current_rewards": [7.0]}
    tracker({**base, "done": True, "info": {}}, {})  # a life lost: no "episode" entry, not counted
    tracker({**base, "done": False, "info": {"episode": {"r": 1.0}}}, {})
    tracker({**base, "done": True, "info": {"episode": {"r": 2.0}, "TimeLimit.truncated": True}}, {})
    tracker({**base, "done": True, "is_monitor_wrapped": False, "info": {}}, {})
    assert seen == [(1, 2.0, True), (2, 7.0, False)] and tracker.truncated == [True, False]


# -- train: header, progress and curve.png ------------------------------------------------------------


TRAIN = ["train", "--algo", "a2c", "--env", "CartPole-v1", "-n", "160", "--seed", "1", "--n-eval-episodes", "2"]
TRAIN += ["--eval-freq", "80", "--eval-episodes", "1", "--hyperparams", "n_envs=2"]


def test_train_says_its_threads_and_draws_its_curve(tmp_path: Path, capsys) -> None:
    assert main([*TRAIN, "-f", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "torch threads: 1 (MLP policy: one thread is fastest for small matrices" in out
    assert "precision:" not in out  # an MLP trains in fp32 without a word
    assert "evaluation: 2/2 episodes, last return" in out  # captured stdout: plain lines
    assert re.search(r"^steps 160/160 \(100%\)", out, re.MULTILINE)
    curve = tmp_path / "a2c" / "CartPole-v1_1" / "curve.png"
    assert curve.read_bytes()[:4] == b"\x89PNG" and "│ curve " in out


def test_a_failing_curve_is_a_warning_not_a_failed_run(tmp_path: Path, capsys, monkeypatch) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("no fonts\nsecond line")

    monkeypatch.setattr(plotting, "draw", broken)
    assert main([*TRAIN, "-f", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    run = tmp_path / "a2c" / "CartPole-v1_1"
    assert f"pgplug: warning: no learning curve for {run}: no fonts\n" in captured.err
    assert (run / "CartPole-v1.zip").is_file() and not (run / "curve.png").exists()
