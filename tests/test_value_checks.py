"""Every value checked before training, one line each: the constructor, the config reader and the command line
refuse the same bad values with the same words (the rules of :mod:`pgplug.validation`), and accept SB3's.

The command-line cases call :func:`pgplug.cli.main`, what the ``pgplug`` entry point runs; a few also go
through a real ``python -m pgplug`` subprocess. Each asserts a non-zero exit and exactly one stderr line,
``pgplug: error: ...``, naming the value. Cases refused before training leave no run folder behind.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import pgplug.validation as validation
from pgplug import A2C, A3C, REINFORCE
from pgplug.cli import main
from pgplug.contracts.estimator import Estimate, Estimator
from pgplug.errors import PgplugError, PgplugWarning
from pgplug.interop.config import parse_value, prepare
from pgplug.plugins.estimators import TD

#: An env id gymnasium does not know: a check that fires first proves the env was never built.
NO_ENV = "NoSuchEnv-v0"
TRAIN = ["train", "--env", "CartPole-v1", "-n", "16", "--no-progress", "--eval-freq", "-1", "--n-eval-episodes", "0"]
CUDA = torch.cuda.is_available()


def refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run ``pgplug argv``; assert a non-zero exit and exactly one stderr line, no traceback; return the line."""
    code = main(argv)
    err = capsys.readouterr().err
    assert code != 0
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("pgplug: error: "), err
    return lines[0].removeprefix("pgplug: error: ")


def train(algo: str, logs: Path, *args: str) -> list[str]:
    return [*TRAIN, "--algo", algo, "-f", str(logs), *args]


def no_run_folder(logs: Path) -> bool:
    return not list(logs.glob("*/*"))


# -- the same words from the constructor, the config reader and the command line ----------------

#: (algorithm, setting, its YAML text for ``-params``, the Python value, the one line both print)
SETTINGS = [
    ("a2c", "max_grad_norm", "-1", -1, "max_grad_norm must be a finite number > 0, or None for no clipping, got -1"),
    ("a2c", "max_grad_norm", "0", 0, "max_grad_norm must be a finite number > 0, or None for no clipping, got 0"),
    (
        "a2c",
        "max_grad_norm",
        "big",
        "big",
        "max_grad_norm must be a finite number > 0, or None for no clipping, got 'big'",
    ),
    (
        "a2c",
        "max_grad_norm",
        ".nan",
        math.nan,
        "max_grad_norm must be a finite number > 0, or None for no clipping, got nan",
    ),
    (
        "a2c",
        "ent_coef",
        "-5",
        -5,
        "ent_coef must be ≥ 0 (a negative one punishes exploration; pass allow_negative_ent_coef=true to mean it), "
        "got -5",
    ),
    ("a2c", "ent_coef", "abc", "abc", "ent_coef must be a finite number, got 'abc'"),
    ("a2c", "ent_coef", ".inf", math.inf, "ent_coef must be a finite number, got inf"),
    ("a2c", "vf_coef", ".nan", math.nan, "vf_coef must be a finite number ≥ 0, got nan"),
    ("a2c", "vf_coef", "-0.5", -0.5, "vf_coef must be a finite number ≥ 0, got -0.5"),
    ("a2c", "gamma", ".nan", math.nan, "gamma must be a number in [0, 1], got nan"),
    (
        "a2c",
        "learning_rate",
        ".inf",
        math.inf,
        "learning_rate must be a number between 0 and 3.4e+38 or a schedule, got inf",
    ),
    (
        "a2c",
        "learning_rate",
        ".nan",
        math.nan,
        "learning_rate must be a number between 0 and 3.4e+38 or a schedule, got nan",
    ),
    ("a2c", "normalize_advantage", "abc", "abc", "normalize_advantage must be true or false, got 'abc'"),
    ("a2c", "normalize_advantage", "'true'", "true", "normalize_advantage must be true or false, got 'true'"),
    ("a2c", "normalize_advantage", "1", 1, "normalize_advantage must be true or false, got 1"),
    ("a2c", "use_rms_prop", "abc", "abc", "use_rms_prop must be true or false, got 'abc'"),
    ("a2c", "use_sde", "abc", "abc", "use_sde must be true or false, got 'abc'"),
    ("a2c", "allow_negative_ent_coef", "maybe", "maybe", "allow_negative_ent_coef must be true or false, got 'maybe'"),
    ("reinforce", "normalize_advantage", "abc", "abc", "normalize_advantage must be true or false, got 'abc'"),
    (
        "reinforce",
        "max_grad_norm",
        "-1",
        -1,
        "max_grad_norm must be a finite number > 0, or None for no clipping, got -1",
    ),
    ("a3c", "lock", "abc", "abc", "lock must be true or false, got 'abc'"),
    ("a3c", "shared_optimizer", "abc", "abc", "shared_optimizer must be true or false, got 'abc'"),
    ("a3c", "ent_coef", "-0.01", -0.01, "ent_coef must be ≥ 0 (a negative one punishes exploration;"),
    (
        "a3c",
        "max_grad_norm",
        ".inf",
        math.inf,
        "max_grad_norm must be a finite number > 0, or None for no clipping, got inf",
    ),
    ("a3c", "n_workers", "1000", 1000, "n_workers must be a whole number from 1 to 256, got 1000"),
    ("a3c", "callback_lag", "-1", -1, "callback_lag must be a positive integer, got -1"),
]
ALGORITHMS = {"a2c": A2C, "reinforce": REINFORCE, "a3c": A3C}
SETTING_IDS = [f"{algo}-{key}={text}" for algo, key, text, _, _ in SETTINGS]


