"""pgplug.A2C as a drop-in for stable_baselines3.A2C: every policy form SB3 accepts, update for update, and SB3's
``OnPolicyAlgorithm`` members with SB3's behaviour. (SB3's own test suite also runs against pgplug.A2C:
``make sb3-suite``, part of ``make test``.)"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import stable_baselines3 as sb3
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import DictRolloutBuffer, RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.envs import FakeImageEnv, SimpleMultiObsEnv
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, FlattenExtractor

import pgplug
from pgplug.errors import PgplugError

N_ENVS, N_STEPS, UPDATES = 2, 5, 8
BUFFER_FIELDS = ("observations", "actions", "rewards", "episode_starts", "values", "log_probs", "advantages", "returns")


class TinyExtractor(BaseFeaturesExtractor):
    """A user's own features extractor: one linear layer and a tanh."""

    def __init__(self, observation_space: spaces.Box, features_dim: int = 16) -> None:
        super().__init__(observation_space, features_dim)
        self.net = th.nn.Sequential(
            th.nn.Flatten(), th.nn.Linear(int(np.prod(observation_space.shape)), 16), th.nn.Tanh()
        )

    def forward(self, observations: th.Tensor) -> th.Tensor:
        return self.net(observations)


class BatchNormExtractor(FlattenExtractor):
    """Batch norm over the observations: eval mode in the rollout, train mode in the update (as in SB3)."""

    def __init__(self, observation_space: spaces.Box) -> None:
        super().__init__(observation_space)
        self.norm = th.nn.BatchNorm1d(self.features_dim)

    def forward(self, observations: th.Tensor) -> th.Tensor:
        return self.norm(super().forward(observations))


