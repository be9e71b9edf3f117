"""Fuzzed command lines, YAML configs and model zips: a bad input is one line and a non-zero exit, never a traceback.

Hypothesis draws ``pgplug train`` command lines (flags and hyperparameters, valid and not), YAML
configs (documents of the hyperparameters' names with values of every type, and raw text) and
damaged model zips (bytes flipped or cut, ``data`` entries replaced, members dropped) and runs the
command in-process in a fresh folder. Every run must end either in success or in exactly one line
``pgplug: error: ...`` with a non-zero exit code, and write nothing outside its log folder. The
examples are derandomized, so every machine runs the same ones; what they check does not depend on
floating-point details (the few commands that train run 16 steps and only their exit is checked).
"""

from __future__ import annotations

import base64
import json
import os
import zipfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgplug import A2C
from pgplug.cli import main

FUZZ = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
QUIET = ["--no-progress", "--n-eval-episodes", "0"]

# -- values ------------------------------------------------------------------------------------------------

BAD_TEXT = ["", " ", "-1", "0", "abc", "1e40", "nan", "inf", "-inf", "1.5", "0x10", "9" * 30, "true", "\x00", "é"]
NUMBER_TEXT = st.one_of(
    st.sampled_from(BAD_TEXT),
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)
YAML_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["abc", "lin_7e-4", "lin_abc", "nan", "dict(net_arch=[8])", "CartPole-v1", "tanh", "gae", ""]),
    st.text(max_size=8),
)
YAML_VALUES = st.recursive(
    YAML_SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.sampled_from(["net_arch", "pi", "vf", "activation_fn", "ortho_init", "x"]), children, max_size=3
        ),
    ),
    max_leaves=8,
)
KEYS = [
    "n_steps",
    "n_envs",
    "gamma",
    "learning_rate",
    "ent_coef",
    "vf_coef",
    "max_grad_norm",
    "normalize_advantage",
    "use_rms_prop",
    "rms_prop_eps",
    "policy",
    "policy_kwargs",
    "use_sde",
    "normalize",
    "frame_stack",
    "env_wrapper",
    "estimator",
    "estimator_kwargs",
    "gae_lambda",
    "n_timesteps",
    "device",
    "unknown_key",
]
#: Values that would make a valid run slow or huge: the fuzz keeps counts small where they are valid.
SMALL_COUNTS = {"n_steps": st.integers(-3, 8), "n_envs": st.integers(-3, 4), "frame_stack": st.integers(-3, 4)}


def hyperparameter(key: str) -> st.SearchStrategy[str]:
    values = SMALL_COUNTS.get(key, YAML_VALUES)
    return values.map(
        lambda value: f"{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"
    )


HYPERPARAMETERS = st.sampled_from(KEYS).flatmap(hyperparameter)

FLAGS: dict[str, st.SearchStrategy[list[str]]] = {
    "--seed": NUMBER_TEXT.map(lambda v: ["--seed", v]),
    "--device": st.sampled_from(["cpu", "auto", "cuda", "cuda:7", "nonsense", "", "meta", "mps"]).map(
        lambda v: ["--device", v]
    ),
    "--estimator": st.sampled_from(["gae", "td", "nstep", "reward_to_go", "full_return", "nope", ""]).map(
        lambda v: ["--estimator", v]
    ),
    "--estimator-kwargs": st.lists(
        st.sampled_from(["gae_lambda=0.9", "gae_lambda=2", "gae_lambda=abc", "n=3", "n=-1", "x=1", "=", "novalue"]),
        min_size=1,
        max_size=2,
    ).map(lambda v: ["--estimator-kwargs", *v]),
    "-params": st.lists(HYPERPARAMETERS, min_size=1, max_size=3).map(lambda v: ["-params", *v]),
    "--eval-freq": st.sampled_from(["-1", "0", "8", "abc", "1e40"]).map(lambda v: ["--eval-freq", v]),
    "--eval-episodes": st.sampled_from(["1", "0", "-2", "x"]).map(lambda v: ["--eval-episodes", v]),
    "--save-freq": st.sampled_from(["-1", "8", "0", "abc"]).map(lambda v: ["--save-freq", v]),
    "--num-threads": st.sampled_from(["-1", "1", "0", "abc", "100000"]).map(lambda v: ["--num-threads", v]),
    "--vec-env": st.sampled_from(["dummy", "subproc", "other"]).map(lambda v: ["--vec-env", v]),
    "--verbose": st.sampled_from(["0", "1", "-1", "x"]).map(lambda v: ["--verbose", v]),
    "--n-workers": st.sampled_from(["0", "-1", "abc", "1e40", "100000"]).map(lambda v: ["--n-workers", v]),
    "-tb": st.sampled_from(["tb", "/dev/null", "file.txt"]).map(lambda v: ["-tb", v]),
}


ENVS = ["CartPole-v1", "Pendulum-v1", "NoSuchEnv-v0", "", "pgplug.toy_envs:pgplug/CueMemory-v0", "nomodule:X-v0"]


@st.composite
def train_command_lines(draw) -> list[str]:
    algo = draw(st.sampled_from(["a2c", "reinforce", "a3c", "nope", ""]))
    env = draw(st.sampled_from(ENVS))
    steps = draw(st.one_of(st.just("16"), st.sampled_from(BAD_TEXT)))
    argv = ["train", "--algo", algo, "--env", env, "-n", steps, "-f", "logs", *QUIET]
    for flag in draw(st.lists(st.sampled_from(sorted(FLAGS)), max_size=4, unique=True)):
        argv += draw(FLAGS[flag])
    if algo == "a3c" and "--n-workers" not in argv:
        argv += ["--n-workers", "1"]  # a valid A3C run stays small
    return argv