@pytest.mark.parametrize(("algo", "key", "text", "value", "message"), SETTINGS, ids=SETTING_IDS)
def test_the_constructor_refuses_before_building_anything(algo, key, text, value, message):
    with pytest.raises(PgplugError) as error:
        ALGORITHMS[algo]("MlpPolicy", NO_ENV, **{key: value})  # the env id would fail if it were built first
    assert str(error.value).startswith(message)


@pytest.mark.parametrize(("algo", "key", "text", "value", "message"), SETTINGS, ids=SETTING_IDS)
def test_the_command_line_refuses_in_the_same_words(algo, key, text, value, message, tmp_path, capsys, plugin_host):
    line = refused(train(algo, tmp_path / "logs", "-params", f"{key}={text}"), capsys)
    assert line.startswith(message)
    assert no_run_folder(tmp_path / "logs")


@pytest.mark.parametrize(("algo", "key", "text", "value", "message"), SETTINGS, ids=SETTING_IDS)
def test_the_config_reader_refuses_in_the_same_words(algo, key, text, value, message):
    with pytest.raises(PgplugError) as error:
        prepare(ALGORITHMS[algo], {key: parse_value(text)}, algo)
    assert str(error.value).startswith(message)


def test_a_config_file_is_read_by_the_same_rules(tmp_path, capsys, plugin_host):
    config = tmp_path / "a2c.yml"
    config.write_text("CartPole-v1:\n  normalize_advantage: 'yes please'\n  n_steps: 8\n")
    line = refused(train("a2c", tmp_path / "logs", "-conf", str(config)), capsys)
    assert line == "normalize_advantage must be true or false, got 'yes please'"


# -- policy_kwargs ----------------------------------------------------------------------------------

POLICY_KWARGS = [
    ("{net_arch: [-1]}", {"net_arch": [-1]}, "net_arch must be a list of layer sizes ≥ 1 such as [64, 64]"),
    ("{net_arch: [64, 0]}", {"net_arch": [64, 0]}, "net_arch must be a list of layer sizes ≥ 1"),
    ("{net_arch: [true]}", {"net_arch": [True]}, "net_arch must be a list of layer sizes ≥ 1"),
    ("{net_arch: 64}", {"net_arch": 64}, "net_arch must be a list of layer sizes ≥ 1"),
    ("{net_arch: {pi: [64], vf: [-1]}}", {"net_arch": {"pi": [64], "vf": [-1]}}, "net_arch must be a list"),
    ("{net_arch: {pi: [64], qf: [64]}}", {"net_arch": {"pi": [64], "qf": [64]}}, "net_arch must be a list"),
    ("{net_arch: [{pi: [-2]}]}", {"net_arch": [{"pi": [-2]}]}, "net_arch must be a list"),  # SB3's old form
    ("{net_arch: [64, {pi: [8]}]}", {"net_arch": [64, {"pi": [8]}]}, "net_arch must be a list"),  # before SB3 1.8
    ("{foo: 1}", {"foo": 1}, "unknown policy_kwargs key 'foo' for ActorCriticPolicy; valid keys: activation_fn, "),
    ("{use_sde: true}", {"use_sde": True}, "policy_kwargs key 'use_sde' is not for ActorCriticPolicy: pgplug passes"),
]