class MultiDimActions(gym.Env):
    """Box(2, 2) actions: SB3 scores them as 4 numbers."""

    observation_space = spaces.Box(-1, 1, (3,), np.float32)
    action_space = spaces.Box(-1, 1, (2, 2), np.float32)

    def _obs(self) -> np.ndarray:
        return self.np_random.uniform(-1, 1, 3).astype(np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.t += 1
        return self._obs(), float(-np.square(action).sum()), False, self.t >= 7, {}


def float_images() -> gym.Env:
    """Channels-first float images in [0, 1], which a CnnPolicy takes with normalize_images=False."""
    env = FakeImageEnv(screen_height=36, screen_width=36, n_channels=1, channel_first=True)
    env.observation_space.seed(0)  # it samples its observations from the space, which reset(seed) leaves alone
    low, high = np.zeros((1, 36, 36), np.float32), np.ones((1, 36, 36), np.float32)
    return gym.wrappers.TransformObservation(
        env, lambda obs: (obs / 255.0).astype(np.float32), spaces.Box(low, high, dtype=np.float32)
    )


def multi_obs() -> gym.Env:
    """An image and a vector in a dict. It draws from numpy's global generator, which SB3's buffer also draws from
    (to shuffle its batch): seeded when built, and without random starts, so both libraries see the same episodes."""
    np.random.seed(0)
    return SimpleMultiObsEnv(random_start=False)


def discrete_to_multi(kind: str):
    def make() -> gym.Env:
        env = gym.make("CartPole-v1")
        space = spaces.MultiDiscrete([2, 3]) if kind == "multidiscrete" else spaces.MultiBinary(3)
        return gym.wrappers.TransformAction(env, lambda a: int(np.asarray(a).reshape(-1)[0] % 2), space)

    return make


SMALL_CNN = {"features_extractor_kwargs": {"features_dim": 32}}
#: (env, policy, policy_kwargs, tolerance): every form of policy SB3's A2C accepts that pgplug's speeds up or not.
FORMS: dict[str, tuple[Any, str, dict[str, Any], float]] = {
    "asymmetric-net-arch": ("CartPole-v1", "MlpPolicy", {"net_arch": {"pi": [8], "vf": [16]}}, 1e-5),
    "unequal-depths": ("CartPole-v1", "MlpPolicy", {"net_arch": {"pi": [8, 8], "vf": [16]}}, 1e-5),
    "old-list-of-dict": ("CartPole-v1", "MlpPolicy", {"net_arch": [{"vf": [8], "pi": [4]}]}, 1e-5),
    "separate-extractors": ("Pendulum-v1", "MlpPolicy", {"share_features_extractor": False}, 1e-5),
    "relu-no-ortho": ("CartPole-v1", "MlpPolicy", {"activation_fn": th.nn.ReLU, "ortho_init": False}, 1e-5),
    "custom-extractor": ("CartPole-v1", "MlpPolicy", {"features_extractor_class": TinyExtractor}, 1e-5),
    "batch-norm": ("CartPole-v1", "MlpPolicy", {"features_extractor_class": BatchNormExtractor}, 1e-4),
    "float-images": (float_images, "CnnPolicy", {"normalize_images": False, **SMALL_CNN}, 1e-4),
    "dict-with-image": (multi_obs, "MultiInputPolicy", {"net_arch": [16]}, 1e-4),
    "box-2x2-actions": (MultiDimActions, "MlpPolicy", {"net_arch": [16]}, 1e-5),
    "multidiscrete": (discrete_to_multi("multidiscrete"), "MlpPolicy", {}, 1e-5),
    "multibinary": (discrete_to_multi("multibinary"), "MlpPolicy", {}, 1e-5),
}


class Record(BaseCallback):
    """The actions of every step, and the rollout buffer's arrays at the end of every rollout (before the update)."""

    def __init__(self) -> None:
        super().__init__()
        self.actions: list[np.ndarray] = []
        self.buffers: list[dict[str, np.ndarray]] = []

    def _on_step(self) -> bool:
        self.actions.append(np.array(self.locals["actions"], copy=True))
        return True

    def _on_rollout_end(self) -> None:
        buffer = self.model.rollout_buffer
        self.buffers.append({name: np.array(_as_array(getattr(buffer, name)), copy=True) for name in BUFFER_FIELDS})


def _as_array(x: Any) -> np.ndarray:
    return np.concatenate([v.reshape(*v.shape[:2], -1) for v in x.values()], axis=-1) if isinstance(x, dict) else x


def run(cls: type, env: Any, policy: str, policy_kwargs: dict[str, Any], **kwargs: Any) -> tuple[Any, Record]:
    model = cls(
        policy,
        make_vec_env(env, n_envs=N_ENVS, seed=0),
        n_steps=N_STEPS,
        seed=0,
        device="cpu",
        policy_kwargs=policy_kwargs,
        **kwargs,
    )
    record = Record()
    model.learn(UPDATES * N_ENVS * N_STEPS, callback=record)
    return model, record


@pytest.mark.both_paths
@pytest.mark.parametrize("form", FORMS)
def test_every_policy_form_matches_sb3_update_for_update(form: str) -> None:
    """The same actions at every step, the same rollout buffers (Ψ included) and the same weights after each run."""
    env, policy, policy_kwargs, tol = FORMS[form]
    theirs, their_record = run(sb3.A2C, env, policy, policy_kwargs)
    ours, our_record = run(pgplug.A2C, env, policy, policy_kwargs)
    assert ours._n_updates == theirs._n_updates == UPDATES
    for mine, their in zip(our_record.actions, their_record.actions, strict=True):
        np.testing.assert_allclose(mine, their, rtol=tol, atol=tol)
    for mine, their in zip(our_record.buffers, their_record.buffers, strict=True):
        for name in BUFFER_FIELDS:
            np.testing.assert_allclose(mine[name], their[name], rtol=tol, atol=tol, err_msg=name)
    their_params = dict(theirs.policy.named_parameters())
    for name, param in ours.policy.named_parameters():
        th.testing.assert_close(param, their_params[name], rtol=tol, atol=tol, msg=name)
    for name, buffer in theirs.policy.named_buffers():  # batch norm's running statistics
        th.testing.assert_close(dict(ours.policy.named_buffers())[name], buffer, rtol=tol, atol=tol, msg=name)


# -- SB3's OnPolicyAlgorithm members ---------------------------------------------------------------


def test_it_is_an_sb3_on_policy_algorithm_with_sb3s_buffer() -> None:
    model = pgplug.A2C("MlpPolicy", "CartPole-v1", n_steps=8)
    assert isinstance(model, OnPolicyAlgorithm) and isinstance(model.rollout_buffer, RolloutBuffer)
    assert (model.n_steps, model.gae_lambda, model.rollout_buffer_class, model.rollout_buffer_kwargs) == (
        8,
        1.0,
        None,
        {},
    )
    model.learn(16)
    assert model.rollout_buffer.size() == 8 and model.rollout_buffer.full
    assert model.rollout_buffer.observations.shape == (8, 1, 4) and model.rollout_buffer.actions.shape == (8, 1, 1)
    dict_model = pgplug.A2C("MultiInputPolicy", multi_obs(), n_steps=4)
    assert isinstance(dict_model.rollout_buffer, DictRolloutBuffer)


def test_sb3s_own_train_on_pgplugs_rollout_buffer_makes_pgplugs_update() -> None:
    """SB3's A2C.train, run on a pgplug model, reads rollout_buffer.get(): it makes the same gradient step."""
    models = []
    for _ in range(2):  # built and collected one after the other: the seed makes the same rollout
        model = pgplug.A2C("MlpPolicy", make_vec_env("CartPole-v1", n_envs=4, seed=0), seed=0)
        _, callback = model._setup_learn(40, None)
        assert model.collect_rollouts(model.env, callback, model.rollout_buffer, model.n_steps)
        models.append(model)
    models[0].train()
    sb3.A2C.train(models[1])
    for mine, theirs in zip(models[0].policy.parameters(), models[1].policy.parameters(), strict=True):
        th.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-6)


