"""rl-baselines3-zoo's own ``a2c.yml`` (``tests/data/zoo_a2c.yml``, verbatim) trains unchanged through ``pgplug train``.

Every entry whose env is installed runs a few updates with ``-conf tests/data/zoo_a2c.yml`` and only ``-n`` changed,
and the run's ``config.yml`` and model show that the entry's settings were applied: ``n_envs``, ``normalize``,
``use_sde``, ``gae_lambda`` (as the ``gae`` estimator), ``policy_kwargs`` strings such as
``"dict(log_std_init=-2, ortho_init=False)"`` and ``"dict(optimizer_class=RMSpropTFLike, ...)"``.
"""

from __future__ import annotations

import pickle
import re
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import yaml
from stable_baselines3.common.sb2_compat.rmsprop_tf_like import RMSpropTFLike

from pgplug.cli import main
from pgplug.interop import compat
from pgplug.interop import config as cfg

ZOO_A2C = Path(__file__).parent / "data" / "zoo_a2c.yml"
ENTRIES = cfg.load_config_file(ZOO_A2C)
#: The entries whose envs gymnasium, ale-py and Box2D provide (``atari`` trained on Pong).
INSTALLED = {
    "CartPole-v1": "CartPole-v1",
    "LunarLander-v3": "LunarLander-v3",
    "MountainCar-v0": "MountainCar-v0",
    "Acrobot-v1": "Acrobot-v1",
    "Pendulum-v1": "Pendulum-v1",
    "LunarLanderContinuous-v3": "LunarLanderContinuous-v3",
    "MountainCarContinuous-v0": "MountainCarContinuous-v0",
    "BipedalWalker-v3": "BipedalWalker-v3",
    "BipedalWalkerHardcore-v3": "BipedalWalkerHardcore-v3",
    "atari": "PongNoFrameskip-v4",
}
#: The entries for pybullet's and MuJoCo's envs, which pgplug does not install.
NOT_INSTALLED = sorted(set(ENTRIES) - set(INSTALLED) - {cfg.DEFAULT_ENTRY})
QUIET = ["--no-progress", "--eval-freq", "-1", "--n-eval-episodes", "0", "--seed", "0"]


def train(env_id: str, log_folder: Path, *extra: str) -> int:
    return main(
        ["train", "--algo", "a2c", "--env", env_id, "-conf", str(ZOO_A2C), "-f", str(log_folder), *QUIET, *extra]
    )


def test_the_copy_lists_the_entries_this_test_covers():
    assert set(INSTALLED) | set(NOT_INSTALLED) | {cfg.DEFAULT_ENTRY} == set(ENTRIES)
    pybullet = ["HalfCheetahBulletEnv-v0", "Walker2DBulletEnv-v0", "AntBulletEnv-v0", "HopperBulletEnv-v0"]
    mujoco = ["HalfCheetah-v4", "Ant-v4", "Hopper-v4", "Walker2d-v4", "Humanoid-v4", "Swimmer-v4"]
    assert sorted([*pybullet, "ReacherBulletEnv-v0", *mujoco]) == NOT_INSTALLED


@pytest.mark.parametrize("entry", [pytest.param(e, marks=pytest.mark.slow) if e == "atari" else e for e in INSTALLED])
def test_zoo_entry_trains_unchanged_with_its_settings_applied(entry, tmp_path):
    hyperparams = ENTRIES[entry]
    env_id = INSTALLED[entry]
    n_envs, n_steps = hyperparams["n_envs"], hyperparams.get("n_steps", 5)
    assert train(env_id, tmp_path, "-n", str(2 * n_envs * n_steps)) == 0  # two updates
    (run_dir,) = (tmp_path / "a2c").iterdir()
    saved = yaml.safe_load((run_dir / "config.yml").read_text())
    for key, value in hyperparams.items():  # the entry as written: nothing dropped or rewritten
        assert saved[key] == (value if key != "n_timesteps" else 2 * n_envs * n_steps), key

    model = compat.load(next(run_dir.glob("*.zip")), algo="a2c")
    assert model.n_envs == n_envs and model.n_steps == n_steps and model.num_timesteps == 2 * n_envs * n_steps
    assert model.use_sde is hyperparams.get("use_sde", False)
    plain = ("gamma", "ent_coef", "vf_coef", "max_grad_norm", "normalize_advantage", "sde_sample_freq")
    for key in set(plain) & set(hyperparams):  # the algorithm's own settings, as the model holds them
        assert getattr(model, key) == hyperparams[key], key
    if str(hyperparams.get("learning_rate", "")).startswith("lin_"):  # the schedule from its start down to 0
        start = float(hyperparams["learning_rate"].removeprefix("lin_"))
        assert model.lr_schedule(1.0) == pytest.approx(start) and model.lr_schedule(0.5) == pytest.approx(start / 2)
    assert (run_dir / "vecnormalize.pkl").is_file() is bool(hyperparams.get("normalize"))
    if "gae_lambda" in hyperparams:
        assert model.estimator.name == "gae" and model.estimator.params()["gae_lambda"] == hyperparams["gae_lambda"]
    policy_kwargs = cfg.resolve_policy_kwargs(hyperparams.get("policy_kwargs"))
    if "log_std_init" in policy_kwargs:
        assert np.allclose(model.policy.log_std.detach().numpy(), policy_kwargs["log_std_init"], atol=0.05)
    if "ortho_init" in policy_kwargs:
        assert model.policy.ortho_init is policy_kwargs["ortho_init"]
    if policy_kwargs.get("optimizer_class") is RMSpropTFLike:
        assert isinstance(model.policy.optimizer, RMSpropTFLike)
        assert model.policy.optimizer.defaults["eps"] == policy_kwargs["optimizer_kwargs"]["eps"] == 1e-5
    if entry == "atari":
        assert model.observation_space.shape == (4, 84, 84)  # AtariWrapper and frame_stack: 4