@pytest.mark.parametrize(("text", "policy_kwargs", "message"), POLICY_KWARGS, ids=[c[0] for c in POLICY_KWARGS])
def test_policy_kwargs_are_refused_before_the_policy_is_built(
    text, policy_kwargs, message, tmp_path, capsys, plugin_host
):
    with pytest.raises(PgplugError) as error:
        A2C("MlpPolicy", "CartPole-v1", policy_kwargs=policy_kwargs)
    assert str(error.value).startswith(message)
    line = refused(train("a2c", tmp_path / "logs", "-params", f"policy_kwargs={text}"), capsys)
    assert line.startswith(message)
    assert no_run_folder(tmp_path / "logs")


def test_the_recurrent_policy_names_its_own_keys():
    with pytest.raises(PgplugError, match="unknown policy_kwargs key 'lstm_size' for RecurrentActorCriticPolicy; "):
        A2C("MlpLstmPolicy", "CartPole-v1", policy_kwargs={"lstm_size": 8})


# -- the command line's own values --------------------------------------------------------------


def png(folder: Path) -> Path:
    path = folder / "config.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00")
    return path


def random_bytes(folder: Path) -> Path:
    path = folder / "random.yml"
    path.write_bytes(b"\xff" + np.random.default_rng(0).bytes(255))
    return path


def a_file(folder: Path) -> Path:
    path = folder / "file"
    path.write_text("not a folder")
    return path


