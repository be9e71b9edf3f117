"""pgplug's run folders in rl-baselines3-zoo's tools, and ``pgplug eval`` with the zoo's flags.

``pgplug train`` also writes the zoo's ``<run>/<env>/`` (``config.yml``, ``args.yml``, ``vecnormalize.pkl``,
``command.txt``), so ``python -m rl_zoo3.enjoy`` and ``rl_zoo3.record_video`` play a pgplug A2C run: CartPole, a
MountainCar run with VecNormalize, a few steps of Pong. The zoo's tools run as subprocesses, all at once (each
spends seconds importing). ``pgplug eval --algo --env -f --exp-id --load-*`` finds a run's model as the zoo's
``enjoy`` does, and plays a zoo PPO whose learning-rate schedule ran past its end.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import re
import shutil
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from stable_baselines3 import A2C, PPO
from stable_baselines3.common.vec_env import VecNormalize

from pgplug.cli import build_parser, main
from pgplug.cli.run_folder import find_run_files

QUIET = ["--no-progress", "--eval-freq", "-1", "--n-eval-episodes", "0", "--seed", "1"]
RUNS = {
    # env id → pgplug train's extra arguments (a2c's config: 8 envs of 5 steps for CartPole, 16 for Atari)
    "CartPole-v1": ["-n", "80", "--save-freq", "40", "--log-interval", "1", "--verbose", "1"],
    "MountainCar-v0": ["-n", "20", "-params", "normalize=true", "n_envs=2"],
    "PongNoFrameskip-v4": ["-n", "10", "-params", "n_envs=2"],
}


def zoo_utils() -> Any:
    """``rl_zoo3.utils``, without leaving on this process the patch rl_zoo3 makes to gymnasium as it is imported
    (its own ``TimeLimit`` in place of gymnasium's): tests after these would build their envs with it."""
    import gymnasium

    homes = (gymnasium.wrappers, gymnasium.wrappers.common, gymnasium.envs.registration)
    saved = [(home, vars(home).get("TimeLimit")) for home in homes]
    import rl_zoo3.utils

    for home, time_limit in saved:
        if time_limit is None:
            vars(home).pop("TimeLimit", None)
        else:
            home.TimeLimit = time_limit
    return rl_zoo3.utils


def zoo_linear_schedule(initial_value: float) -> Any:
    return zoo_utils().linear_schedule(initial_value)


def zoo_command(tool: str, env_id: str, logs: Path, *extra: str) -> list[str]:
    base = ["--algo", "a2c", "--env", env_id, "-f", str(logs), "--exp-id", "1", "-n", "50", "--no-render"]
    return [sys.executable, "-m", f"rl_zoo3.{tool}", *base, *extra]


@pytest.fixture(scope="module")
def logs(tmp_path_factory) -> Path:
    """Three pgplug A2C runs under ``<tmp>/logs/a2c/<env>_1``; the CartPole run's stdout in ``train_output.txt``."""
    root = tmp_path_factory.mktemp("zoo") / "logs"
    for env_id, extra in RUNS.items():
        output = io.StringIO()
        with contextlib.redirect_stdout(output):
            code = main(["train", "--algo", "a2c", "--env", env_id, "-f", str(root), *QUIET, *extra])
        assert code == 0, output.getvalue()
        (root / "a2c" / f"{env_id}_1" / "train_output.txt").write_text(output.getvalue())
    return root


@pytest.fixture(scope="module")
def zoo_runs(logs) -> dict[str, subprocess.CompletedProcess]:
    """The zoo's ``enjoy`` on each run and ``record_video`` on Pong, run side by side; their results by name."""
    commands = {env_id: zoo_command("enjoy", env_id, logs, "--deterministic") for env_id in RUNS}
    commands["CartPole-v1"] += ["-n", "600"]  # at least one whole episode (at most 500 steps)
    commands["record_video"] = zoo_command("record_video", "PongNoFrameskip-v4", logs, "-o", str(logs / "videos"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    running = {
        name: subprocess.Popen(command, cwd=logs, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name, command in commands.items()
    }
    results = {}
    for name, process in running.items():
        try:
            out, err = process.communicate(timeout=300)
        finally:
            process.kill()
        results[name] = subprocess.CompletedProcess(commands[name], process.returncode, out, err)
    return results


# -- the zoo's tools on pgplug's runs -------------------------------------------------------------


@pytest.mark.parametrize("env_id", RUNS)
def test_zoo_enjoy_plays_a_pgplug_run(logs, zoo_runs, env_id):
    result = zoo_runs[env_id]
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"Loading {logs}/a2c/{env_id}_1/{env_id}.zip" in result.stdout
    if env_id == "CartPole-v1":
        assert "Episode Reward:" in result.stdout and "Mean reward:" in result.stdout
    if env_id == "MountainCar-v0":  # create_test_env loads <run>/<env>/vecnormalize.pkl, or raises
        assert "Loading running average\nwith params: {'norm_obs': True, 'norm_reward': False}" in result.stdout
    if env_id == "PongNoFrameskip-v4":  # AtariWrapper (config.yml's env_wrapper) and 4 stacked frames
        assert "Stacking 4 frames" in result.stdout


def test_zoo_record_video_of_a_pgplug_atari_run(zoo_runs, logs):
    result = zoo_runs["record_video"]
    assert result.returncode == 0, result.stderr[-2000:]
    videos = list((logs / "videos").glob("final-model-a2c-PongNoFrameskip-v4-step-0-to-step-50.mp4"))
    assert len(videos) == 1 and videos[0].stat().st_size > 1000


def test_the_zoo_test_env_normalizes_with_the_saved_statistics(logs):
    """What ``enjoy`` builds from ``<run>/<env>/``: the VecNormalize statistics pgplug saved, frozen."""
    params = logs / "a2c" / "MountainCar-v0_1" / "MountainCar-v0"
    zoo = zoo_utils()
    hyperparams, stats_path = zoo.get_saved_hyperparams(str(params), test_mode=True)
    env = zoo.create_test_env("MountainCar-v0", stats_path=stats_path, should_render=False, hyperparams=hyperparams)
    saved = pickle.loads((logs / "a2c" / "MountainCar-v0_1" / "vecnormalize.pkl").read_bytes())
    try:
        assert isinstance(env, VecNormalize) and not env.training and not env.norm_reward
        assert saved.obs_rms.count > 1 and np.array_equal(env.obs_rms.mean, saved.obs_rms.mean)
    finally:
        env.close()


def test_the_zoo_layout_beside_pgplugs(logs):
    run = logs / "a2c" / "CartPole-v1_1"
    params = run / "CartPole-v1"
    zoo_config = yaml.load((params / "config.yml").read_text(), Loader=yaml.UnsafeLoader)
    zoo_args = yaml.load((params / "args.yml").read_text(), Loader=yaml.UnsafeLoader)
    assert isinstance(zoo_config, OrderedDict) and list(zoo_config) == sorted(zoo_config)
    assert zoo_config["n_envs"] == 8 and zoo_config["policy"] == "MlpPolicy" and "seed" not in zoo_config
    assert isinstance(zoo_args, OrderedDict) and list(zoo_args) == sorted(zoo_args)
    assert (zoo_args["algo"], zoo_args["env"], zoo_args["env_kwargs"], zoo_args["seed"]) == (
        "a2c",
        "CartPole-v1",
        None,
        1,
    )
    assert (params / "command.txt").read_text() == " ".join(sys.orig_argv)  # as the zoo records it
    assert yaml.safe_load((run / "config.yml").read_text())["env"] == "CartPole-v1"  # pgplug's own, plain YAML
    pong = yaml.load((logs / "a2c/PongNoFrameskip-v4_1/PongNoFrameskip-v4/config.yml").read_text(), yaml.UnsafeLoader)
    assert pong["env_wrapper"] == ["stable_baselines3.common.atari_wrappers.AtariWrapper"] and pong["frame_stack"] == 4
    assert A2C.load(run / "CartPole-v1.zip", device="cpu").n_steps == 5  # how the zoo's ALGOS["a2c"] opens it


def test_find_run_files_reads_the_zoo_layout_alone(logs, tmp_path):
    run = tmp_path / "MountainCar-v0_1"
    shutil.copytree(logs / "a2c" / "MountainCar-v0_1", run)
    both = find_run_files(run / "MountainCar-v0.zip")
    assert both.vecnormalize == run / "vecnormalize.pkl" and both.config_path == run / "config.yml"
    (run / "config.yml").unlink()
    (run / "vecnormalize.pkl").unlink()
    zoo = find_run_files(run / "MountainCar-v0.zip")
    assert zoo.vecnormalize == run / "MountainCar-v0" / "vecnormalize.pkl"
    assert (zoo.env_id, zoo.config["normalize"], zoo.config["n_envs"]) == ("MountainCar-v0", True, 2)


def test_train_log_interval_is_sb3s(logs):
    """``--log-interval 1 --verbose 1``: the logger's table after each of the 2 updates (A2C's default: every 100)."""
    output = (logs / "a2c" / "CartPole-v1_1" / "train_output.txt").read_text()
    assert output.count("total_timesteps") == 2


# -- pgplug eval with the zoo's flags ---------------------------------------------------------------


def test_eval_finds_the_latest_run_and_its_checkpoints(logs, capsys):
    find = ["eval", "--algo", "a2c", "--env", "CartPole-v1", "-f", str(logs), "-P"]
    assert main([*find, "--episodes", "1"]) == 0
    assert f"model: {logs}/a2c/CartPole-v1_1/CartPole-v1.zip (a2c, A2C)" in capsys.readouterr().out
    assert main([*find, "--exp-id", "1", "--load-last-checkpoint", "-n", "60"]) == 0
    out = capsys.readouterr().out
    assert f"model: {logs}/a2c/CartPole-v1_1/rl_model_80_steps.zip" in out and "│ episodes    │" in out


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--exp-id", "3"], "no run {logs}/a2c/CartPole-v1_3; --exp-id of the a2c runs on CartPole-v1 there: 1"),
        (["--load-best"], "no best model in {logs}/a2c/CartPole-v1_1 (best_model.zip is kept by the periodic"),
        (["--load-checkpoint", "50"], "no checkpoint 50 in {logs}/a2c/CartPole-v1_1; checkpoints there: 40, 80"),
        (["--env", "Acrobot-v1"], "no run of a2c on Acrobot-v1 in {logs}/a2c (no Acrobot-v1_<N> folder there)"),
        (["x.zip"], "-f/--folder finds a run's model; it cannot be combined with MODEL.zip (x.zip)"),
    ],
)
def test_eval_names_what_is_not_in_the_log_folder(logs, capsys, flags, message):
    assert main(["eval", "--algo", "a2c", "--env", "CartPole-v1", "-f", str(logs), *flags]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"pgplug: error: {message.format(logs=logs)}") and err.count("\n") == 1


def test_progress_flag_on_every_command_that_runs_a_policy():
    parser, _ = build_parser()
    for command in (
        ["train", "--algo", "a2c", "--env", "CartPole-v1"],
        ["eval", "m.zip"],
        ["bc", "--expert", "m.zip", "--env", "CartPole-v1", "-n", "10"],
    ):
        assert parser.parse_known_args([*command, "-P"])[0].progress is True


# -- a zoo model trained past the end of its schedule ----------------------------------------------


def closure_linear_schedule(initial_value: float):
    """rl_zoo3's ``linear_schedule`` before 2.4: a closure, which SB3 pickles by value (cloudpickle)."""

    def schedule(progress_remaining: float) -> float:
        return progress_remaining * initial_value

    return schedule


@pytest.mark.parametrize("schedule", [zoo_linear_schedule, closure_linear_schedule])
@pytest.mark.parametrize("trust", [False, True])
def test_eval_plays_a_zoo_ppo_trained_past_its_schedules_end(tmp_path, capsys, schedule, trust):
    model = PPO(
        "MlpPolicy",
        "CartPole-v1",
        n_steps=32,
        batch_size=32,
        n_epochs=1,
        learning_rate=schedule(1e-3),
        clip_range=schedule(0.2),
        seed=0,
        device="cpu",
    )
    model.learn(40)  # 64 steps: the last update ran at progress 1 - 64/40 < 0, a negative learning rate
    assert model.policy.optimizer.param_groups[0]["lr"] < 0
    model.save(tmp_path / "CartPole-v1.zip")
    trust_flag = ["--trust-file"] if trust else []
    assert (
        main(["eval", str(tmp_path / "CartPole-v1.zip"), "--env", "CartPole-v1", "--episodes", "1", *trust_flag]) == 0
    )
    assert "(ppo, PPO)" in capsys.readouterr().out


def test_a_reinforce_zip_opens_with_sb3s_a2c_for_the_zoo(tmp_path):
    """The zoo has no REINFORCE: its runs play as ``--algo a2c`` (a link into the ``a2c`` folder, see docs/cli.md)."""
    args = ["train", "--algo", "reinforce", "--env", "CartPole-v1", "-n", "50", "-f", str(tmp_path), *QUIET]
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(args) == 0
    model = A2C.load(tmp_path / "reinforce" / "CartPole-v1_1" / "CartPole-v1.zip", device="cpu")
    action, _ = model.predict(np.zeros(4, dtype=np.float32), deterministic=True)
    assert model.action_space.contains(int(action))


def test_the_zoo_plot_scripts_read_a_pgplug_run(tmp_path):
    """rl_zoo3's ``plot_train`` (Monitor files) and ``all_plots`` (``evaluations.npz``) on a pgplug run folder."""
    logs = tmp_path / "logs"
    train = ["train", "--algo", "a2c", "--env", "CartPole-v1", "-f", str(logs), "-n", "2000", "--no-progress"]
    assert main([*train, "--eval-freq", "1000", "--n-eval-episodes", "2", "--seed", "1"]) == 0
    env = {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}
    zoo = [sys.executable, "-m"]
    where = ["-a", "a2c", "-e", "CartPole-v1", "-f", str(logs)]
    plot_train = subprocess.run(
        [*zoo, "rl_zoo3.plots.plot_train", *where], env=env, capture_output=True, text=True, timeout=300
    )
    assert plot_train.returncode == 0, plot_train.stderr
    all_plots = subprocess.run(
        [*zoo, "rl_zoo3.plots.all_plots", *where, "-o", str(tmp_path / "results"), "--no-display"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert all_plots.returncode == 0, all_plots.stderr
    assert re.search(r"\|CartPole-v1 \|[0-9.]+ \+/- [0-9.]+\s*\|", all_plots.stdout), all_plots.stdout
    assert (tmp_path / "results.pkl").is_file()