def test_collect_rollouts_then_train_is_learn() -> None:
    manual = pgplug.A2C("MlpPolicy", make_vec_env("CartPole-v1", n_envs=2, seed=0), seed=0)
    _, callback = manual._setup_learn(30, None)
    for _ in range(3):
        assert manual.collect_rollouts(manual.env, callback, manual.rollout_buffer, n_rollout_steps=manual.n_steps)
        manual.train()
    learned = pgplug.A2C("MlpPolicy", make_vec_env("CartPole-v1", n_envs=2, seed=0), seed=0).learn(30)
    for mine, theirs in zip(manual.policy.parameters(), learned.policy.parameters(), strict=True):
        assert th.equal(mine, theirs)


def test_collect_rollouts_refuses_another_buffer() -> None:
    model = pgplug.A2C("MlpPolicy", "CartPole-v1")
    _, callback = model._setup_learn(10, None)
    other = RolloutBuffer(5, model.observation_space, model.action_space)
    with pytest.raises(PgplugError, match="collects from the model's own env into its own rollout_buffer"):
        model.collect_rollouts(model.env, callback, other, 5)


# -- gae_lambda and rollout_buffer_class, with SB3's meaning ------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "name", "params"),
    [
        ({}, "nstep", {"n": None}),
        ({"gae_lambda": 0.95}, "gae", {"gae_lambda": 0.95}),
        ({"gae_lambda": 0.9, "estimator": "gae"}, "gae", {"gae_lambda": 0.9}),
        ({"estimator": "td"}, "td", {}),
        ({"estimator_kwargs": {"n": 3}}, "nstep", {"n": 3}),
    ],
)
def test_gae_lambda_selects_the_estimator(kwargs: dict[str, Any], name: str, params: dict[str, Any]) -> None:
    model = pgplug.A2C("MlpPolicy", "CartPole-v1", **kwargs)
    assert (model.estimator.name, model.estimator.params()) == (name, params)
    assert model.gae_lambda == model.estimator.equivalent_gae_lambda


@pytest.mark.parametrize(
    "kwargs", [{"gae_lambda": 0.9, "estimator": "td"}, {"gae_lambda": 0.9, "estimator_kwargs": {"gae_lambda": 0.8}}]
)
def test_gae_lambda_that_contradicts_the_estimator_is_one_line(kwargs: dict[str, Any]) -> None:
    if "estimator_kwargs" in kwargs:
        kwargs = {**kwargs, "estimator": "gae"}
    with pytest.raises(PgplugError, match=r"gae_lambda=0.9 selects the 'gae' estimator") as error:
        pgplug.A2C("MlpPolicy", "CartPole-v1", **kwargs)
    assert "\n" not in str(error.value)


def test_load_with_gae_lambda_takes_sb3s_meaning(tmp_path) -> None:
    pgplug.A2C("MlpPolicy", "CartPole-v1").save(tmp_path / "a2c")
    loaded = pgplug.A2C.load(tmp_path / "a2c", gae_lambda=0.9)
    assert (loaded.estimator.name, loaded.gae_lambda) == ("gae", 0.9)