def read_only_folder(folder: Path) -> Path:
    path = folder / "read-only"
    path.mkdir()
    path.chmod(0o555)
    return path


ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
#: A folder no one may write to: a read-only one, or for root (who may write anywhere else) one under /proc.
UNWRITABLE = "/proc/pgplug-logs" if ROOT else "{tmp}/read-only"
#: A CUDA device this machine does not have: any on a CPU-only machine, else one past the last.
MISSING_CUDA = f"cuda:{torch.cuda.device_count()}" if torch.cuda.is_available() else "cuda"
LOGS = "-f/--log-folder must be a writable folder, got"
#: (algorithm, arguments (``{tmp}``: the test's folder), what to make in it first, the start of the line)
COMMAND_LINE = {
    "device-nonsense": ("a2c", ["--device", "nonsense"], None, "argument --device: device must be auto or a torch"),
    "device-cuda": (
        "a2c",
        ["--device", MISSING_CUDA],
        None,
        f"argument --device: device '{MISSING_CUDA}' does not exist on this machine",
    ),
    "device-cuda:63": ("a2c", ["--device", "cuda:63"], None, "argument --device: device 'cuda:63' does not exist on"),
    "device-meta": (
        "a2c",
        ["--device", "meta"],
        None,
        "argument --device: device 'meta' does not exist on this machine",
    ),
    "seed-negative": (
        "a2c",
        ["--seed", "-1"],
        None,
        "argument --seed: seed must be a whole number from 0 to 2**32 - 1",
    ),
    "seed-2**32": ("a2c", ["--seed", "4294967296"], None, "argument --seed: seed must be a whole number from 0 to"),
    "seed-text": ("a2c", ["--seed", "abc"], None, "argument --seed: seed must be a whole number from 0 to 2**32 - 1, "),
    "n-1e40": ("a2c", ["-n", "1e40"], None, "argument -n/--n-timesteps: n_timesteps must be a whole number from 1 to"),
    "n-fraction": ("a2c", ["-n", "10.5"], None, "argument -n/--n-timesteps: n_timesteps must be a whole number from"),
    "n-workers-1000": (
        "a3c",
        ["--n-workers", "1000"],
        None,
        "n_workers must be a whole number from 1 to 256, got 1000",
    ),
    "n-workers-0": ("a3c", ["--n-workers", "0"], None, "n_workers must be a whole number from 1 to 256, got 0"),
    "a3c-subproc": ("a3c", ["--vec-env", "subproc"], None, "--vec-env subproc does not apply to a3c: its workers each"),
    "lin-nan": ("a2c", ["-params", "learning_rate=lin_.nan"], None, "learning_rate 'lin_.nan''s initial value must be"),
    "conf-random": ("a2c", ["-conf", "{tmp}/random.yml"], random_bytes, "config file '{tmp}/random.yml' is not a YAML"),
    "conf-png": ("a2c", ["-conf", "{tmp}/config.png"], png, "config file '{tmp}/config.png' is not a YAML text file"),
    "f-file": ("a2c", ["-f", "{tmp}/file"], a_file, f"{LOGS} '{{tmp}}/file', which is not a folder"),
    "f-under-file": ("a2c", ["-f", "{tmp}/file/logs"], a_file, f"{LOGS} '{{tmp}}/file/logs', a part of which is"),
    "f-dev-null": ("a2c", ["-f", "/dev/null"], None, f"{LOGS} '/dev/null', which is not a folder"),
    "f-read-only": ("a2c", ["-f", UNWRITABLE], read_only_folder, f"{LOGS} '{UNWRITABLE}', where nothing can be"),
    "f-proc": ("a2c", ["-f", "/proc/pgplug-logs"], None, f"{LOGS} '/proc/pgplug-logs', where nothing can be written"),
    "tb-file": (
        "a2c",
        ["-tb", "{tmp}/file"],
        a_file,
        "-tb/--tensorboard-log must be a writable folder, got '{tmp}/file'",
    ),
    "tb-dev-null": (
        "a2c",
        ["-tb", "/dev/null"],
        None,
        "-tb/--tensorboard-log must be a writable folder, got '/dev/null'",
    ),
    "use-sde-discrete": (
        "a2c",
        ["-params", "use_sde=true"],
        None,
        "use_sde=True needs continuous actions (a Box action",
    ),
}


@pytest.mark.parametrize(
    ("algo", "args", "make", "message"),
    [pytest.param(*case, id=name) for name, case in COMMAND_LINE.items()],
)
def test_command_line_values(algo, args, make, message, tmp_path, capsys, plugin_host):
    if make is not None:
        make(tmp_path)
    line = refused(train(algo, tmp_path / "logs", *(a.format(tmp=tmp_path) for a in args)), capsys)
    assert line.startswith(message.format(tmp=tmp_path))
    assert no_run_folder(tmp_path / "logs")


def test_a_bad_env_wrapper_argument_in_a_config(tmp_path, capsys, plugin_host):
    config = tmp_path / "a2c.yml"
    wrapper = "gymnasium.wrappers.TimeLimit"
    config.write_text(f"CartPole-v1:\n  env_wrapper:\n    - {wrapper}: {{max_steps: 3}}\n")
    line = refused(train("a2c", tmp_path / "logs", "-conf", str(config)), capsys)
    assert line == "unknown env_wrapper argument 'max_steps' for TimeLimit; valid keys: max_episode_steps"
    config.write_text(f"CartPole-v1:\n  env_wrapper: {wrapper}\n")
    line = refused(train("a2c", tmp_path / "logs", "-conf", str(config)), capsys)
    assert line == f"env_wrapper {wrapper}: missing a required argument: 'max_episode_steps'"
    assert no_run_folder(tmp_path / "logs")


# -- plugins --------------------------------------------------------------------------------------

