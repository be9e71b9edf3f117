"""Configs, hyperparameter parsing and env building: the data side of ``pgplug train``."""

from __future__ import annotations

import importlib.resources
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch as th
from stable_baselines3.common.sb2_compat.rmsprop_tf_like import RMSpropTFLike
from stable_baselines3.common.torch_layers import NatureCNN
from stable_baselines3.common.vec_env import VecFrameStack, VecNormalize, VecTransposeImage

from pgplug.contracts.registries import get_host
from pgplug.errors import PgplugError
from pgplug.interop import config as cfg
from pgplug.interop.compat import saved_statistics
from pgplug.runtime.envs import EnvSpec, check_atari_rom, check_env_id, is_atari, run_name

ENTRIES = {"CartPole-v1": {"n_envs": 8}, "atari": {"n_envs": 16}, "default": {"n_envs": 1}}


# -- config lookup -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env_id", "atari", "expected"),
    [
        ("CartPole-v1", False, ("CartPole-v1", {"n_envs": 8})),
        ("ALE/Pong-v5", True, ("atari", {"n_envs": 16})),
        ("PongNoFrameskip-v4", True, ("atari", {"n_envs": 16})),
        ("Acrobot-v1", False, ("default", {"n_envs": 1})),
    ],
)
def test_select_entry_prefers_env_then_atari_then_default(env_id, atari, expected):
    assert cfg.select_entry(ENTRIES, env_id, atari) == expected


def test_select_entry_without_default_is_empty():
    assert cfg.select_entry({"CartPole-v1": {"n_envs": 8}}, "Acrobot-v1", False) == (None, {})
    # An Atari id with no atari entry falls back to default, and a non-Atari id never takes `atari`.
    assert cfg.select_entry({"atari": {"a": 1}, "default": {"d": 1}}, "Acrobot-v1", False) == ("default", {"d": 1})


def test_builtin_a2c_config_matches_the_zoo():
    entries = cfg.load_config_file(cfg.builtin_config_path("a2c"))
    assert entries["CartPole-v1"] == {"n_envs": 8, "n_timesteps": 5e5, "policy": "MlpPolicy", "ent_coef": 0.0}
    atari = entries["atari"]
    assert (atari["n_envs"], atari["frame_stack"], atari["policy"], atari["n_timesteps"]) == (16, 4, "CnnPolicy", 1e7)
    assert (atari["ent_coef"], atari["vf_coef"]) == (0.01, 0.25)
    assert atari["policy_kwargs"] == {"optimizer_class": "RMSpropTFLike", "optimizer_kwargs": {"eps": 1e-5}}
    assert entries["LunarLander-v3"]["learning_rate"] == "lin_0.00083"
    assert entries["MountainCar-v0"]["normalize"] is True and entries["Acrobot-v1"]["normalize"] is True


def _builtin_entries():
    folder = importlib.resources.files("pgplug.configs")
    for resource in sorted(folder.iterdir(), key=lambda r: r.name):
        if resource.name.endswith(".yml"):
            for entry in cfg.load_config_file(Path(str(resource))):
                yield resource.name.removesuffix(".yml"), entry


@pytest.mark.parametrize(("algo", "entry"), list(_builtin_entries()))
def test_every_builtin_config_entry_is_valid_for_its_algorithm(algo, entry):
    cls = get_host().algorithms.get(algo)
    hyperparams = cfg.load_config_file(cfg.builtin_config_path(algo))[entry]
    run_config = cfg.prepare(cls, hyperparams, algo, atari=entry == "atari")
    assert run_config.n_timesteps is not None and run_config.n_timesteps > 0
    if "estimator" in hyperparams:
        cls.resolve_estimator(hyperparams["estimator"], hyperparams.get("estimator_kwargs"))


def test_load_config_file_rejects_bad_files(tmp_path):
    bad_yaml, not_nested, missing = tmp_path / "a.yml", tmp_path / "b.yml", tmp_path / "missing.yml"
    bad_yaml.write_text("CartPole-v1: {n_envs: [\n")
    not_nested.write_text("CartPole-v1: 8\n")
    with pytest.raises(PgplugError, match="is not valid YAML"):
        cfg.load_config_file(bad_yaml)
    with pytest.raises(PgplugError, match=r"entry 'CartPole-v1' .* must be a mapping"):
        cfg.load_config_file(not_nested)
    with pytest.raises(PgplugError, match="cannot read config file"):
        cfg.load_config_file(missing)


# -- YAML values ---------------------------------------------------------------------------------


