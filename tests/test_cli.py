"""The ``pgplug`` command line: training runs end to end, and one-line errors for bad input.

A few runs go through a real subprocess (``python -m pgplug``, ~3 s of imports each); the error
cases call :func:`pgplug.cli.main` in-process, which is what the entry point runs.
"""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml
from rich.console import Console

from pgplug import __version__
from pgplug.cli import main
from pgplug.cli.progress import RichProgressCallback, format_value
from pgplug.contracts.registries import get_host
from pgplug.interop.config import builtin_config_path, load_config_file

FAST = ["--num-threads", "1", "--no-progress"]


def pgplug(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pgplug", *args], cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )


def only_run_dir(folder: Path) -> Path:
    (run_dir,) = [p for p in folder.iterdir() if p.is_dir()]
    return run_dir


# -- training runs -------------------------------------------------------------------------------


def test_train_reinforce_writes_a_loadable_model_and_its_config(tmp_path):
    from pgplug import REINFORCE

    result = pgplug(
        "train",
        "--algo",
        "reinforce",
        "--env",
        "CartPole-v1",
        "-n",
        "5000",
        "--seed",
        "0",
        "--n-eval-episodes",
        "2",
        *FAST,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    run_dir = tmp_path / "logs" / "reinforce" / "CartPole-v1_1"
    assert str(Path("logs/reinforce/CartPole-v1_1/CartPole-v1.zip")) in result.stdout
    assert "mean reward" in result.stdout
    config = yaml.safe_load((run_dir / "config.yml").read_text())
    entry = load_config_file(builtin_config_path("reinforce"))["CartPole-v1"]
    estimator = REINFORCE.resolve_estimator(entry["estimator"], entry.get("estimator_kwargs"))
    expected = {**entry, "n_timesteps": 5000, "seed": 0, "estimator_kwargs": estimator.params()}
    assert config == {**expected, "env": "CartPole-v1"}
    assert sorted(p.name for p in run_dir.glob("*.monitor.csv")) == [f"{i}.monitor.csv" for i in range(4)]
    model = REINFORCE.load(run_dir / "CartPole-v1.zip")
    assert model.num_timesteps >= 5000 and model.estimator.name == entry["estimator"]
    action, _ = model.predict(np.zeros(4, dtype=np.float32), deterministic=True)
    assert action in (0, 1)


def test_train_a2c_with_evaluations_checkpoints_then_continue(tmp_path):
    first = pgplug(
        "train", "--algo", "a2c", "--env", "CartPole-v1", "-n", "2000", "--seed", "1",
        "--eval-freq", "500", "--save-freq", "1000", "--n-eval-episodes", "2", *FAST, cwd=tmp_path,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    run_dir = tmp_path / "logs" / "a2c" / "CartPole-v1_1"
    files = {p.name for p in run_dir.iterdir()}
    expected = {"CartPole-v1.zip", "best_model.zip", "evaluations.npz", "config.yml"}
    assert expected | {"rl_model_1000_steps.zip", "rl_model_2000_steps.zip"} <= files
    # 8 envs: an evaluation every 500 // 8 = 62 calls of 8 steps, as the zoo counts.
    evaluations = np.load(run_dir / "evaluations.npz")
    np.testing.assert_array_equal(evaluations["timesteps"], [496, 992, 1488, 1984])
    # The results table names the best evaluation (the last model need not be the best) and its model.
    means = evaluations["results"].mean(axis=1)
    best = int(np.argmax(means))
    table = " ".join(first.stdout.split())
    assert f"best eval │ {means[best]:.2f} at {evaluations['timesteps'][best]:,} steps" in table
    assert "".join(first.stdout.split()).count("bestmodel│logs/a2c/CartPole-v1_1/best_model.zip│") == 1

    second = pgplug(
        "train", "--algo", "a2c", "--env", "CartPole-v1", "-n", "1000", "-i", str(run_dir / "CartPole-v1.zip"),
        "--eval-freq", "-1", "--n-eval-episodes", "0", "--hyperparams", "ent_coef=0.01", *FAST, cwd=tmp_path,
    )  # fmt: skip
    assert second.returncode == 0, second.stderr
    assert f"hyperparameters from {run_dir / 'config.yml'}" in second.stdout.replace("\n", "")
    from pgplug import A2C

    continued = A2C.load(tmp_path / "logs" / "a2c" / "CartPole-v1_2" / "CartPole-v1.zip")
    assert continued.num_timesteps == 3000  # 2000 carried over + 1000 (updates of 8 envs × 5 steps)
    assert continued.ent_coef == 0.01


def test_subprocess_error_is_one_line_without_traceback(tmp_path):
    result = pgplug("train", "--algo", "a2c", "--env", "CartPol-v1", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "pgplug: error: unknown env 'CartPol-v1'; did you mean: CartPole-v1, CartPole-v0, "
        "phys2d/CartPole-v1, phys2d/CartPole-v0?"
    ]
    assert not (tmp_path / "logs").exists()


# -- one-line errors -----------------------------------------------------------------------------

TRAIN = ["train", "--env", "CartPole-v1", "--no-progress"]


A2C = [*TRAIN, "--algo", "a2c"]
BAD_INPUTS = [
    (["train", "--algo", "nope", "--env", "CartPole-v1"], 1, "unknown algorithm 'nope'; valid algorithms: a2c"),
    ([*A2C, "--estimator", "nope"], 1, "unknown estimator 'nope'; valid estimators: baseline"),
    (
        [*A2C, "--hyperparams", "clip_range=0.2"],
        1,
        "unknown hyperparameter 'clip_range' for a2c; valid keys: allow_negative_ent_coef, callback, ent_coef",
    ),
    ([*A2C, "--hyperparams", "n_steps=-5"], 1, "n_steps must be a positive integer, got -5"),
    (
        [*A2C, "--estimator", "reward_to_go"],
        1,
        "estimator 'reward_to_go' needs complete episodes, which a2c cuts into rollouts; "
        "estimators that fit a2c: gae, nstep, td",
    ),
    ([*A2C, "--n-workers", "2"], 1, "--n-workers does not apply to a2c; algorithms with workers: "),
    (
        [*A2C, "--estimator", "gae", "--estimator-kwargs", "lam=0.9"],
        1,
        "bad estimator_kwargs {'lam': 0.9} for estimator 'gae'",
    ),
    ([*A2C, "-params", "policy_kwargs=dict(net_arch=[64])x"], 1, "policy_kwargs 'dict(net_arch=[64])x' is not a"),
    (
        [*A2C, "-params", "policy_kwargs=dict(net_arch=exec('1'))"],
        1,
        """policy_kwargs "dict(net_arch=exec('1'))": "exec('1')" is a call other than dict(...), which is not""",
    ),
    ([*A2C, "-params", "learning_rate=lin_fast"], 1, "learning_rate must be a number or a linear schedule"),
    # float32 overflows inside the optimizer step (torch's error there would be a traceback)
    ([*A2C, "-params", "learning_rate=1e40"], 1, "learning_rate must be a number between 0 and 3.4e+38"),
    ([*A2C, "-params", "learning_rate=-0.1"], 1, "learning_rate must be a number between 0 and 3.4e+38"),
    ([*A2C, "-i", "missing.zip"], 1, "--trained-agent 'missing.zip' is not a saved model (.zip file)"),
    ([*A2C, "-n", "-3"], 2, "argument -n/--n-timesteps: n_timesteps must be a whole number from 1 to 2**53, got -3"),
    (["train", "--algo", "a2c"], 2, "the following arguments are required: --env (see 'pgplug train --help')"),
    (["fly"], 2, "argument COMMAND: invalid choice: 'fly'"),
    (["list", "--plugin", "no_such_plugin_module"], 1, "plugin module 'no_such_plugin_module' "),
]


@pytest.mark.parametrize(("args", "code", "message"), BAD_INPUTS)
def test_bad_input_is_one_line_on_stderr(args, code, message, tmp_path, capsys, plugin_host):
    assert main([*args, "-f", str(tmp_path / "logs")] if args[0] == "train" else args) == code
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"pgplug: error: {message}")
    assert not list(tmp_path.glob("logs/*/*"))  # no run folder is left behind, even after building the env


# -- list, help, version, plugins ----------------------------------------------------------------

PLUGIN = '''
"""A throw-away plugin: one estimator, one CLI option and a hook that interrupts training."""
import pgplug
from pgplug.plugins.estimators import TD


class HalfTD(TD):
    """The TD advantage under another name (a test estimator)."""

    name = "half_td"


@pgplug.hookimpl
def pgplug_register_estimators(register):
    register(HalfTD)


@pgplug.hookimpl
def pgplug_addoption(parser, command):
    if command == "train":
        parser.add_argument("--half-td-note", help="an option a plugin added")


@pgplug.hookimpl
def pgplug_after_update(algorithm, metrics):
    if algorithm.num_timesteps >= 80:
        raise KeyboardInterrupt
'''


@pytest.fixture
def plugin_file(tmp_path: Path) -> Path:
    path = tmp_path / "half_td_plugin.py"
    path.write_text(textwrap.dedent(PLUGIN))
    return path


def test_list_shows_every_registered_name(capsys, plugin_host, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # one row per name, as in a wide terminal
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    names = get_host().algorithms.names() + get_host().estimators.names()
    assert names and all(f"│ {name} " in out for name in names)
    assert "built-in" in out and "estimators: gae, nstep, td" in out and "complete episodes" in out


def test_plugin_file_adds_estimator_and_option(plugin_file, capsys, plugin_host):
    assert main(["list", "--plugin", str(plugin_file)]) == 0
    out = capsys.readouterr().out
    assert "│ half_td " in out and "local file" in out
    assert main(["train", "--help", "--plugin", str(plugin_file)]) == 0
    assert "--half-td-note" in capsys.readouterr().out


def test_ctrl_c_saves_the_model(plugin_file, tmp_path, capsys, plugin_host):
    logs = tmp_path / "logs"
    args = ["train", "--algo", "a2c", "--env", "CartPole-v1", "--estimator", "half_td", "-n", "1000", "-f", str(logs)]
    assert main([*args, "--plugin", str(plugin_file), "--no-progress", "--eval-freq", "-1", "--seed", "0"]) == 130
    run_dir = only_run_dir(logs / "a2c")
    assert f"interrupted: model saved to {run_dir / 'CartPole-v1.zip'}" in capsys.readouterr().out.replace("\n", "")
    from pgplug import A2C

    model = A2C.load(run_dir / "CartPole-v1.zip")
    assert model.num_timesteps == 80 and model.estimator.name == "half_td"
    assert yaml.safe_load((run_dir / "config.yml").read_text())["estimator"] == "half_td"


def test_help_and_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"pgplug {__version__}"
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "train" in out and "list" in out


# -- progress display ----------------------------------------------------------------------------


def test_progress_shows_steps_reward_and_live_metrics():
    from pgplug import A2C

    model = A2C("MlpPolicy", "CartPole-v1", n_steps=5, seed=0)
    model.live_metrics = lambda: {"worker 0 steps/s": 1234, "policy lag": 1.5}
    buffer = io.StringIO()
    callback = RichProgressCallback(
        Console(file=buffer, width=120, force_terminal=True, color_system=None), refresh_interval=0.0
    )
    model.learn(300, callback=callback)
    out = buffer.getvalue()
    assert "300/300" in out and "steps/s" in out and "reward " in out
    assert "worker 0 steps/s  1,234" in out and "policy lag        1.5" in out
    buffer = io.StringIO()  # not a terminal: plain lines, with the live metrics too
    model.learn(300, callback=RichProgressCallback(Console(file=buffer, width=200), plain_interval=0.0))
    assert buffer.getvalue().splitlines()[-1].endswith("worker 0 steps/s=1,234  policy lag=1.5")


def test_format_value():
    assert format_value(1234) == "1,234"
    assert format_value(np.float32(0.123456)) == "0.1235"
    assert format_value([1, 2.5]) == "1 2.5"
    assert format_value({"a": 1}) == "a=1"
