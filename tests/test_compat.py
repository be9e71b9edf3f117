"""pgplug.load and friends: SB3 zips of every kind and era in, predicting models out; pgplug zips in SB3."""

from __future__ import annotations

import base64
import importlib.util
import json
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import stable_baselines3 as sb3
import torch as th
from fixtures_gym_era import build_gym_era_files
from gymnasium import spaces
from sb3_contrib import RecurrentPPO
from stable_baselines3.common.env_util import make_vec_env

import pgplug
from pgplug.errors import PgplugError, UnknownNameError
from pgplug.interop import compat
from pgplug.interop.evaluation import evaluate

OBS = np.random.default_rng(0).uniform(-0.5, 0.5, size=(32, 4)).astype(np.float32)
CARTPOLE_OBS = spaces.Box(
    np.array([-4.8, -np.inf, -0.41887903, -np.inf], dtype=np.float32),
    np.array([4.8, np.inf, 0.41887903, np.inf], dtype=np.float32),
    dtype=np.float32,
)


def probabilities(model, obs: np.ndarray = OBS) -> np.ndarray:
    with th.no_grad():
        return model.policy.get_distribution(model.policy.obs_to_tensor(obs)[0]).distribution.probs.numpy()


def actions(model, obs: np.ndarray = OBS) -> np.ndarray:
    return model.predict(obs, deterministic=True)[0]


# -- fixtures: files of every kind --------------------------------------------------------------