def test_parse_assignments_reads_yaml_values():
    parsed = cfg.parse_assignments(
        [
            "policy_kwargs={net_arch: [64, 64], activation_fn: tanh}",
            "learning_rate=1e-3",
            "n_timesteps=1e5",
            "gamma=0.995",
            "normalize=true",
            "n_steps:8",  # the zoo's key:value form
            "estimator=gae",
            "max_grad_norm=null",
        ]
    )
    assert parsed == {
        "policy_kwargs": {"net_arch": [64, 64], "activation_fn": "tanh"},
        "learning_rate": 0.001,
        "n_timesteps": 100000.0,
        "gamma": 0.995,
        "normalize": True,
        "n_steps": 8,
        "estimator": "gae",
        "max_grad_norm": None,
    }
    assert isinstance(parsed["n_steps"], int)


def test_zoo_python_strings_are_read_as_data_not_evaluated():
    parsed = cfg.parse_assignments(["policy_kwargs=dict(net_arch=[64, 64], activation_fn=nn.ReLU)"])
    assert parsed == {"policy_kwargs": "dict(net_arch=[64, 64], activation_fn=nn.ReLU)"}  # recorded as written
    assert cfg.resolve_policy_kwargs(parsed["policy_kwargs"]) == {"net_arch": [64, 64], "activation_fn": th.nn.ReLU}
    with pytest.raises(PgplugError, match=r"policy_kwargs 'dict\(net_arch=os.getcwd\(\)\)': 'os.getcwd\(\)' is a call"):
        cfg.resolve_policy_kwargs("dict(net_arch=os.getcwd())")
    with pytest.raises(PgplugError, match=r"policy_kwargs must be a mapping .*\[64, 64\]"):
        cfg.resolve_policy_kwargs("[64, 64]")


@pytest.mark.parametrize("item", ["n_steps", "=5", "1x=2"])
def test_parse_assignments_rejects_malformed_items(item):
    with pytest.raises(PgplugError, match="is not of the form key=value"):
        cfg.parse_assignments([item])


def test_parse_value_reports_bad_yaml():
    with pytest.raises(PgplugError, match="cannot parse value '\\{a: \\[1' as YAML"):
        cfg.parse_value("{a: [1")


# -- schedules -----------------------------------------------------------------------------------


def test_linear_schedule_string_decays_to_zero():
    schedule = cfg.parse_schedule("learning_rate", "lin_7e-4")
    assert [schedule(p) for p in (1.0, 0.5, 0.0)] == pytest.approx([7e-4, 3.5e-4, 0.0])
    restored = pickle.loads(pickle.dumps(schedule))  # A3C workers and model zips pickle it
    assert restored(0.25) == pytest.approx(1.75e-4)


def test_schedule_numbers_and_errors():
    assert cfg.parse_schedule("learning_rate", 3) == 3.0
    assert isinstance(cfg.parse_schedule("learning_rate", 3), float)
    for bad in ("fast", "lin_x", "exp_1e-3", True, [1e-3]):
        with pytest.raises(PgplugError, match="learning_rate must be a number or a linear schedule"):
            cfg.parse_schedule("learning_rate", bad)


# -- class names ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "name", "expected"),
    [
        ("activation_fn", "tanh", th.nn.Tanh),
        ("activation_fn", "ReLU", th.nn.ReLU),
        ("activation_fn", "nn.ELU", th.nn.ELU),
        ("activation_fn", "torch.nn.SiLU", th.nn.SiLU),
        ("optimizer_class", "RMSpropTFLike", RMSpropTFLike),
        ("optimizer_class", "stable_baselines3.common.sb2_compat.rmsprop_tf_like.RMSpropTFLike", RMSpropTFLike),
        ("optimizer_class", "adam", th.optim.Adam),
        ("features_extractor_class", "NatureCNN", NatureCNN),
    ],
)
def test_resolve_class_by_short_name_or_dotted_path(key, name, expected):
    assert cfg.resolve_class(key, name) is expected


@pytest.mark.parametrize(
    ("key", "name", "message"),
    [
        ("activation_fn", "swish", "unknown activation_fn 'swish'; short names: tanh, relu"),
        ("activation_fn", "os.system", "activation_fn 'os.system' is not a subclass of torch.nn.Module"),
        ("activation_fn", "subprocess.Popen", "is not a subclass of torch.nn.Module"),
        ("optimizer_class", "torch.nn.Tanh", "is not a subclass of torch.optim.Optimizer"),
        ("optimizer_class", "no_such_module.Opt", "cannot import 'no_such_module'"),
        ("optimizer_class", "torch.optim.Nope", "module 'torch.optim' has no attribute 'Nope'"),
        ("activation_fn", 3, "activation_fn must be a class name or a dotted path"),
    ],
)
def test_resolve_class_refuses_what_is_not_whitelisted(key, name, message):
    with pytest.raises(PgplugError, match=message.replace("(", r"\(")):
        cfg.resolve_class(key, name)