# -- running -----------------------------------------------------------------------------------------------


def files_under(folder: Path) -> set[Path]:
    return {path.relative_to(folder) for path in folder.rglob("*")}


def run_in(folder: Path, argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    """Run ``pgplug argv`` in ``folder``: its exit code and stderr lines. Only ``logs/`` and ``tb/`` may be written."""
    folder.mkdir(parents=True, exist_ok=True)
    before = files_under(folder)
    cwd = Path.cwd()
    os.chdir(folder)
    try:
        code = main(argv)
    finally:
        os.chdir(cwd)
    err = capsys.readouterr().err.strip().splitlines()
    written = {path for path in files_under(folder) - before if path.parts[0] not in ("logs", "tb")}
    assert not written, f"{argv} wrote {sorted(map(str, written))} outside its log folder"
    return code, err


def assert_one_line_or_success(argv: list[str], code: int, err: list[str]) -> None:
    if code == 0:
        return
    assert not any("Traceback" in line for line in err), f"{argv}: {err}"
    errors = [line for line in err if not line.startswith("warning:")]
    assert len(errors) == 1 and errors[0].startswith("pgplug: error: "), f"{argv}: {err}"


@pytest.fixture
def sandbox(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("fuzz")
    (folder / "file.txt").write_text("a file, not a folder\n")
    return folder


@settings(FUZZ, max_examples=200)
@given(argv=train_command_lines())
def test_fuzzed_train_command_lines_end_in_success_or_one_line(argv: list[str], sandbox: Path, capsys) -> None:
    code, err = run_in(sandbox, argv, capsys)
    assert_one_line_or_success(argv, code, err)


@FUZZ
@given(
    config=st.dictionaries(
        st.sampled_from(["CartPole-v1", "default", "atari", "x"]),
        st.dictionaries(st.sampled_from(KEYS), YAML_VALUES, max_size=4),
        max_size=2,
    )
)
def test_fuzzed_yaml_configs_end_in_success_or_one_line(config: dict, sandbox: Path, capsys) -> None:
    for entry in config.values():
        for key in SMALL_COUNTS:
            if isinstance(entry.get(key), int):
                entry[key] = min(entry[key], 4)
    (sandbox / "conf.yml").write_text(yaml.safe_dump(config))
    argv = ["train", "--algo", "a2c", "--env", "CartPole-v1", "-n", "16", "-conf", "conf.yml", "-f", "logs", *QUIET]
    code, err = run_in(sandbox, argv, capsys)
    assert_one_line_or_success(argv, code, err)


@FUZZ
@given(text=st.one_of(st.text(max_size=200), st.binary(max_size=200).map(lambda b: b.decode("latin-1"))))
def test_fuzzed_config_text_ends_in_success_or_one_line(text: str, sandbox: Path, capsys) -> None:
    (sandbox / "conf.yml").write_bytes(text.encode("utf-8", "surrogatepass"))
    argv = ["train", "--algo", "a2c", "--env", "CartPole-v1", "-n", "16", "-conf", "conf.yml", "-f", "logs", *QUIET]
    code, err = run_in(sandbox, argv, capsys)
    assert_one_line_or_success(argv, code, err)


# -- model zips --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clean_zip(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("clean") / "model.zip"
    A2C("MlpPolicy", "CartPole-v1", n_steps=5, seed=0).save(path)
    return path.read_bytes()


def rewritten(clean: bytes, change) -> bytes:
    """``clean`` with its members passed through ``change(members) -> members``."""
    import io

    with zipfile.ZipFile(io.BytesIO(clean)) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    members = change(members)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return out.getvalue()


JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=10)),
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=6,
)
DATA_KEYS = ["policy_class", "policy_kwargs", "observation_space", "action_space", "learning_rate", "lr_schedule"]
DATA_KEYS += ["n_envs", "num_timesteps", "pgplug_algorithm", "estimator", "gamma", "n_steps", "extra"]


@st.composite
def damaged_zips(draw, clean: bytes) -> bytes:
    how = draw(st.sampled_from(["flip", "cut", "entry", "pickle", "drop"]))
    if how == "flip":
        content = bytearray(clean)
        for position in draw(st.lists(st.integers(0, len(clean) - 1), min_size=1, max_size=8)):
            content[position] ^= draw(st.integers(1, 255))
        return bytes(content)
    if how == "cut":
        return clean[: draw(st.integers(0, len(clean) - 1))]
    if how == "drop":
        victim = draw(st.sampled_from(["data", "policy.pth", "policy.optimizer.pth", "pytorch_variables.pth"]))
        return rewritten(clean, lambda members: {k: v for k, v in members.items() if k != victim})
    key = draw(st.sampled_from(DATA_KEYS))
    if how == "entry":
        value = draw(JSON_VALUES)
    else:
        blob = draw(st.binary(max_size=64))
        value = {":type:": "<class 'object'>", ":serialized:": base64.b64encode(blob).decode()}

    def replace(members: dict[str, bytes]) -> dict[str, bytes]:
        data = json.loads(members["data"])
        data[key] = value
        return {**members, "data": json.dumps(data).encode()}

    return rewritten(clean, replace)


@settings(FUZZ, max_examples=200)
@given(data=st.data())
def test_fuzzed_model_zips_end_in_success_or_one_line(data, clean_zip: bytes, sandbox: Path, capsys) -> None:
    (sandbox / "model.zip").write_bytes(data.draw(damaged_zips(clean_zip)))
    argv = ["eval", "model.zip", "--env", "CartPole-v1", "--episodes", "1"]
    code, err = run_in(sandbox, argv, capsys)
    assert_one_line_or_success(argv, code, err)
