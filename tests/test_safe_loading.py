"""Opening a model zip, a ``vecnormalize.pkl`` or a run folder runs no code from it, unless the user trusts the file.

Each hostile file carries a payload that, if unpickled or imported, creates a marker file. Every way of
opening a file is tried (``pgplug.load``, ``A2C.load``, ``pgplug eval``, ``train -i``, ``bc --expert``,
``--bc-warmstart``): the marker never appears, and the command either rebuilds the entry safely or
refuses in one line naming the entry and ``--trust-file``. With ``trust=True`` / ``--trust-file`` the
payload does run: the opt-in is real. Files SB3 saves keep loading (also tested in test_compat.py).
"""

from __future__ import annotations

import base64
import builtins
import contextlib
import json
import pickle
import resource
import subprocess
import sys
import zipfile
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import yaml
from stable_baselines3 import PPO
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

import pgplug
from pgplug import A2C
from pgplug.cli import main
from pgplug.errors import PgplugError
from pgplug.files import model_zip, yaml_text
from pgplug.files.safe_pickle import UntrustedPickleError, safe_loads
from pgplug.interop import compat

QUIET = ["--no-progress", "--eval-freq", "-1", "--n-eval-episodes", "0", "--seed", "0"]


class Payload:
    """Unpickled, it creates ``marker``: what an attacker's pickle would do instead."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (builtins.exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


class PayloadThenPolicy:
    """A ``policy_class`` pickle that runs the payload, then yields a real policy class."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (builtins.getattr, ((Payload(self.marker), ActorCriticPolicy), "__getitem__"))


@pytest.fixture(scope="module")
def clean_zip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("clean") / "CartPole-v1.zip"
    model = A2C("MlpPolicy", "CartPole-v1", n_steps=5, seed=0)
    model.learn(50)
    model.save(path)
    return path


def poisoned(clean: Path, folder: Path, key: str, blob: bytes) -> Path:
    """A copy of ``clean`` whose ``data`` entry ``key`` holds ``blob`` as SB3 writes a pickled entry."""
    with zipfile.ZipFile(clean) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    data = json.loads(members["data"])
    data[key] = {":type:": "<class 'object'>", ":serialized:": base64.b64encode(blob).decode()}
    members["data"] = json.dumps(data).encode()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "CartPole-v1.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return path


ENTRIES = ["policy_class", "policy_kwargs", "observation_space", "lr_schedule", "extra_entry", "_last_obs"]


def payload_for(key: str, marker: Path) -> bytes:
    return pickle.dumps(PayloadThenPolicy(marker) if key == "policy_class" else Payload(marker))


@pytest.mark.parametrize("key", ENTRIES)
@pytest.mark.parametrize("opener", ["pgplug.load", "A2C.load"])
def test_no_entry_of_a_model_zip_runs_code_when_opened(key: str, opener: str, clean_zip: Path, tmp_path) -> None:
    marker = tmp_path / "marker"
    path = poisoned(clean_zip, tmp_path / "model", key, payload_for(key, marker))
    open_file = pgplug.load if opener == "pgplug.load" else A2C.load
    try:
        with pytest.warns(UserWarning, match=key) if key in ("lr_schedule", "_last_obs") else _nothing():
            model = open_file(path, env=gym.make("CartPole-v1") if key == "observation_space" else None)
    except PgplugError as exc:
        message = str(exc)
        assert "\n" not in message and key in message, message
        if key not in ("observation_space",):
            assert "--trust-file" in message
    else:  # rebuilt safely: spaces from the env, schedules from the saved rate, last observations dropped
        assert key in ("observation_space", "lr_schedule", "_last_obs")
        assert model.observation_space == gym.make("CartPole-v1").observation_space
    assert not marker.exists()


def _nothing() -> contextlib.AbstractContextManager:
    return contextlib.nullcontext()


@pytest.mark.parametrize("key", ["extra_entry", "policy_kwargs"])
def test_trust_true_unpickles_as_sb3_does(key: str, clean_zip: Path, tmp_path) -> None:
    marker = tmp_path / "marker"
    path = poisoned(clean_zip, tmp_path / "model", key, payload_for(key, marker))
    with contextlib.suppress(Exception):  # the payload's result is no valid entry: what matters is that it ran
        pgplug.load(path, trust=True)
    assert marker.read_text() == "ran"