def test_resolve_policy_kwargs_resolves_only_class_keys():
    resolved = cfg.resolve_policy_kwargs(
        {"net_arch": {"pi": [32], "vf": [32]}, "activation_fn": "tanh", "optimizer_kwargs": {"eps": 1e-5}}
    )
    assert resolved == {
        "net_arch": {"pi": [32], "vf": [32]},
        "activation_fn": th.nn.Tanh,
        "optimizer_kwargs": {"eps": 1e-5},
    }


# -- keys ----------------------------------------------------------------------------------------


def test_unknown_key_names_the_key_and_the_valid_ones():
    a2c = get_host().algorithms.get("a2c")
    with pytest.raises(PgplugError) as info:
        cfg.check_keys(a2c, {"n_steps": 8, "clip_range": 0.2}, "a2c")
    message = str(info.value)
    assert message.startswith("unknown hyperparameter 'clip_range' for a2c; valid keys: ")
    valid = message.split("valid keys: ")[1].split(", ")
    assert valid == cfg.valid_keys(a2c)
    assert {"n_steps", "learning_rate", "estimator", "estimator_kwargs", "policy_kwargs", *cfg.ENV_KEYS} <= set(valid)
    assert not {"env", "seed", "_init_setup_model"} & set(valid)


def test_flag_keys_point_to_their_flag():
    a2c = get_host().algorithms.get("a2c")
    with pytest.raises(PgplugError, match="'seed' is set with --seed, not as a hyperparameter"):
        cfg.check_keys(a2c, {"seed": 1}, "a2c")


def test_valid_keys_follow_kwargs_of_plugin_algorithms():
    a2c = get_host().algorithms.get("a2c")

    class Tweaked(a2c):
        def __init__(self, *args, clip_ratio: float = 0.2, **kwargs):
            super().__init__(*args, **kwargs)
            self.clip_ratio = clip_ratio

    keys = cfg.valid_keys(Tweaked)
    assert "clip_ratio" in keys and "n_steps" in keys and "rms_prop_eps" in keys


# -- prepare -------------------------------------------------------------------------------------


def test_prepare_splits_env_keys_from_constructor_arguments():
    a2c = get_host().algorithms.get("a2c")
    run_config = cfg.prepare(
        a2c,
        {
            "n_envs": 4,
            "n_timesteps": 1e4,
            "normalize": {"norm_reward": False},
            "gamma": 0.98,
            "env_wrapper": [{"gymnasium.wrappers.TimeLimit": {"max_episode_steps": 50}}],
            "learning_rate": "lin_1e-3",
            "policy_kwargs": {"activation_fn": "relu"},
        },
        "a2c",
    )
    assert (run_config.n_envs, run_config.n_timesteps, run_config.frame_stack) == (4, 10_000, None)
    assert run_config.normalize == {"norm_reward": False, "gamma": 0.98}
    assert run_config.env_wrappers == (("gymnasium.wrappers.TimeLimit", {"max_episode_steps": 50}),)
    kwargs = run_config.algorithm_kwargs
    assert set(kwargs) == {"policy", "gamma", "learning_rate", "policy_kwargs"}
    assert kwargs["policy"] == "MlpPolicy" and kwargs["policy_kwargs"] == {"activation_fn": th.nn.ReLU}
    assert kwargs["learning_rate"](0.5) == pytest.approx(5e-4)
    assert run_config.raw["learning_rate"] == "lin_1e-3"  # config.yml records the plain data


