"""``pgplug eval`` (alias ``enjoy``): any loadable zip played on an env built as pgplug trains, returns in a table.

Returns printed by the command are checked against :func:`pgplug.interop.evaluation.evaluate` on an env built
and seeded the same way. One run goes through a real subprocess; the rest call :func:`pgplug.cli.main`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import cv2
import pytest
import stable_baselines3 as sb3
import yaml
from stable_baselines3.common.env_util import make_vec_env

import pgplug
from pgplug.cli import main
from pgplug.interop.compat import load_vecnormalize
from pgplug.interop.evaluation import evaluate
from pgplug.runtime.envs import EnvSpec

QUIET_TRAIN = ["--no-progress", "--eval-freq", "-1", "--n-eval-episodes", "0", "--seed", "0"]
ROW = re.compile(r"│\s+(\d+) │\s+(-?[\d.]+) │\s+(\d+) │")


def pgplug_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "pgplug", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def episode_rows(out: str) -> list[tuple[float, int]]:
    return [(float(ret), int(length)) for _, ret, length in ROW.findall(out)]


def expected_rows(model, env) -> list[tuple[float, int]]:
    result = evaluate(model, env, n_episodes=3)
    return [(round(r, 2), n) for r, n in zip(result.returns, result.lengths, strict=True)]


@pytest.fixture(scope="module")
def expert_path() -> Path:
    from cartpole_expert import cartpole_expert_path

    return cartpole_expert_path()


@pytest.fixture(scope="module")
def a2c_run(tmp_path_factory) -> Path:
    """A pgplug A2C run folder from ``pgplug train`` (1,000 steps): the model and its config.yml."""
    root = tmp_path_factory.mktemp("runs")
    args = ["train", "--algo", "a2c", "--env", "CartPole-v1", "-n", "1000", "-f", str(root), *QUIET_TRAIN]
    assert main(args) == 0
    return root / "a2c" / "CartPole-v1_1"


# -- evaluating models of every kind ---------------------------------------------------------------


def test_eval_of_a_pgplug_run_takes_the_env_from_its_config_and_prints_each_episode(a2c_run, tmp_path):
    model_path = a2c_run / "CartPole-v1.zip"
    result = pgplug_cli("eval", str(model_path), "--episodes", "3", "--seed", "5", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"model: {model_path} (a2c, A2C)" in result.stdout
    assert "env: CartPole-v1, seed 5, deterministic, no VecNormalize" in result.stdout
    expected = evaluate(pgplug.load(model_path), make_vec_env("CartPole-v1", n_envs=1, seed=5), n_episodes=3)
    assert episode_rows(result.stdout) == [
        (round(r, 2), n) for r, n in zip(expected.returns, expected.lengths, strict=True)
    ]
    assert f"│ mean return │ {expected.mean:.2f} ± {expected.std:.2f} │" in result.stdout


def test_eval_of_an_sb3_ppo_zip(expert_path, capsys):
    assert main(["eval", str(expert_path), "--env", "CartPole-v1", "--episodes", "3", "--seed", "2"]) == 0
    out = capsys.readouterr().out
    assert f"model: {expert_path} (ppo, PPO)" in out
    expected = expected_rows(pgplug.load(expert_path), make_vec_env("CartPole-v1", n_envs=1, seed=2))
    assert episode_rows(out) == expected and expected[0][0] >= 200  # the expert plays well


def test_enjoy_reads_the_zoo_run_layout(expert_path, tmp_path, capsys):
    """rl-baselines3-zoo saves ``<run>/<env>.zip`` with ``<run>/<env>/config.yml`` and ``args.yml`` (OrderedDicts)."""
    run = tmp_path / "ppo" / "CartPole-v1_1"
    (run / "CartPole-v1").mkdir(parents=True)
    shutil.copy(expert_path, run / "CartPole-v1.zip")
    config = OrderedDict([("n_envs", 8), ("normalize", False), ("policy", "MlpPolicy")])
    (run / "CartPole-v1" / "config.yml").write_text(yaml.dump(config))
    zoo_args = OrderedDict([("algo", "ppo"), ("env", "CartPole-v1"), ("env_kwargs", {"max_episode_steps": 50})])
    (run / "CartPole-v1" / "args.yml").write_text(yaml.dump(zoo_args))
    assert "!!python/object/apply:collections.OrderedDict" in (run / "CartPole-v1" / "args.yml").read_text()

    assert main(["enjoy", str(run / "CartPole-v1.zip"), "--episodes", "2"]) == 0
    out = capsys.readouterr().out
    assert "env: CartPole-v1, seed 0, deterministic" in out
    assert episode_rows(out) == [(50.0, 50), (50.0, 50)]  # args.yml's env_kwargs cut the episodes


def test_vecnormalize_statistics_come_from_the_run_folder(tmp_path, capsys):
    logs = tmp_path / "logs"
    args = ["train", "--algo", "a2c", "--env", "CartPole-v1", "-n", "400", "-f", str(logs), *QUIET_TRAIN]
    assert main([*args, "--hyperparams", "normalize=true"]) == 0
    run = logs / "a2c" / "CartPole-v1_1"
    capsys.readouterr()
    assert main(["eval", str(run / "CartPole-v1.zip"), "--episodes", "3"]) == 0
    out = capsys.readouterr().out
    assert f"VecNormalize {run / 'vecnormalize.pkl'}" in out
    env = load_vecnormalize(run / "vecnormalize.pkl", make_vec_env("CartPole-v1", n_envs=1, seed=0))
    env.training, env.norm_reward = False, False
    assert episode_rows(out) == expected_rows(pgplug.load(run / "CartPole-v1.zip"), env)

    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("CartPole-v1.zip", "config.yml"):
        shutil.copy(run / name, bare / name)
    assert main(["eval", str(bare / "CartPole-v1.zip"), "--episodes", "1"]) == 0
    assert "says normalize, but no vecnormalize.pkl was found" in capsys.readouterr().out
    assert main(["eval", str(bare / "CartPole-v1.zip"), "--vecnormalize", str(bare / "nope.pkl")]) == 1
    assert capsys.readouterr().err == f"pgplug: error: --vecnormalize {str(bare / 'nope.pkl')!r} is not a file\n"


@pytest.mark.filterwarnings("ignore:.*cannot be unpickled")
def test_a_gym_era_zip_and_its_gym_era_vecnormalize_beside_it(tmp_path, capsys):
    from fixtures_gym_era import build_gym_era_files

    build_gym_era_files(tmp_path)
    shutil.move(tmp_path / "gym_era_vecnormalize.pkl", tmp_path / "vecnormalize.pkl")
    assert main(["eval", str(tmp_path / "gym_era_ppo.zip"), "--env", "CartPole-v1", "--episodes", "3"]) == 0
    out = capsys.readouterr().out
    assert "(ppo, PPO)" in out and f"VecNormalize {tmp_path / 'vecnormalize.pkl'}" in out
    env = load_vecnormalize(tmp_path / "vecnormalize.pkl", make_vec_env("CartPole-v1", n_envs=1, seed=0))
    env.training, env.norm_reward = False, False
    assert episode_rows(out) == expected_rows(pgplug.load(tmp_path / "gym_era_ppo.zip"), env)


def test_frame_stack_is_read_off_the_model_when_no_config_records_it(tmp_path, capsys):
    env = EnvSpec("CartPole-v1", frame_stack=3).make_vec_env()
    pgplug.A2C("MlpPolicy", env, seed=0, device="cpu").save(tmp_path / "stacked")
    assert main(["eval", str(tmp_path / "stacked.zip"), "--env", "CartPole-v1", "--episodes", "1"]) == 0
    assert "frame stack 3 (from the model's observation space)" in capsys.readouterr().out
    assert main(["eval", str(tmp_path / "stacked.zip"), "--env", "Acrobot-v1"]) == 1
    assert capsys.readouterr().err == (
        "pgplug: error: the model expects observations Box(12,) float32, but Acrobot-v1 (frame stack 2) gives "
        "Box(12,) float32 with other bounds: is --env right?\n"
    )
    assert main(["eval", str(tmp_path / "stacked.zip")]) == 1
    assert "no --env given and none recorded with" in capsys.readouterr().err


def test_atari_eval_gives_no_human_normalised_score_for_a_cut_episode_and_records_a_video(tmp_path, capsys):
    """An untrained CnnPolicy on Pong, one episode cut at 400 frames (100 agent steps)."""
    env = EnvSpec.for_env_id("PongNoFrameskip-v4").make_vec_env()
    pgplug.A2C("CnnPolicy", env, seed=0, device="cpu").save(tmp_path / "pong")
    env.close()
    videos = tmp_path / "videos"
    args = ["eval", str(tmp_path / "pong.zip"), "--env", "PongNoFrameskip-v4", "--episodes", "1"]
    args += ["--env-kwargs", "max_episode_steps=400", "--video-folder", str(videos), "--video-length", "20"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "env: PongNoFrameskip-v4, seed 0, stochastic, frame stack 4 (default)" in out
    ((_, length),) = episode_rows(out)
    assert length == 400
    assert "human-normalised score: none (no episode completed; all were cut by a step limit)" in out
    assert "torch threads: " in out and "evaluation: 1/1 episodes, last return" in out  # captured: plain lines
    (video,) = videos.glob("*.mp4")
    assert f"video: {video}" in out
    capture = cv2.VideoCapture(str(video))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 21  # the reset frame and 20 steps
    assert (capture.get(cv2.CAP_PROP_FRAME_WIDTH), capture.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (160, 210)


# -- broken and wrong files ---------------------------------------------------------------------


def flip_byte(source: Path, target: Path) -> Path:
    """A copy of ``source`` with one byte of the compressed policy weights changed (the CRC check fails)."""
    data = bytearray(source.read_bytes())
    offset = data.find(b"policy.pth") + 200
    data[offset] ^= 0xFF
    target.write_bytes(bytes(data))
    return target


@pytest.fixture(scope="module")
def dqn_zip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("dqn") / "dqn.zip"
    sb3.DQN("MlpPolicy", "CartPole-v1", buffer_size=100, device="cpu").save(path)
    return path


BAD_FILES = {
    "missing": (lambda src, tmp: tmp / "nothing.zip", [], r"no such model file: .*nothing\.zip"),
    "not a zip": (
        lambda src, tmp: (tmp / "notes.zip").write_text("hello") and tmp / "notes.zip",
        [],
        r".*notes\.zip is not a zip archive, so not an SB3/pgplug model file",
    ),
    "truncated": (
        lambda src, tmp: (tmp / "cut.zip").write_bytes(src.read_bytes()[:3000]) and tmp / "cut.zip",
        [],
        r".*cut\.zip is a truncated or corrupt zip archive \(.*\)",
    ),
    "corrupt": (lambda src, tmp: flip_byte(src, tmp / "flipped.zip"), [], r".*flipped\.zip is corrupt: .*"),
    "wrong algo": (
        lambda src, tmp: src,
        ["--algo", "a3c"],
        r".*ppo_cartpole\.zip was saved by ppo, so algo='a3c' cannot open it; valid here: ppo .*",
    ),
    "unknown algo": (lambda src, tmp: src, ["--algo", "trpo"], r"unknown algo 'trpo'; valid algos: a2c, a3c, .*"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_files_fail_in_one_line(case, expert_path, tmp_path, capsys):
    make, extra, message = BAD_FILES[case]
    path = make(expert_path, tmp_path)
    assert main(["eval", str(path), "--env", "CartPole-v1", *extra]) == 1
    err = capsys.readouterr().err
    assert re.fullmatch(f"pgplug: error: {message}\n", err), err


def test_an_off_policy_zip_fails_in_one_line_without_a_traceback(dqn_zip, tmp_path):
    result = pgplug_cli("enjoy", str(dqn_zip), "--env", "CartPole-v1", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith(
        f"pgplug: error: {dqn_zip} holds a stable_baselines3.dqn.policies.DQNPolicy policy, not an SB3 ActorCritic"
    )
    assert len(result.stderr.splitlines()) == 1 and result.stdout == ""