@pytest.fixture(scope="module")
def gym_era(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    root = tmp_path_factory.mktemp("gym_era")
    return root, build_gym_era_files(root)


@pytest.fixture(scope="module")
def pgplug_zips(tmp_path_factory) -> dict[str, tuple[Path, object]]:
    """REINFORCE, A2C (with a gae estimator) and A3C (serial backend), trained a little and saved."""
    root = tmp_path_factory.mktemp("pgplug_zips")
    models = {
        "reinforce": pgplug.REINFORCE("MlpPolicy", "CartPole-v1", seed=0, device="cpu").learn(300),
        "a2c": pgplug.A2C(
            "MlpPolicy", "CartPole-v1", estimator="gae", estimator_kwargs={"gae_lambda": 0.9}, seed=0, device="cpu"
        ).learn(300),
        "a3c": pgplug.A3C("MlpPolicy", "CartPole-v1", n_workers=1, backend="serial", seed=0, device="cpu").learn(300),
    }
    files = {}
    for name, model in models.items():
        model.save(root / f"pgplug_{name}")
        files[name] = (root / f"pgplug_{name}.zip", model)
    return files


@pytest.fixture(scope="module")
def sb3_zips(tmp_path_factory) -> dict[str, tuple[Path, object]]:
    """SB3 A2C, PPO (trained a little), RecurrentPPO and an off-policy DQN, saved."""
    root = tmp_path_factory.mktemp("sb3_zips")
    models = {
        "sb3_a2c": sb3.A2C("MlpPolicy", "CartPole-v1", gae_lambda=0.95, seed=0, device="cpu").learn(300),
        "ppo": sb3.PPO("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=64, seed=0, device="cpu").learn(64),
        "ppo_lstm": RecurrentPPO("MlpLstmPolicy", "CartPole-v1", n_steps=32, batch_size=32, seed=0, device="cpu"),
        "dqn": sb3.DQN("MlpPolicy", "CartPole-v1", buffer_size=100, seed=0, device="cpu"),
    }
    files = {}
    for name, model in models.items():
        model.save(root / name)
        files[name] = (root / f"{name}.zip", model)
    return files


# -- gym-era files ------------------------------------------------------------------------------


def test_the_test_process_has_no_gym_and_plain_sb3_cannot_open_the_gym_era_files(gym_era) -> None:
    root, _ = gym_era
    assert importlib.util.find_spec("gym") is None
    assert importlib.util.find_spec("legacy_zoo") is None
    data = json.loads(zipfile.ZipFile(root / "gym_era_a2c.zip").read("data"))
    assert data["observation_space"][":type:"] == "<class 'gym.spaces.box.Box'>"
    assert data["action_space"][":type:"] == "<class 'gym.spaces.discrete.Discrete'>"
    with pytest.raises(ModuleNotFoundError, match="No module named 'gym'"):
        sb3.A2C.load(root / "gym_era_a2c.zip")
    with pytest.raises(ModuleNotFoundError, match="No module named 'legacy_zoo'"):
        sb3.PPO.load(root / "gym_era_ppo.zip")
    with pytest.raises(ModuleNotFoundError, match="No module named 'gym'"):
        sb3.common.vec_env.VecNormalize.load(str(root / "gym_era_vecnormalize.pkl"), make_vec_env("CartPole-v1"))


def test_pgplug_loads_a_gym_era_a2c_and_predicts_as_the_original(gym_era) -> None:
    root, expected = gym_era
    model = pgplug.load(root / "gym_era_a2c.zip")
    assert type(model) is sb3.A2C
    assert model.observation_space == CARTPOLE_OBS and model.action_space == spaces.Discrete(2)
    assert type(model.observation_space) is spaces.Box
    np.testing.assert_allclose(expected["obs"], OBS)
    np.testing.assert_array_equal(actions(model), expected["a2c_actions"])
    np.testing.assert_allclose(probabilities(model), expected["a2c_probs"], rtol=0, atol=1e-7)


def test_gym_era_schedules_become_constants_from_the_saved_values(gym_era) -> None:
    root, expected = gym_era
    with pytest.warns(UserWarning, match=r"legacy_zoo\.LinearSchedule\) cannot be unpickled") as record:
        model = pgplug.load(root / "gym_era_ppo.zip", env=make_vec_env("CartPole-v1", n_envs=2, seed=0))
    messages = [str(w.message) for w in record if "cannot be unpickled" in str(w.message)]
    assert sorted(m.split(": ")[1].split(" ")[0] for m in messages) == ["clip_range", "learning_rate", "lr_schedule"]
    assert type(model) is sb3.PPO
    # The schedules' start values, which SB3 wrote in plain JSON beside the pickles.
    assert model.learning_rate == 3e-4 and model.lr_schedule(0.5) == 3e-4 and model.clip_range(0.5) == 0.25
    np.testing.assert_array_equal(actions(model), expected["ppo_actions"])
    np.testing.assert_allclose(probabilities(model), expected["ppo_probs"], rtol=0, atol=1e-7)
    before = [p.clone() for p in model.policy.parameters()]
    model.learn(128)
    assert any(not th.equal(a, b) for a, b in zip(before, model.policy.parameters()))


def test_unrebuildable_spaces_come_from_the_env_or_fail_naming_the_fix(gym_era, tmp_path) -> None:
    root, expected = gym_era
    broken = tmp_path / "unknown_space.zip"
    with zipfile.ZipFile(root / "gym_era_a2c.zip") as source, zipfile.ZipFile(broken, "w") as target:
        for item in source.infolist():
            content = source.read(item.filename)
            if item.filename == "data":
                data = json.loads(content)
                blob = base64.b64decode(data["observation_space"][":serialized:"])
                blob = blob.replace(b"gym.spaces.box", b"gym.spaces.bax")  # a gym space gymnasium never had
                data["observation_space"][":serialized:"] = base64.b64encode(blob).decode()
                content = json.dumps(data).encode()
            target.writestr(item, content)
    with pytest.raises(PgplugError, match=r"unknown_space\.zip: cannot rebuild its observation_space .* pass env="):
        pgplug.load(broken)
    model = pgplug.load(broken, env=make_vec_env("CartPole-v1"))
    assert model.observation_space == CARTPOLE_OBS
    np.testing.assert_array_equal(actions(model), expected["a2c_actions"])


def test_load_vecnormalize_reads_gym_era_statistics(gym_era, tmp_path) -> None:
    root, expected = gym_era
    venv = compat.load_vecnormalize(root / "gym_era_vecnormalize.pkl", make_vec_env("CartPole-v1", n_envs=3))
    assert venv.num_envs == 3 and type(venv.observation_space) is spaces.Box
    np.testing.assert_allclose(venv.normalize_obs(OBS), expected["normalized_obs"], rtol=0, atol=1e-6)
    with pytest.raises(PgplugError, match=r"gym_era_vecnormalize\.pkl does not fit the env"):
        compat.load_vecnormalize(root / "gym_era_vecnormalize.pkl", make_vec_env("Pendulum-v1"))
    (tmp_path / "text.pkl").write_text("not a pickle")
    with pytest.raises(PgplugError, match=r"text\.pkl is not a readable VecNormalize pickle"):
        compat.load_vecnormalize(tmp_path / "text.pkl", make_vec_env("CartPole-v1"))
    (tmp_path / "list.pkl").write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(PgplugError, match=r"list\.pkl holds a list, not a VecNormalize"):
        compat.load_vecnormalize(tmp_path / "list.pkl", make_vec_env("CartPole-v1"))


# -- which algorithm --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "cls_path"),
    [
        ("reinforce", "pgplug.plugins.reinforce.REINFORCE"),
        ("a2c", "pgplug.plugins.a2c.A2C"),
        ("a3c", "pgplug.plugins.a3c.algorithm.A3C"),
        ("sb3_a2c", "stable_baselines3.a2c.a2c.A2C"),
        ("ppo", "stable_baselines3.ppo.ppo.PPO"),
        ("ppo_lstm", "sb3_contrib.ppo_recurrent.ppo_recurrent.RecurrentPPO"),
    ],
)
def test_load_names_the_algorithm_and_returns_a_model_that_predicts_as_saved(
    name: str, cls_path: str, pgplug_zips, sb3_zips
) -> None:
    path, original = {**pgplug_zips, **sb3_zips}[name]
    info = compat.read_zip(path)
    assert compat.detect_algorithm(info) == name
    model = pgplug.load(path)
    assert f"{type(model).__module__}.{type(model).__name__}" == cls_path
    for key, value in original.policy.state_dict().items():
        assert th.equal(model.policy.state_dict()[key], value)
    np.testing.assert_array_equal(actions(model), actions(original))


def test_pgplug_zips_record_their_algorithm_and_estimator_as_json(pgplug_zips) -> None:
    data = compat.read_zip(pgplug_zips["a2c"][0]).data
    assert data["pgplug_algorithm"] == "a2c"
    assert data["estimator"] == {"name": "gae", "kwargs": {"gae_lambda": 0.9}}
    loaded = pgplug.load(pgplug_zips["a2c"][0])
    assert loaded.estimator.name == "gae" and loaded.estimator.gae_lambda == 0.9
    # The entry is what names a pgplug zip's algorithm. Without it, A2C's zip is SB3's A2C format (n_steps and
    # gae_lambda, which pgplug's A2C saves as SB3 does); for the others nothing is guessed.
    for name, (path, _) in pgplug_zips.items():
        info = compat.read_zip(path)
        del info.data["pgplug_algorithm"]
        assert compat.detect_algorithm(info) == ("sb3_a2c" if name == "a2c" else None)


# -- pgplug zips in SB3 -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["reinforce", "a2c", "a3c"])
@pytest.mark.both_paths
def test_sb3_a2c_loads_pgplug_zips_and_predicts_the_same(name: str, pgplug_zips) -> None:
    path, original = pgplug_zips[name]
    model = sb3.A2C.load(path)
    np.testing.assert_array_equal(actions(model), actions(original))
    np.testing.assert_array_equal(probabilities(model), probabilities(original))
    rewards, _ = evaluate_both(model, original)
    assert rewards[0] == rewards[1]


def evaluate_both(first, second) -> tuple[tuple[float, float], tuple[list[int], list[int]]]:
    a, b = evaluate(first, "CartPole-v1", n_episodes=2, seed=3), evaluate(second, "CartPole-v1", n_episodes=2, seed=3)
    return (a.mean, b.mean), (a.lengths, b.lengths)


SB3_ONLY = """
import sys, json
import numpy as np


class NoPgplug:
    def find_spec(self, name, path=None, target=None):
        if name == "pgplug" or name.startswith("pgplug."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)


sys.meta_path.insert(0, NoPgplug())
import stable_baselines3 as sb3

obs = np.asarray(json.loads(sys.argv[2]), dtype=np.float32)
files = json.loads(sys.argv[1])
out = {}
for name in ("reinforce", "a2c", "a3c"):
    out[name] = sb3.A2C.load(files[name]).predict(obs, deterministic=True)[0].tolist()
print(json.dumps(out))
"""


def test_sb3_without_pgplug_installed_opens_pgplug_zips(pgplug_zips) -> None:
    files = {name: str(path) for name, (path, _) in pgplug_zips.items()}
    result = subprocess.run(
        [sys.executable, "-c", SB3_ONLY, json.dumps(files), json.dumps(OBS.tolist())],
        check=True,
        capture_output=True,
        text=True,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )
    out = json.loads(result.stdout.strip().splitlines()[-1])
    for name, (_, original) in pgplug_zips.items():
        np.testing.assert_array_equal(out[name], actions(original))


def test_sb3_continues_training_pgplug_zips_as_its_a2c(pgplug_zips) -> None:
    env = make_vec_env("CartPole-v1", n_envs=2, seed=0)
    model = sb3.A2C.load(pgplug_zips["a2c"][0], env=env, gae_lambda=0.9)
    assert (model.n_steps, model.gae_lambda, type(model.policy.optimizer)) == (5, 0.9, th.optim.RMSprop)
    saved_updates = model._n_updates
    model.learn(100)
    assert model.num_timesteps == 100 and model._n_updates == saved_updates + 10
    # REINFORCE saves max_grad_norm=None, which SB3's A2C cannot clip with: pass a number.
    model = sb3.A2C.load(pgplug_zips["reinforce"][0], env=env, max_grad_norm=0.5)
    assert type(model.policy.optimizer) is th.optim.Adam
    model.learn(100)
    assert model.num_timesteps == 100


# -- SB3 zips in pgplug ------------------------------------------------------------------------


def test_pgplug_a2c_opens_sb3_a2c_zips_directly_and_learns_on(sb3_zips) -> None:
    path, original = sb3_zips["sb3_a2c"]
    direct = pgplug.A2C.load(path, env=make_vec_env("CartPole-v1", n_envs=2, seed=0))
    np.testing.assert_array_equal(probabilities(direct), probabilities(original))
    # SB3's gae_lambda=0.95 means GAE(0.95), in A2C.load as in pgplug.load
    assert (direct.estimator.name, direct.estimator.gae_lambda, direct.gae_lambda) == ("gae", 0.95, 0.95)
    converted = pgplug.load(path, algo="a2c")
    assert type(converted) is pgplug.A2C
    assert (converted.estimator.name, converted.estimator.gae_lambda) == ("gae", 0.95)
    np.testing.assert_array_equal(actions(converted), actions(original))
    saved_updates = direct._n_updates
    direct.learn(100)
    assert direct.num_timesteps == 100 and direct._n_updates == saved_updates + 10


# -- bad files and arguments: one clear line each ---------------------------------------------


def corrupt_copy(source: Path, target: Path) -> Path:
    content = bytearray(source.read_bytes())
    start = content.index(b"policy.pth") + 200  # inside the stored (uncompressed) weights
    content[start : start + 8] = bytes(b ^ 0xFF for b in content[start : start + 8])
    target.write_bytes(bytes(content))
    return target


def rewrite_data(source: Path, target: Path, edit) -> Path:
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for item in old.infolist():
            content = old.read(item.filename)
            if item.filename == "data":
                content = edit(content)
                if content is None:
                    continue
            new.writestr(item, content)
    return target


def drop_keys(*keys: str):
    def edit(content: bytes) -> bytes:
        data = json.loads(content)
        for key in keys:
            del data[key]
        return json.dumps(data).encode()

    return edit


BAD_FILES = {
    "missing": (lambda src, tmp: tmp / "nothing.zip", r"^no such model file: .*nothing\.zip$"),
    "directory": (lambda src, tmp: tmp, r"is a directory, not a model zip$"),
    "not_a_zip": (
        lambda src, tmp: (tmp / "notes.zip").write_text("hello") and tmp / "notes.zip",
        r"notes\.zip is not a zip archive",
    ),
    "truncated": (
        lambda src, tmp: (tmp / "cut.zip").write_bytes(src.read_bytes()[:3000]) and tmp / "cut.zip",
        r"cut\.zip is a truncated or corrupt zip archive",
    ),
    "corrupt": (
        lambda src, tmp: corrupt_copy(src, tmp / "flipped.zip"),
        r"flipped\.zip is corrupt: archive member 'policy\.pth' fails its CRC check",
    ),
    "no_data": (
        lambda src, tmp: rewrite_data(src, tmp / "nodata.zip", lambda c: None),
        r"nodata\.zip has no 'data' entry",
    ),
    "bad_json": (
        lambda src, tmp: rewrite_data(src, tmp / "badjson.zip", lambda c: c[:-10]),
        r"badjson\.zip is corrupt: its 'data' entry is not valid JSON",
    ),
    "ambiguous": (
        lambda src, tmp: rewrite_data(src, tmp / "plain.zip", drop_keys("gae_lambda", "n_steps")),
        r"cannot tell which algorithm saved .*plain\.zip .*pass algo=, one of: a2c, a3c, ppo, ppo_lstm, reinforce",
    ),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_files_fail_in_one_line_naming_the_path(case: str, sb3_zips, tmp_path) -> None:
    make, message = BAD_FILES[case]
    path = make(sb3_zips["sb3_a2c"][0], tmp_path)
    with pytest.raises(PgplugError, match=message) as info:
        pgplug.load(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_wrong_algorithms_fail_in_one_line(sb3_zips, pgplug_zips) -> None:
    dqn = sb3_zips["dqn"][0]
    with pytest.raises(PgplugError, match=r"dqn\.zip holds a stable_baselines3\.dqn\.policies\.DQNPolicy policy"):
        pgplug.load(dqn)
    with pytest.raises(PgplugError, match=r"ppo\.zip was saved by ppo, so algo='a3c' cannot open it; valid here: ppo"):
        pgplug.load(sb3_zips["ppo"][0], algo="a3c")
    with pytest.raises(PgplugError, match=r"was saved by reinforce, so algo='sb3_a2c' cannot open it"):
        pgplug.load(pgplug_zips["reinforce"][0], algo="sb3_a2c")
    with pytest.raises(UnknownNameError, match=r"unknown algo 'trpo'; valid algos: a2c, a3c, ppo, ppo_lstm"):
        pgplug.load(sb3_zips["ppo"][0], algo="trpo")
    with pytest.raises(PgplugError, match=r"cannot load .*ppo\.zip as ppo: Observation spaces do not match"):
        pgplug.load(sb3_zips["ppo"][0], env=make_vec_env("MountainCar-v0"))


def test_ambiguous_files_open_with_an_explicit_algo(sb3_zips, tmp_path) -> None:
    path = rewrite_data(sb3_zips["sb3_a2c"][0], tmp_path / "plain.zip", drop_keys("gae_lambda", "n_steps"))
    model = pgplug.load(path, algo="sb3_a2c")
    np.testing.assert_array_equal(actions(model), actions(sb3_zips["sb3_a2c"][1]))


# -- warm start across libraries ---------------------------------------------------------------


@pytest.fixture(scope="module")
def expert_path() -> Path:
    from cartpole_expert import cartpole_expert_path

    return cartpole_expert_path()


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["a2c", "a3c"])
def test_warm_start_from_sb3_ppo_copies_the_weights_and_training_goes_on(algo: str, expert_path: Path) -> None:
    expert = pgplug.load(expert_path)
    policy_class, policy_kwargs = compat.policy_architecture(expert_path)
    assert policy_class is sb3.common.policies.ActorCriticPolicy
    common = dict(learning_rate=1e-4, policy_kwargs=policy_kwargs, seed=1, device="cpu")
    if algo == "a2c":
        model = pgplug.A2C(policy_class, make_vec_env("CartPole-v1", n_envs=8, seed=1), **common)
    else:
        model = pgplug.A3C(policy_class, "CartPole-v1", n_workers=1, n_envs_per_worker=8, backend="serial", **common)
    compat.warm_start(model, expert_path)
    for key, value in expert.policy.state_dict().items():
        assert th.equal(model.policy.state_dict()[key], value)
    expert_score = evaluate(expert, "CartPole-v1", n_episodes=5, seed=10).mean
    assert expert_score >= 475  # the analytic expert (tests/cartpole_expert.py): 500 on any CPU
    assert evaluate(model, "CartPole-v1", n_episodes=5, seed=10).mean == expert_score
    model.learn(2_000)
    assert any(not th.equal(model.policy.state_dict()[k], v) for k, v in expert.policy.state_dict().items())
    # 500 after the 2,000 steps for seeds 1-5 and few-ulp perturbations of the copied weights (A2C and A3C):
    # the expert's actor is saturated, so a small learning rate barely moves what it does.
    assert evaluate(model, "CartPole-v1", n_episodes=5, seed=10).mean >= 0.8 * expert_score


def test_warm_start_refuses_a_different_architecture_or_spaces(sb3_zips) -> None:
    path = sb3_zips["ppo"][0]
    wide = pgplug.A2C("MlpPolicy", "CartPole-v1", policy_kwargs={"net_arch": [32]}, device="cpu")
    with pytest.raises(PgplugError, match=r"cannot warm-start from .*ppo\.zip: its policy architecture differs"):
        compat.warm_start(wide, path)
    other = pgplug.A2C("MlpPolicy", "MountainCar-v0", device="cpu")
    with pytest.raises(PgplugError, match=r"cannot warm-start from .*ppo\.zip: its spaces"):
        compat.warm_start(other, path)
    plain = pgplug.A2C("MlpPolicy", "CartPole-v1", device="cpu")
    with pytest.raises(PgplugError, match="its policy architecture differs"):
        compat.warm_start(plain, sb3_zips["ppo_lstm"][0])