def test_prepare_atari_defaults_and_bad_values():
    a2c = get_host().algorithms.get("a2c")
    atari = cfg.prepare(a2c, {}, "a2c", atari=True)
    assert (atari.algorithm_kwargs["policy"], atari.frame_stack, atari.n_timesteps) == ("CnnPolicy", 4, None)
    for hyperparams, message in [
        ({"n_envs": 0}, "n_envs must be a positive integer, got 0"),
        ({"normalize": "[1]"}, "normalize must be true, false or a mapping"),
        ({"normalize": "dict(norm_obs=nn.ReLU)"}, "names no value: normalize holds data only"),
        ({"normalize": "dict(norm_ob=True)"}, "unknown normalize option 'norm_ob'"),
        ({"env_kwargs": "[1]"}, "env_kwargs must be a mapping"),
        ({"monitor_kwargs": {"filename": "x"}}, "monitor_kwargs key 'filename' is not for Monitor"),
        ({"vec_env_wrapper": "gymnasium.wrappers.TimeLimit"}, "is not a subclass of stable_baselines3.common.vec_env"),
        ({"vec_env_wrapper": {"stable_baselines3.common.vec_env.VecFrameStack": {}}}, "missing a required argument"),
        ({"callback": "os.system"}, "callback 'os.system' is not one of stable_baselines3.*"),
        ({"callback": {"stable_baselines3.common.callbacks.StopTrainingOnMaxEpisodes": {"n": 1}}}, "unknown callback"),
        ({"policy": "LstmPolicy"}, "unknown policy 'LstmPolicy'; valid policies: MlpPolicy, CnnPolicy"),
        ({"env_wrapper": "gymnasium.wrappers.Nope"}, "has no attribute 'Nope'"),
        ({"estimator_kwargs": [0.9]}, "estimator_kwargs must be a mapping"),
    ]:
        with pytest.raises(PgplugError, match=message.replace("(", r"\(")):
            cfg.prepare(a2c, hyperparams, "a2c")


def test_prepare_reads_the_zoo_env_keys():
    a2c = get_host().algorithms.get("a2c")
    run_config = cfg.prepare(
        a2c,
        {
            "normalize": "{'norm_obs': True, 'norm_reward': False}",
            "gamma": 0.9,
            "env_kwargs": "dict(max_episode_steps=50)",
            "eval_env_kwargs": {"max_episode_steps": 20},
            "monitor_kwargs": {"info_keywords": ["TimeLimit.truncated"]},
            "vec_env_wrapper": [
                "stable_baselines3.common.vec_env.VecMonitor",
                {"stable_baselines3.common.vec_env.VecFrameStack": {"n_stack": 2}},
            ],
            "callback": {"stable_baselines3.common.callbacks.StopTrainingOnMaxEpisodes": {"max_episodes": 3}},
            "gae_lambda": 0.9,
        },
        "a2c",
    )
    assert run_config.normalize == {"norm_obs": True, "norm_reward": False, "gamma": 0.9}
    assert run_config.env_kwargs == {"max_episode_steps": 50} and run_config.eval_env_kwargs == {
        "max_episode_steps": 20
    }
    assert run_config.monitor_kwargs == {"info_keywords": ["TimeLimit.truncated"]}
    assert run_config.vec_env_wrappers == (
        ("stable_baselines3.common.vec_env.VecMonitor", {}),
        ("stable_baselines3.common.vec_env.VecFrameStack", {"n_stack": 2}),
    )
    (callback,) = cfg.build_callbacks(run_config.callbacks)
    assert type(callback).__name__ == "StopTrainingOnMaxEpisodes" and callback.max_episodes == 3
    assert set(run_config.algorithm_kwargs) == {"policy", "gamma", "gae_lambda"}