def test_the_allowlist_reads_what_sb3_and_pgplug_save(tmp_path) -> None:
    for model in (A2C("MlpPolicy", "CartPole-v1", n_steps=5), PPO("MlpPolicy", "Pendulum-v1", n_steps=64)):
        model.learn(64)
        model.save(tmp_path / "m.zip")
        info = model_zip.read_zip(tmp_path / "m.zip")
        for key in info.data:
            blob = info.pickled(key)
            if blob is not None:
                safe_loads(blob)  # raises if any entry needed more than the allowlist
    space = gym.spaces.Dict({"a": gym.spaces.Box(0, 1, (2,)), "b": gym.spaces.MultiDiscrete([2, 3])})
    space.seed(3)
    assert safe_loads(pickle.dumps(space)) == space
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        value = {"x": np.arange(3), "t": (1, {2}), "f": frozenset([1])}
        assert safe_loads(pickle.dumps(value, protocol=protocol))["t"] == (1, {2})
    numpy_1 = pickle.dumps(np.arange(3.0), protocol=2).replace(b"numpy._core", b"numpy.core")  # as numpy 1.x wrote
    assert b"numpy.core.multiarray" in numpy_1 and safe_loads(numpy_1).tolist() == [0.0, 1.0, 2.0]


@pytest.mark.parametrize(
    "payload, named",
    [
        ((builtins.exec, ("1",)), "builtins.exec"),
        ((ActorCriticPolicy, (1, 2, 3)), "only lets a file name"),
        ((np.load, ("x",)), "numpy.load"),
        ((subprocess.call, (["true"],)), "subprocess.call"),
    ],
)
def test_the_safe_unpickler_refuses_calls_outside_the_allowlist(payload, named) -> None:
    class Reduce:
        def __reduce__(self):
            return payload

    with pytest.raises(UntrustedPickleError, match=named.replace(".", r"\.")):
        safe_loads(pickle.dumps(Reduce()))


def test_a_poisoned_vecnormalize_file_is_refused_unless_trusted(tmp_path) -> None:
    venv = DummyVecEnv([lambda: gym.make("CartPole-v1")])
    marker = tmp_path / "marker"
    path = tmp_path / "vecnormalize.pkl"
    path.write_bytes(pickle.dumps([Payload(marker), VecNormalize(venv)]))
    with pytest.raises(PgplugError, match="--trust-file"):
        compat.load_vecnormalize(path, venv)
    assert not marker.exists()
    with pytest.raises(PgplugError, match="not a VecNormalize"):
        compat.load_vecnormalize(path, venv, trust=True)
    assert marker.exists()
    clean = tmp_path / "clean.pkl"
    clean.write_bytes(pickle.dumps(VecNormalize(venv)))
    assert isinstance(compat.load_vecnormalize(clean, venv), VecNormalize)


# -- the commands ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def a2c_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    args = ["train", "--algo", "a2c", "--env", "CartPole-v1", "-n", "200", "-f", str(root), *QUIET]
    args += ["-params", "n_envs=2", "normalize=true"]
    assert main(args) == 0
    return root / "a2c" / "CartPole-v1_1"


def hostile_run(a2c_run: Path, folder: Path, marker: Path, part: str) -> Path:
    """A copy of the run folder with one hostile part: the zip's ``policy_kwargs``, or its vecnormalize.pkl."""
    model = a2c_run / "CartPole-v1.zip"
    if part == "zip":
        path = poisoned(model, folder, "policy_kwargs", payload_for("policy_kwargs", marker))
    else:
        folder.mkdir(parents=True)
        path = folder / model.name
        path.write_bytes(model.read_bytes())
        (folder / "vecnormalize.pkl").write_bytes(pickle.dumps((Payload(marker), "statistics")))
    (folder / "config.yml").write_text((a2c_run / "config.yml").read_text())
    if part == "zip":
        (folder / "vecnormalize.pkl").write_bytes((a2c_run / "vecnormalize.pkl").read_bytes())
    return path


TRAIN = ["train", "--algo", "a2c", "--env", "CartPole-v1", "-n", "10", *QUIET]
COMMANDS = {
    "eval": lambda path, out: ["eval", str(path), "--episodes", "1"],
    "train -i": lambda path, out: [*TRAIN, "-i", str(path), "-f", str(out)],
    "train --bc-warmstart": lambda path, out: [*TRAIN, "--bc-warmstart", str(path), "--bc-steps", "20", "-f", str(out)],
    "bc --expert": lambda path, out: [
        *("bc", "--algo", "a2c", "--env", "CartPole-v1", "--expert", str(path)),
        *("--n-steps", "20", "--epochs", "1", "--n-eval-episodes", "1", "-f", str(out)),
    ],
    "variance --weights": lambda path, out: [
        *("variance", "--env", "CartPole-v1", "--weights", str(path), "--estimators", "td"),
        *("--batches", "2", "--reference-batches", "2", "--critic-iterations", "5"),
    ],
}