def test_a_rollout_buffer_class_of_ones_own_is_refused() -> None:
    class MyBuffer(RolloutBuffer):
        pass

    with pytest.raises(PgplugError, match=r"rollout_buffer_class .*MyBuffer is not supported: .*estimator plugin"):
        pgplug.A2C("MlpPolicy", "CartPole-v1", rollout_buffer_class=MyBuffer)
    model = pgplug.A2C("MlpPolicy", "CartPole-v1", rollout_buffer_class=RolloutBuffer)
    assert isinstance(model.rollout_buffer, RolloutBuffer)


def test_positional_arguments_in_sb3s_order() -> None:
    # learning_rate, n_steps, gamma, gae_lambda, ent_coef, vf_coef, max_grad_norm, rms_prop_eps, use_rms_prop
    model = pgplug.A2C("MlpPolicy", "CartPole-v1", 1e-3, 7, 0.9, 0.8, 0.01, 0.3, 0.4, 1e-4, False)
    assert (model.learning_rate, model.n_steps, model.gamma, model.gae_lambda) == (1e-3, 7, 0.9, 0.8)
    assert (model.ent_coef, model.vf_coef, model.max_grad_norm) == (0.01, 0.3, 0.4)
    assert type(model.policy.optimizer) is th.optim.Adam


def test_sb3s_train_on_dict_observations_rollout_after_rollout() -> None:
    """DictRolloutBuffer.get() flattens the observations dict in place: the next rollout's buffer views fresh rows."""
    model = pgplug.A2C("MultiInputPolicy", make_vec_env(multi_obs, n_envs=2, seed=0), n_steps=4, seed=0)
    _, callback = model._setup_learn(100, None)
    for _ in range(3):
        assert model.collect_rollouts(model.env, callback, model.rollout_buffer, model.n_steps)
        buffer = model.rollout_buffer
        for key, rows in buffer.rows["observations"].items():
            assert buffer.observations[key].shape == (4, 2, *model.observation_space[key].shape)
            assert np.shares_memory(buffer.observations[key], rows)
        sb3.A2C.train(model)  # reads buffer.get()
    assert model._n_updates == 3


def test_learn_without_log_interval_logs_nothing_as_in_sb3() -> None:
    model = pgplug.A2C("MlpPolicy", "CartPole-v1", n_steps=1)
    dumps: list[int] = []
    model.dump_logs = lambda iteration=0: dumps.append(iteration)  # type: ignore[method-assign]
    model.learn(250, log_interval=None)
    assert dumps == []
    model.learn(250, reset_num_timesteps=False)  # the class default: every 100 iterations, as SB3's A2C
    assert dumps == [100, 200]


def test_load_follows_gae_lambda_unless_an_estimator_was_chosen(tmp_path) -> None:
    pgplug.A2C("MlpPolicy", "CartPole-v1", gae_lambda=0.95).save(tmp_path / "gae")
    assert pgplug.A2C.load(tmp_path / "gae").estimator.params() == {"gae_lambda": 0.95}
    assert pgplug.A2C.load(tmp_path / "gae", gae_lambda=0.9).estimator.params() == {"gae_lambda": 0.9}
    pgplug.A2C("MlpPolicy", "CartPole-v1", estimator="td").save(tmp_path / "td")
    assert pgplug.A2C.load(tmp_path / "td").estimator.name == "td"


def test_a_zip_of_an_earlier_pgplug_keeps_its_estimator(tmp_path) -> None:
    """A2C zips saved before gae_lambda was saved have an estimator entry only: it stays."""
    import json
    import zipfile

    pgplug.A2C("MlpPolicy", "CartPole-v1", estimator="td").save(tmp_path / "new.zip")
    with zipfile.ZipFile(tmp_path / "new.zip") as source, zipfile.ZipFile(tmp_path / "old.zip", "w") as target:
        for item in source.infolist():
            content = source.read(item)
            if item.filename == "data":
                data = json.loads(content)
                for key in ("gae_lambda", "_estimator_follows_gae_lambda"):
                    data.pop(key)
                content = json.dumps(data).encode()
            target.writestr(item, content)
    loaded = pgplug.A2C.load(tmp_path / "old.zip")
    assert (loaded.estimator.name, loaded.gae_lambda) == ("td", 0.0)
