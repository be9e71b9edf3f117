"""REINFORCE: complete-episode batches, the estimators it accepts, its update, save/load and learning."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv

from pgplug import PgplugError, hookimpl
from pgplug.contracts.registries import Host as PluginHost
from pgplug.plugins.estimators import Baseline
from pgplug.plugins.reinforce import REINFORCE, complete_episode_mask

VALUE_HEAD = ("value_net.", "mlp_extractor.value_net.")


class FixedLengthEnv(gym.Env):
    """Episodes of exactly ``length`` steps with reward 1 each; observation (t / length, 0)."""

    observation_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = spaces.Discrete(2)

    def __init__(self, length: int, truncate: bool = False) -> None:
        self.length, self.truncate, self.t = length, truncate, 0

    def _obs(self) -> np.ndarray:
        return np.array([self.t / self.length, 0.0], dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        end = self.t >= self.length
        return self._obs(), 1.0, end and not self.truncate, end and self.truncate, {}


def fixed_length_envs(*lengths: int, truncate: bool = False) -> DummyVecEnv:
    return DummyVecEnv([lambda n=n: Monitor(FixedLengthEnv(n, truncate)) for n in lengths])


class Recorder:
    """A throw-away plugin that keeps a copy of every rollout and the metrics of every update."""

    def __init__(self) -> None:
        self.rollouts: list[dict[str, Any]] = []
        self.metrics: list[dict[str, float]] = []

    @hookimpl
    def pgplug_after_rollout(self, algorithm: REINFORCE, rollout) -> None:
        # The collector reuses its buffers, so copy what the test looks at.
        terminal_value = None
        if algorithm.observation_space == FixedLengthEnv.observation_space:
            with th.no_grad():  # V of FixedLengthEnv's last observation
                terminal_value = algorithm.policy.predict_values(th.tensor([[1.0, 0.0]])).item()
        self.rollouts.append(
            {
                "rewards": rollout.rewards.clone(),
                "episode_starts": rollout.episode_starts.clone(),
                "values": rollout.values.clone(),
                "mask": rollout.mask.clone(),
                "advantages": rollout.advantages.clone(),
                "returns": None if rollout.returns is None else rollout.returns.clone(),
                "terminal_value": terminal_value,
            }
        )

    @hookimpl
    def pgplug_after_update(self, algorithm: REINFORCE, metrics: dict[str, float]) -> None:
        self.metrics.append(dict(metrics))


@pytest.fixture
def recorder(plugin_host: PluginHost) -> Iterator[Recorder]:
    plugin = Recorder()
    plugin_host.register(plugin, name="test-recorder", source="test")
    yield plugin
    plugin_host.unregister("test-recorder")


def params(model: REINFORCE, value_head: bool) -> dict[str, th.Tensor]:
    return {
        name: p.detach().clone()
        for name, p in model.policy.named_parameters()
        if name.startswith(VALUE_HEAD) == value_head
    }


def same(a: dict[str, th.Tensor], b: dict[str, th.Tensor]) -> bool:
    return a.keys() == b.keys() and all(th.equal(a[k], b[k]) for k in a)


# -- which steps a batch uses ----------------------------------------------------------------


def test_complete_episode_mask_on_a_hand_built_rollout() -> None:
    # env 0: episodes end at t=2 and t=4, the third is still running at T=6;
    # env 1: one episode that never ends; env 2: one episode that ends on the last step.
    episode_starts = th.tensor(
        [
            [1, 1, 1],
            [0, 0, 0],
            [0, 0, 0],
            [1, 0, 0],
            [0, 0, 0],
            [1, 0, 0],
        ],
        dtype=th.float32,
    )
    last_dones = th.tensor([0.0, 0.0, 1.0])
    mask = complete_episode_mask(episode_starts, last_dones)
    expected = th.tensor([[1, 0, 1]] * 5 + [[0, 0, 1]], dtype=th.bool)
    assert th.equal(mask, expected)
    first_only = complete_episode_mask(episode_starts, last_dones, max_episodes=1)
    expected_first = th.tensor([[1, 0, 1]] * 3 + [[0, 0, 1]] * 3, dtype=th.bool)
    assert th.equal(first_only, expected_first)


def test_each_env_contributes_its_first_episode_and_envs_restart(recorder: Recorder) -> None:
    # Lengths 2 and 5: the batch lasts until the slower env ends its episode (5 steps); env 0's
    # second, unfinished episode is masked out, and the next batch starts both envs afresh.
    model = REINFORCE("MlpPolicy", fixed_length_envs(2, 5), gamma=1.0, seed=0)
    model.learn(20)
    assert model.num_timesteps == 20 and model._n_updates == 2
    for batch in recorder.rollouts:
        assert th.equal(batch["episode_starts"][:, 0], th.tensor([1.0, 0, 1, 0, 1]))
        assert th.equal(batch["episode_starts"][:, 1], th.tensor([1.0, 0, 0, 0, 0]))
        assert th.equal(batch["mask"], th.tensor([[1, 1], [1, 1], [0, 1], [0, 1], [0, 1]], dtype=th.bool))
        mask = batch["mask"]
        assert th.equal(batch["advantages"][mask], th.tensor([2.0, 5, 1, 4, 3, 2, 1]))  # reward-to-go, γ = 1


def test_n_episodes_is_shared_evenly_between_envs(recorder: Recorder) -> None:
    # 5 episodes from 2 envs → 3 each: env 0 (length 2) needs 6 steps, env 1 (length 5) 15.
    model = REINFORCE("MlpPolicy", fixed_length_envs(2, 5), n_episodes=5, seed=0)
    model.learn(1)
    (batch,) = recorder.rollouts
    assert batch["mask"].shape == (15, 2)
    assert batch["mask"][:, 0].tolist() == [True] * 6 + [False] * 9
    assert bool(batch["mask"][:, 1].all())


def test_max_batch_steps_caps_a_batch_and_keeps_only_complete_episodes(recorder: Recorder) -> None:
    model = REINFORCE("MlpPolicy", fixed_length_envs(2, 50), max_batch_steps=7, seed=0)
    model.learn(1)
    (batch,) = recorder.rollouts
    assert batch["mask"][:, 0].tolist() == [True, True] + [False] * 5
    assert not bool(batch["mask"][:, 1].any())


def test_a_batch_without_a_complete_episode_skips_the_update() -> None:
    model = REINFORCE("MlpPolicy", fixed_length_envs(50), max_batch_steps=7, seed=0)
    before = params(model, value_head=False)
    model.learn(7)
    assert model._n_updates == 0
    assert same(before, params(model, value_head=False))


# -- estimators, critic and loss terms ------------------------------------------------------


def test_baseline_trains_the_critic_on_monte_carlo_returns(recorder: Recorder) -> None:
    model = REINFORCE("MlpPolicy", fixed_length_envs(2, 5), gamma=1.0, estimator="baseline", seed=0)
    value_before = params(model, value_head=True)
    model.learn(1)
    (batch,) = recorder.rollouts
    mask = batch["mask"]
    assert th.equal(batch["returns"][mask], th.tensor([2.0, 5, 1, 4, 3, 2, 1]))
    assert th.allclose(batch["advantages"], batch["returns"] - batch["values"])
    assert "train/value_loss" in recorder.metrics[0]
    assert not same(value_before, params(model, value_head=True))


def test_critic_free_estimators_leave_the_value_head_alone(recorder: Recorder) -> None:
    model = REINFORCE("MlpPolicy", "CartPole-v1", estimator="reward_to_go", seed=0)
    value_before, policy_before = params(model, value_head=True), params(model, value_head=False)
    model.learn(300)
    assert model._n_updates > 1
    assert all("train/value_loss" not in m for m in recorder.metrics)
    assert same(value_before, params(model, value_head=True))
    assert not same(policy_before, params(model, value_head=False))


@pytest.mark.parametrize(("estimator", "truncation_reward"), [("reward_to_go", None), ("baseline", "bootstrapped")])
def test_only_critic_estimators_bootstrap_time_limit_truncations(
    recorder: Recorder, estimator: str, truncation_reward: str | None
) -> None:
    model = REINFORCE("MlpPolicy", fixed_length_envs(3, truncate=True), gamma=0.9, estimator=estimator, seed=0)
    model.learn(1)
    (batch,) = recorder.rollouts
    rewards = batch["rewards"][:, 0]
    assert rewards[:2].tolist() == [1.0, 1.0]
    expected = 1.0 if truncation_reward is None else 1.0 + 0.9 * batch["terminal_value"]
    assert rewards[2].item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("estimator", ["full_return", "reward_to_go", "baseline"])
@pytest.mark.both_paths
def test_each_episode_estimator_trains(estimator: str) -> None:
    model = REINFORCE("MlpPolicy", "CartPole-v1", estimator=estimator, seed=0)
    before = params(model, value_head=False)
    model.learn(400)
    assert model._n_updates >= 2
    assert model.estimator.name == estimator
    after = params(model, value_head=False)
    assert all(th.isfinite(p).all() for p in after.values())
    assert not same(before, after)


def test_an_estimator_instance_equals_its_name() -> None:
    by_name = REINFORCE("MlpPolicy", "CartPole-v1", estimator="baseline", seed=3).learn(300)
    by_instance = REINFORCE("MlpPolicy", "CartPole-v1", estimator=Baseline(), seed=3).learn(300)
    assert isinstance(by_instance.estimator, Baseline)
    assert same(params(by_name, False), params(by_instance, False))
    assert same(params(by_name, True), params(by_instance, True))


def test_default_estimator_is_reward_to_go() -> None:
    assert REINFORCE("MlpPolicy", "CartPole-v1").estimator.name == "reward_to_go"


def test_ent_coef_changes_the_policy_update_only() -> None:
    plain = REINFORCE("MlpPolicy", "CartPole-v1", estimator="baseline", seed=0).learn(1)
    with_entropy = REINFORCE("MlpPolicy", "CartPole-v1", estimator="baseline", ent_coef=0.5, seed=0).learn(1)
    # Same first batch, separate actor and critic networks: only the actor's step differs.
    assert not same(params(plain, False), params(with_entropy, False))
    assert same(params(plain, True), params(with_entropy, True))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"estimator": "no_such_estimator"}, "no_such_estimator"),
        ({"n_episodes": 0}, "n_episodes"),
        ({"max_batch_steps": -1}, "max_batch_steps"),
        ({"estimator": Baseline(), "estimator_kwargs": {"n": 3}}, "estimator_kwargs"),
    ],
)
def test_bad_arguments_give_one_line_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(PgplugError, match=message) as info:
        REINFORCE("MlpPolicy", "CartPole-v1", **kwargs)
    assert "\n" not in str(info.value)


def test_unknown_estimator_error_lists_the_valid_names() -> None:
    with pytest.raises(PgplugError) as info:
        REINFORCE("MlpPolicy", "CartPole-v1", estimator="rtg")
    assert all(name in str(info.value) for name in ("full_return", "reward_to_go", "baseline"))


# -- save and load ---------------------------------------------------------------------------


def test_save_load_round_trip_predicts_the_same_and_learns_on(tmp_path) -> None:
    model = REINFORCE("MlpPolicy", "CartPole-v1", estimator="baseline", n_episodes=2, seed=0).learn(500)
    model.save(tmp_path / "reinforce")
    loaded = REINFORCE.load(tmp_path / "reinforce.zip", env=make_vec_env("CartPole-v1", n_envs=2, seed=5))
    assert same(dict(model.policy.state_dict()), dict(loaded.policy.state_dict()))
    assert (loaded.estimator.name, loaded.n_episodes, loaded.normalize_advantage) == ("baseline", 2, True)
    observations = np.random.default_rng(0).uniform(-0.2, 0.2, size=(32, 4)).astype(np.float32)
    actions, _ = model.predict(observations, deterministic=True)
    loaded_actions, _ = loaded.predict(observations, deterministic=True)
    np.testing.assert_array_equal(actions, loaded_actions)

    steps = loaded.num_timesteps
    loaded.learn(300, reset_num_timesteps=False)
    assert loaded.num_timesteps >= steps + 300
    assert not same(dict(model.policy.state_dict()), dict(loaded.policy.state_dict()))


# -- learning --------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.both_paths
def test_baseline_learns_cartpole() -> None:
    # configs/reinforce.yml's CartPole-v1 settings. Evaluation means after 30k steps for seeds
    # 0, 1, 2: 454, 500, 500 (and >= 420 after 50k for seeds 0-6), far above the 150 asserted.
    # Re-measured as "another CPU" (seeds 0-5, and seed 0 with few-ulp perturbations of the initial
    # weights, which do change its trajectory): 449-500 after 30k, so a rounding-driven change of
    # trajectory keeps the margin.
    env = make_vec_env("CartPole-v1", n_envs=4, seed=0)
    model = REINFORCE("MlpPolicy", env, learning_rate=3e-3, estimator="baseline", seed=0)
    model.learn(30_000)
    mean_reward, _ = evaluate_policy(model, make_vec_env("CartPole-v1", n_envs=1, seed=1000), n_eval_episodes=10)
    assert mean_reward >= 150