@pytest.mark.parametrize("part", ["zip", "vecnormalize"])
@pytest.mark.parametrize("command", list(COMMANDS))
def test_no_command_runs_code_from_the_files_it_opens(command: str, part: str, a2c_run: Path, tmp_path, capsys) -> None:
    marker = tmp_path / "marker"
    path = hostile_run(a2c_run, tmp_path / "hostile", marker, part)
    code = main(COMMANDS[command](path, tmp_path / "out"))
    err = capsys.readouterr().err.strip().splitlines()
    assert not marker.exists()
    if command == "train --bc-warmstart" and part == "vecnormalize":
        assert code == 0  # cloning plays the expert on the student's own env: the expert's statistics are not read
        return
    assert code == 1 and len(err) == 1 and "--trust-file" in err[0], err


def test_trust_file_lets_a_command_unpickle(a2c_run: Path, tmp_path, capsys) -> None:
    marker = tmp_path / "marker"
    path = hostile_run(a2c_run, tmp_path / "hostile", marker, "vecnormalize")
    main(["eval", str(path), "--episodes", "1", "--trust-file"])
    assert marker.read_text() == "ran"


def test_a_module_named_in_a_run_folder_is_not_imported_unless_trusted(a2c_run: Path, tmp_path, capsys) -> None:
    module = tmp_path / "site" / "hostile_envs.py"
    module.parent.mkdir()
    marker = tmp_path / "marker"
    module.write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "CartPole-v1.zip").write_bytes((a2c_run / "CartPole-v1.zip").read_bytes())
    config = yaml.safe_load((a2c_run / "config.yml").read_text())
    (folder / "config.yml").write_text(yaml.safe_dump({**config, "env": "hostile_envs:CartPole-v1", "normalize": 0}))
    sys.path.insert(0, str(module.parent))
    try:
        assert main(["eval", str(folder / "CartPole-v1.zip"), "--episodes", "1"]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "hostile_envs" in err[0] and "--trust-file" in err[0]
        assert not marker.exists()
        assert main(["eval", str(folder / "CartPole-v1.zip"), "--episodes", "1", "--env", "CartPole-v1"]) == 0
        assert not marker.exists()
    finally:
        sys.path.remove(str(module.parent))
        sys.modules.pop("hostile_envs", None)


# -- bounded sizes ----------------------------------------------------------------------------------------


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_a_zip_bomb_is_refused_before_it_is_decompressed(clean_zip: Path, tmp_path) -> None:
    with zipfile.ZipFile(clean_zip) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    path = tmp_path / "bomb.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
        with archive.open("padding.pth", "w", force_zip64=True) as padding:
            for _ in range(512):  # 512 MiB of zeros, about 0.5 MiB on disk
                padding.write(bytes(2**20))
    assert path.stat().st_size < 2 * 2**20
    before = _peak_rss_mib()
    with pytest.raises(PgplugError, match="zip bomb"):
        pgplug.load(path)
    assert _peak_rss_mib() - before < 100


def test_a_huge_data_entry_is_refused(clean_zip: Path, tmp_path) -> None:
    path = tmp_path / "big.zip"
    with zipfile.ZipFile(clean_zip) as source, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in source.namelist():
            content = source.read(name)
            archive.writestr(name, content + b" " * (64 * 2**20) if name == "data" else content)
    with pytest.raises(PgplugError, match="'data' entry decompresses"):
        model_zip.read_zip(path)


def test_yaml_aliases_that_expand_past_the_bound_are_refused(tmp_path) -> None:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    for previous, name in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{previous}"] * 9) + "]")
    text = "\n".join(lines)
    assert len(text) < 500
    with pytest.raises(PgplugError, match="aliases"):
        yaml_text.load(text, yaml.SafeLoader, "bomb")
    with pytest.raises(PgplugError, match="aliases"):
        yaml_text.load("x: &a [*a]", yaml.SafeLoader, "self-reference")
    shared = "a: &a [1, 2]\nb: [*a, *a, *a]"
    assert yaml_text.load(shared, yaml.SafeLoader, "small") == {"a": [1, 2], "b": [[1, 2]] * 3}


def test_a_yaml_bomb_config_ends_in_one_line(tmp_path, capsys) -> None:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    for previous, name in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{previous}"] * 9) + "]")
    conf = tmp_path / "bomb.yml"
    conf.write_text("\n".join(lines))
    before = _peak_rss_mib()
    assert main(["train", "--algo", "a2c", "--env", "CartPole-v1", "-conf", str(conf), "-f", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "aliases" in err[0] and len(err[0]) < 300
    assert _peak_rss_mib() - before < 100