def test_own_callbacks_need_the_command_line_trust(tmp_path, monkeypatch):
    (tmp_path / "my_callbacks.py").write_text(
        "from stable_baselines3.common.callbacks import BaseCallback\n"
        "class Stop(BaseCallback):\n"
        "    def _on_step(self):\n"
        "        return False\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    a2c = get_host().algorithms.get("a2c")
    with pytest.raises(PgplugError, match=r"name it on the command line: --trust-callback my_callbacks.Stop"):
        cfg.prepare(a2c, {"callback": "my_callbacks.Stop"}, "a2c")
    trusted = cfg.prepare(a2c, {"callback": ["my_callbacks.Stop"]}, "a2c", trusted_callbacks=["my_callbacks.Stop"])
    assert [type(c).__name__ for c in cfg.build_callbacks(trusted.callbacks)] == ["Stop"]


def test_env_kwargs_flag_reads_python_literals_and_plain_words():
    parsed = cfg.parse_kwargs_flag(
        ["max_episode_steps:100", "continuous:True", "render_mode:rgb_array", "goal=[1, 2.5]", "x:'a b'", "y:null"],
        "--env-kwargs",
    )
    assert parsed == {
        "max_episode_steps": 100,
        "continuous": True,
        "render_mode": "rgb_array",
        "goal": [1, 2.5],
        "x": "a b",
        "y": None,
    }
    with pytest.raises(PgplugError, match=r"--env-kwargs x .*__import__\('os'\)\" is a call other than dict"):
        cfg.parse_kwargs_flag(["x:__import__('os')"], "--env-kwargs")
    with pytest.raises(PgplugError, match="--env-kwargs 'x' is not of the form key:value"):
        cfg.parse_kwargs_flag(["x"], "--env-kwargs")


def test_env_spec_applies_vec_env_wrappers_before_normalize_and_monitor_kwargs():
    from stable_baselines3.common.vec_env import VecCheckNan

    spec = EnvSpec(
        "CartPole-v1",
        n_envs=2,
        seed=0,
        normalize={},
        frame_stack=2,
        vec_env_wrappers=(("stable_baselines3.common.vec_env.VecCheckNan", {"raise_exception": True}),),
        monitor_kwargs={"info_keywords": ["is_success"]},
    )
    env = spec.make_vec_env()
    try:
        assert isinstance(env, VecFrameStack) and isinstance(env.venv, VecNormalize)
        assert isinstance(env.venv.venv, VecCheckNan)  # the zoo's order: vec_env_wrapper, VecNormalize, frame stack
        assert env.venv.venv.raise_exception is True
        assert env.get_attr("info_keywords") == [("is_success",)] * 2  # Monitor's, as a tuple
    finally:
        env.close()
    assert EnvSpec.from_json(spec.to_json()) == spec


# -- env building --------------------------------------------------------------------------------


def test_unknown_env_suggests_close_ids():
    with pytest.raises(PgplugError, match=r"unknown env 'CartPol-v1'; did you mean: CartPole-v1"):
        check_env_id("CartPol-v1")
    assert check_env_id("CartPole-v1") == "CartPole-v1"


def test_atari_detection_and_names():
    assert check_env_id("ALE/Pong-v5") == "ALE/Pong-v5"
    assert is_atari("ALE/Pong-v5") and is_atari("PongNoFrameskip-v4") and not is_atari("CartPole-v1")
    assert run_name("ALE/Pong-v5") == "ALE-Pong-v5" and run_name("CartPole-v1") == "CartPole-v1"
    check_atari_rom("ALE/Pong-v5")  # the ROMs ship with ale-py


def test_missing_atari_rom_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("ALE_ROMS_DIR", str(tmp_path))
    with pytest.raises(PgplugError, match=r"the Atari ROM for 'ALE/Pong-v5' is missing .*pong\.bin"):
        check_atari_rom("ALE/Pong-v5")


def test_env_spec_is_a_picklable_factory():
    spec = EnvSpec(
        "CartPole-v1", n_envs=3, seed=5, wrappers=(("gymnasium.wrappers.TimeLimit", {"max_episode_steps": 7}),)
    )
    env = pickle.loads(pickle.dumps(spec))(2, 11)  # the A3C worker protocol: factory(n_envs, seed)
    try:
        assert env.num_envs == 2
        first = env.reset()
        for _ in range(7):
            _, _, dones, infos = env.step(np.zeros(2, dtype=int))
        assert dones.all() and all(info["TimeLimit.truncated"] for info in infos)  # the wrapper applies
    finally:
        env.close()
    again = spec(2, 11)
    try:
        np.testing.assert_array_equal(again.reset(), first)  # same seed, same first observations
    finally:
        again.close()


def test_env_spec_normalization_and_monitor_files(tmp_path):
    spec = EnvSpec("CartPole-v1", n_envs=2, seed=0, normalize={"gamma": 0.9})
    env = spec.make_vec_env(monitor_dir=tmp_path)
    try:
        assert isinstance(env, VecNormalize) and env.training and env.gamma == 0.9
        env.reset()
        for _ in range(30):
            env.step(np.zeros(2, dtype=int))
        env.save(str(tmp_path / "vecnormalize.pkl"))
    finally:
        env.close()
    assert sorted(p.name for p in tmp_path.glob("*.monitor.csv")) == ["0.monitor.csv", "1.monitor.csv"]
    statistics = saved_statistics(tmp_path / "vecnormalize.pkl")
    evaluation = spec.make_vec_env(n_envs=1, saved_statistics=statistics, training=False)
    try:
        assert not evaluation.training and not evaluation.norm_reward
        np.testing.assert_allclose(evaluation.obs_rms.mean, env.obs_rms.mean)  # the saved statistics
    finally:
        evaluation.close()


def test_atari_env_spec_stacks_frames_channel_first():
    spec = EnvSpec("ALE/Pong-v5", n_envs=1, seed=0, frame_stack=4, atari=True)
    env = spec.make_vec_env()
    try:
        assert isinstance(env, VecTransposeImage) and isinstance(env.venv, VecFrameStack)
        assert env.observation_space.shape == (4, 84, 84)
        ale = env.venv.venv.envs[0].unwrapped
        assert ale._frameskip == 1  # AtariWrapper does the skipping (and max-pooling) for v5 ids
    finally:
        env.close()