BAD_PLUGINS = {
    "configure_raises": """
        import pgplug

        @pgplug.hookimpl
        def pgplug_configure(args, command):
            raise RuntimeError("no configuration today")
    """,
    "addoption_clashes": """
        import pgplug

        @pgplug.hookimpl
        def pgplug_addoption(parser, command):
            if command == "train":
                parser.add_argument("--seed", help="a second --seed")
    """,
    "bad_estimators": """
        import pgplug
        from pgplug.contracts.estimator import Estimate
        from pgplug.plugins.estimators import TD


        class FlatAdvantages(TD):
            name = "flat_advantages"

            def estimate(self, **rollout):
                estimate = super().estimate(**rollout)
                return Estimate(estimate.advantages.reshape(-1), estimate.returns)


        class NoEstimate(TD):
            name = "no_estimate"

            def estimate(self, **rollout):
                return None


        @pgplug.hookimpl
        def pgplug_register_estimators(register):
            register(FlatAdvantages)
            register(NoEstimate)
    """,
}


def plugin(tmp_path: Path, name: str) -> str:
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(BAD_PLUGINS[name]))
    return str(path)


def test_a_plugin_whose_configure_raises(tmp_path, capsys, plugin_host):
    path = plugin(tmp_path, "configure_raises")
    line = refused(train("a2c", tmp_path / "logs", "--plugin", path), capsys)
    assert line == f"local file {path} failed in pgplug_configure: RuntimeError: no configuration today"


def test_a_plugin_option_that_clashes(tmp_path, capsys, plugin_host):
    path = plugin(tmp_path, "addoption_clashes")
    line = refused(train("a2c", tmp_path / "logs", "--plugin", path), capsys)
    clash = "ArgumentError: argument --seed: conflicting option string: --seed"
    assert line == f"local file {path} failed in pgplug_addoption: {clash}"


@pytest.mark.parametrize(
    ("estimator", "message"),
    [
        (
            "flat_advantages",
            "returned advantages as a torch.float32 tensor of shape (8,); expected a float tensor of shape (8, 1)",
        ),
        ("no_estimate", "returned None, not an Estimate(advantages, returns)"),
    ],
)
def test_an_estimator_plugin_with_the_wrong_output(estimator, message, tmp_path, capsys, plugin_host):
    path = plugin(tmp_path, "bad_estimators")
    args = ["--plugin", path, "--estimator", estimator, "-params", "n_envs=1", "n_steps=8"]
    line = refused(train("a2c", tmp_path / "logs", *args), capsys)
    assert line.startswith(f"estimator {estimator!r} (pgplug_local_bad_estimators_")
    assert message in line


class Returns(TD):
    """TD with its output replaced by a test: the contract's check sees whatever ``output`` is."""

    name = "test_output"

    def __init__(self, output=None) -> None:
        self.output = output

    def estimate(self, **rollout):
        return self.output(super().estimate(**rollout))


ROLLOUT = dict(
    rewards=np.ones((4, 2), np.float32),
    values=np.zeros((4, 2), np.float32),
    episode_starts=np.zeros((4, 2), np.float32),
    last_values=np.zeros(2, np.float32),
    last_dones=np.zeros(2, np.float32),
    gamma=0.99,
)


@pytest.mark.parametrize(
    ("output", "message"),
    [
        (lambda e: None, "returned None, not an Estimate(advantages, returns)"),
        (lambda e: (e.advantages, e.returns), "returned a tuple, not an Estimate(advantages, returns)"),
        (
            lambda e: Estimate(e.advantages.T, e.returns),
            "returned advantages as a torch.float32 tensor of shape (2, 4); expected",
        ),
        (
            lambda e: Estimate(e.advantages.long(), e.returns),
            "returned advantages as a torch.int64 tensor of shape (4, 2); expected",
        ),
        (
            lambda e: Estimate(e.advantages.numpy(), e.returns),
            "returned advantages as a float32 numpy array of shape (4, 2); expected a float tensor",
        ),
        (lambda e: Estimate(None, e.returns), "returned no advantages (None); expected a float tensor of shape (4, 2)"),
        (lambda e: Estimate(e.advantages, None), "returned no returns (None); expected a float tensor of shape (4, 2)"),
        (
            lambda e: Estimate(e.advantages, e.returns[:1]),
            "returned returns as a torch.float32 tensor of shape (1, 2); expected",
        ),
    ],
)
def test_the_estimator_contract_checks_every_output(output, message):
    with pytest.raises(PgplugError) as error:
        Returns(output)(**ROLLOUT)
    assert str(error.value).startswith(f"estimator 'test_output' ({__name__}.Returns) {message}")
    assert len(str(error.value).splitlines()) == 1