@pytest.mark.parametrize("entry", ["HalfCheetahBulletEnv-v0", "Hopper-v4"])
def test_entries_of_missing_envs_fail_in_one_line(entry, tmp_path, capsys):
    assert train(entry, tmp_path) == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("pgplug: error: ") and ("unknown env" in error or "MuJoCo is not installed" in error)
    assert not (tmp_path / "a2c").exists() or not any((tmp_path / "a2c").iterdir())


def as_zoo_run(run_dir: Path, zoo_run: Path) -> Path:
    """pgplug's run folder laid out as the zoo's: the zip in the run folder, ``config.yml`` (an ``OrderedDict``, as
    the zoo dumps it) and ``vecnormalize.pkl`` in ``<run>/<env>/``."""
    files = zoo_run / "MountainCar-v0"
    files.mkdir(parents=True)
    (zoo_run / "MountainCar-v0.zip").write_bytes((run_dir / "MountainCar-v0.zip").read_bytes())
    (files / "vecnormalize.pkl").write_bytes((run_dir / "vecnormalize.pkl").read_bytes())
    config = yaml.safe_load((run_dir / "config.yml").read_text())
    (files / "config.yml").write_text(yaml.dump(OrderedDict(sorted(config.items()))))
    return files


@pytest.mark.parametrize("layout", ["pgplug", "zoo"])
def test_continuing_a_normalize_run_takes_its_statistics_and_config(layout, tmp_path, capsys):
    """``-i`` on a run of the zoo's MountainCar-v0 entry (``normalize: true``, 16 envs) continues with 16 envs and
    the run's VecNormalize statistics, and says so; in pgplug's run folder and in the zoo's layout."""
    assert train("MountainCar-v0", tmp_path / "first", "-n", "160") == 0
    (first,) = (tmp_path / "first" / "a2c").iterdir()
    with open(first / "vecnormalize.pkl", "rb") as file:
        saved = pickle.load(file)  # written by this test's own run
    capsys.readouterr()
    first_zip = str(first / "MountainCar-v0.zip")
    if layout == "zoo":
        first = as_zoo_run(first, tmp_path / "zoo_run")
        first_zip = str(tmp_path / "zoo_run" / "MountainCar-v0.zip")
    second_args = ["-i", first_zip, "-f", str(tmp_path / "second"), "-n", "80", *QUIET]
    assert main(["train", "--algo", "a2c", "--env", "MountainCar-v0", *second_args]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"continuing from {first_zip}: VecNormalize statistics from {first / 'vecnormalize.pkl'}" in out
    assert f"n_envs=16 and normalize from {first / 'config.yml'}" in out
    (second,) = (tmp_path / "second" / "a2c").iterdir()
    assert compat.load(second / "MountainCar-v0.zip", algo="a2c").n_envs == 16
    with open(second / "vecnormalize.pkl", "rb") as file:
        continued = pickle.load(file)
    # The saved statistics went on: the 16 first observations and 80 steps' more on top of the first run's (a fresh
    # VecNormalize would count 96 from scratch), and their mean moved little.
    assert saved.obs_rms.count > 100
    assert continued.obs_rms.count == pytest.approx(saved.obs_rms.count + 16 + 80)
    assert np.allclose(continued.obs_rms.mean, saved.obs_rms.mean, atol=0.05)


def test_env_kwargs_from_config_and_flags_reach_training_evaluation_and_eval(tmp_path, capsys):
    """A config's ``env_kwargs`` is replaced by ``--env-kwargs`` (the zoo's rule), ``--eval-env-kwargs`` sets the
    evaluation envs', and ``pgplug eval`` builds its env with the run's recorded ``env_kwargs``."""
    config = tmp_path / "conf.yml"
    config.write_text('CartPole-v1:\n  n_envs: 2\n  env_kwargs: "dict(max_episode_steps=5)"\n')
    args = ["--env-kwargs", "max_episode_steps:9", "--eval-env-kwargs", "max_episode_steps:4", "--n-eval-episodes", "2"]
    args += ["-conf", str(config), "-f", str(tmp_path), "-n", "40", "--no-progress", "--eval-freq", "-1", "--seed", "0"]
    assert main(["train", "--algo", "a2c", "--env", "CartPole-v1", *args]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "mean reward │ 4.00 ± 0.00" in out  # the evaluation envs end after 4 steps
    (run_dir,) = (tmp_path / "a2c").iterdir()
    saved = yaml.safe_load((run_dir / "config.yml").read_text())
    assert saved["env_kwargs"] == {"max_episode_steps": 9} and saved["eval_env_kwargs"] == {"max_episode_steps": 4}
    lengths = [int(line.split(",")[1]) for line in (run_dir / "0.monitor.csv").read_text().splitlines()[2:]]
    assert lengths and max(lengths) <= 9 and 9 in lengths  # the flag's 9, not the config's 5
    assert main(["eval", str(run_dir / "CartPole-v1.zip"), "--episodes", "2"]) == 0
    assert re.findall(r"│\s+\d+\s+│\s+[-\d.]+\s+│\s+(\d+)\s+│", capsys.readouterr().out) == ["9", "9"]