def test_a_good_estimate_passes_the_contract_as_it_is():
    estimate = Returns(lambda e: e)(**ROLLOUT)
    assert isinstance(estimate, Estimate) and estimate.advantages.shape == (4, 2)
    assert Estimator.check_estimate(Returns(), estimate, torch.Size((4, 2))) is estimate


# -- eval and bc ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_zip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "CartPole-v1.zip"
    A2C("MlpPolicy", "CartPole-v1", seed=0).save(path)
    return path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--env-kwargs", "foo=1"], "unknown env argument 'foo' for CartPole-v1; valid keys: disable_env_checker, "),
        (["--seed", "-1"], "argument --seed: seed must be a whole number from 0 to 2**32 - 1, got -1"),
        (["--device", "cuda:63"], "argument --device: device 'cuda:63' does not exist on this machine"),
        (["--video-folder", "/dev/null"], "--video-folder must be a writable folder, got '/dev/null', which is not"),
        (["--episodes", "0"], "argument --episodes: episodes must be a positive integer, got 0"),
    ],
)
def test_eval_values(args, message, model_zip, capsys, plugin_host):
    line = refused(["eval", str(model_zip), "--env", "CartPole-v1", *args], capsys)
    assert line.startswith(message)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--learning-rate", "nan"], "argument --learning-rate: learning_rate must be a number between 0 and 3.4e+38"),
        (["--seed", "4294967296"], "argument --seed: seed must be a whole number from 0 to 2**32 - 1, got 4294967296"),
        (["-n", "1e40"], "argument -n/--n-steps: n_steps must be a whole number from 1 to 2**53, got 1e+40"),
        (["-f", "/dev/null"], "-f/--log-folder must be a writable folder, got '/dev/null', which is not a folder"),
        (["-params", "max_grad_norm=-1"], "max_grad_norm must be a finite number > 0, or None for no clipping, got -1"),
    ],
)
def test_bc_values(args, message, model_zip, tmp_path, capsys, plugin_host):
    bc = ["bc", "--expert", str(model_zip), "--env", "CartPole-v1", "-n", "10", "-f", str(tmp_path / "logs")]
    line = refused([*bc, *args], capsys)
    assert line.startswith(message)
    assert no_run_folder(tmp_path / "logs")


# -- through the real entry point -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["-params", "ent_coef=abc"], 1, "ent_coef must be a finite number, got 'abc'"),
        (["--device", "nonsense"], 2, "argument --device: device must be auto or a torch device this machine has ("),
        (["-conf", "config.png"], 1, "config file 'config.png' is not a YAML text file (byte 0x89 at offset 0"),
        (["-params", "policy_kwargs={net_arch: [-1]}"], 1, "net_arch must be a list of layer sizes ≥ 1 such as [64"),
    ],
)
def test_the_pgplug_command_prints_one_line(args, code, message, tmp_path):
    png(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "pgplug", *train("a2c", tmp_path / "logs", "--num-threads", "1", *args)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == code
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"pgplug: error: {message}")
    assert no_run_folder(tmp_path / "logs")


# -- learn's budget -----------------------------------------------------------------------------------


@pytest.mark.parametrize("budget", ["100", 10.5, math.nan, True, 0, -5, 2**53 + 1, None])
@pytest.mark.parametrize("cls", [A2C, REINFORCE, A3C])
def test_learn_refuses_a_budget_that_is_not_a_whole_number(cls, budget):
    extra = {"backend": "serial", "n_workers": 1} if cls is A3C else {}
    model = cls("MlpPolicy", "CartPole-v1", **extra)
    with pytest.raises(PgplugError) as error:
        model.learn(budget)
    assert str(error.value) == f"total_timesteps must be a whole number from 1 to 2**53, got {budget!r}"
    assert model.num_timesteps == 0


@pytest.mark.parametrize("budget", [np.int64(8), np.int32(8), 8.0, np.float64(8)])
@pytest.mark.parametrize("cls", [A2C, A3C])
def test_learn_takes_numpy_integers_and_whole_floats(cls, budget):
    extra = {"backend": "serial", "n_workers": 1, "t_max": 4} if cls is A3C else {"n_steps": 4}
    model = cls("MlpPolicy", "CartPole-v1", seed=0, **extra)
    model.learn(budget)
    assert model.num_timesteps == 8


# -- what stays accepted: SB3's values --------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_grad_norm": 0.5},
        {"max_grad_norm": 40},
        {"max_grad_norm": np.float32(1.0)},
        {"max_grad_norm": None},
        {"ent_coef": 0.0},
        {"ent_coef": 0},
        {"ent_coef": -0.01, "allow_negative_ent_coef": True},
        {"vf_coef": 0.0},
        {"learning_rate": lambda progress: 1e-3 * progress},
        {"learning_rate": 0},
        {"normalize_advantage": np.bool_(True)},
        {"device": "cpu"},
        {"device": torch.device("cpu")},
        {"device": "cuda"},  # SB3's get_device: the CPU where there is no CUDA
        {"seed": 0},
        {"seed": 2**32 - 1},
        {"seed": np.int64(7)},
        {"policy_kwargs": {"net_arch": []}},
        {"policy_kwargs": {"net_arch": [4, np.int64(4)]}},
        {"policy_kwargs": {"net_arch": {"vf": [16], "pi": [8]}}},
        {"policy_kwargs": {"net_arch": {"pi": [8]}}},
        {"policy_kwargs": {"net_arch": None, "ortho_init": False}},
    ],
    ids=repr,
)
def test_sb3_values_stay_accepted(kwargs):
    model = A2C("MlpPolicy", "CartPole-v1", n_steps=4, **kwargs)
    assert model.device.type == "cpu" or CUDA


@pytest.mark.parametrize("net_arch", [[{"vf": [8]}], [{"vf": [8], "pi": [4]}]])
def test_sb3_old_net_arch_form_stays_accepted(net_arch):
    with pytest.warns(UserWarning, match="shared layers in the mlp_extractor are removed"):
        A2C("MlpPolicy", "CartPole-v1", policy_kwargs={"net_arch": net_arch})


def test_a_negative_ent_coef_trains_when_asked_for(tmp_path, capsys, plugin_host):
    args = ["-params", "ent_coef=-0.01", "allow_negative_ent_coef=true", "n_envs=1", "n_steps=8", "--seed", "0"]
    assert main(train("a2c", tmp_path / "logs", *args)) == 0
    capsys.readouterr()
    model = A2C.load(tmp_path / "logs" / "a2c" / "CartPole-v1_1" / "CartPole-v1.zip")
    assert model.ent_coef == -0.01 and model.allow_negative_ent_coef is True


# -- n_workers: bounded, and a warning past the machine's cores ----------------------------------


def test_more_workers_than_cores_warns_once_in_one_line(tmp_path, capsys, plugin_host, monkeypatch):
    monkeypatch.setattr(validation, "available_cpus", lambda: 1)
    with pytest.warns(PgplugWarning, match=r"^n_workers=2 is more than the CPU cores available \(1\)"):
        model = A3C("MlpPolicy", "CartPole-v1", n_workers=2)
    model.save(tmp_path / "a3c.zip")
    with warnings.catch_warnings():
        warnings.simplefilter("error", PgplugWarning)
        A3C("MlpPolicy", "CartPole-v1", n_workers=1)
        # Workers on a Ray cluster run on its nodes' cores, not this machine's (the cluster's are checked there).
        A3C("MlpPolicy", "CartPole-v1", n_workers=2, backend="ray", backend_kwargs={"address": "auto"})
        A3C.load(tmp_path / "a3c.zip")  # loading builds nothing to train on
    # The command line warns once, on one line.
    code = main(train("a3c", tmp_path / "logs", "--n-workers", "2", "-n", "40", "--eval-freq", "-1"))
    assert code == 0
    assert [line for line in capsys.readouterr().err.splitlines() if "warning" in line] == [
        "pgplug: warning: n_workers=2 is more than the CPU cores available (1): the workers will take turns on them",
    ]
