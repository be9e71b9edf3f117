"""Behavioural cloning: the policy-gradient loss with Ψ = 1 on expert data, and RL fine-tuning after it."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from sb3_contrib import RecurrentPPO
from stable_baselines3.common.env_util import make_vec_env

import pgplug
from pgplug.contracts.registries import make_objective
from pgplug.errors import PgplugError
from pgplug.interop.bc import (
    ExpertDataset,
    behavioural_cloning,
    clone_expert,
    cloning_rollout,
    collect_expert_data,
)
from pgplug.interop.evaluation import evaluate
from pgplug.runtime.runners import runner_for


@pytest.fixture(scope="module")
def expert_path() -> Path:
    from cartpole_expert import cartpole_expert_path

    return cartpole_expert_path()


class DictObsEnv(gym.Env):
    """Dict observations (a position and a flag), two actions, 8-step episodes."""

    observation_space = spaces.Dict(
        {"position": spaces.Box(-1.0, 1.0, (2,), dtype=np.float32), "flag": spaces.Discrete(3)}
    )
    action_space = spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self.observation_space.sample(), {}

    def step(self, action):
        self.t += 1
        return self.observation_space.sample(), float(action), False, self.t >= 8, {}


# -- the loss -----------------------------------------------------------------------------------


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_cloning_loss_is_minus_the_mean_log_likelihood_of_the_expert_actions(env_id: str) -> None:
    model = pgplug.A2C("MlpPolicy", env_id, seed=0, device="cpu")
    model.observation_space.seed(0)
    model.action_space.seed(0)
    obs = th.as_tensor(np.stack([model.observation_space.sample() for _ in range(16)]))
    acts = th.as_tensor(np.stack([model.action_space.sample() for _ in range(16)]))
    if isinstance(model.action_space, spaces.Discrete):
        acts = acts.long()
    rollout = cloning_rollout(obs, acts)
    assert rollout.returns is None and rollout.advantages is None  # Ψ = 1 is the objective's
    for fast in (True, False):
        batch = runner_for(model.policy, fast=fast).evaluate_rollout(rollout, differentiate_entropy=False)
        terms = make_objective("behavioural_cloning").loss(batch)
        assert_minus_mean_log_likelihood(model, obs, acts, terms)


def assert_minus_mean_log_likelihood(model, obs, acts, terms) -> None:
    expected = -model.policy.get_distribution(obs).log_prob(acts).mean()
    th.testing.assert_close(terms.loss, expected, rtol=0, atol=1e-6)
    assert terms.value_loss is None
    grads = th.autograd.grad(terms.loss, list(model.policy.parameters()), allow_unused=True)
    expected_grads = th.autograd.grad(expected, list(model.policy.parameters()), allow_unused=True)
    for got, want in zip(grads, expected_grads):
        assert (got is None and want is None) or th.allclose(got, want, atol=1e-6)


# -- expert data --------------------------------------------------------------------------------


def test_expert_data_records_what_the_expert_saw_and_did(tmp_path: Path) -> None:
    expert = pgplug.A2C("MlpPolicy", "CartPole-v1", seed=1, device="cpu")  # a poor one: short episodes
    dataset = collect_expert_data(expert, make_vec_env("CartPole-v1", n_envs=3, seed=0), n_steps=100)
    assert len(dataset) == 100 and dataset.observations.shape == (100, 4) and dataset.actions.shape == (100,)
    np.testing.assert_array_equal(dataset.actions, expert.predict(dataset.observations, deterministic=True)[0])
    assert dataset.episode_returns and all(r > 0 for r in dataset.episode_returns)
    dataset.save(tmp_path / "expert.npz")
    loaded = ExpertDataset.load(tmp_path / "expert.npz")
    np.testing.assert_array_equal(loaded.observations, dataset.observations)
    np.testing.assert_array_equal(loaded.actions, dataset.actions)
    assert loaded.episode_returns == dataset.episode_returns


def test_a_recurrent_expert_is_played_with_its_lstm_state() -> None:
    expert = RecurrentPPO("MlpLstmPolicy", "CartPole-v1", seed=0, device="cpu")
    dataset = collect_expert_data(expert, "CartPole-v1", n_steps=100, seed=0)
    env = make_vec_env("CartPole-v1", n_envs=1, seed=0)
    obs, state, starts, replayed = env.reset(), None, np.ones(1, dtype=bool), []
    for recorded in dataset.observations:
        np.testing.assert_array_equal(obs[0], recorded)
        action, state = expert.predict(obs, state=state, episode_start=starts, deterministic=True)
        replayed.append(action[0])
        obs, _, starts, _ = env.step(action)
    np.testing.assert_array_equal(replayed, dataset.actions)
    assert len(dataset.episode_returns) >= 1


def test_dict_observations_clone_to_a_high_accuracy(tmp_path: Path) -> None:
    expert = pgplug.A2C("MultiInputPolicy", make_vec_env(DictObsEnv, n_envs=2, seed=0), seed=0, device="cpu")
    dataset = collect_expert_data(expert, expert.get_env(), n_steps=1_000)
    assert set(dataset.observations) == {"position", "flag"} and dataset.observations["position"].shape == (1000, 2)
    dataset.save(tmp_path / "dict.npz")
    dataset = ExpertDataset.load(tmp_path / "dict.npz")
    student = pgplug.A2C("MultiInputPolicy", make_vec_env(DictObsEnv, n_envs=2, seed=1), seed=1, device="cpu")
    before = float(np.mean(student.predict(dataset.observations, deterministic=True)[0] == dataset.actions))
    result = behavioural_cloning(student, dataset, n_epochs=15, batch_size=64, learning_rate=3e-3, seed=0)
    assert result.n_updates == 15 * 16 and result.losses[-1] < result.losses[0]
    assert result.accuracy is not None and result.accuracy >= 0.9 > before


# -- cloning the analytic expert ---------------------------------------------------------------


def test_the_expert_plays_its_rule_and_balances_through_flipped_actions(expert_path: Path) -> None:
    from cartpole_expert import CONTROLLER, controller_action, controller_return

    expert = pgplug.load(expert_path)
    states = np.random.default_rng(0).uniform(-1, 1, (2_000, 4)).astype(np.float32) * np.float32([2.4, 2, 0.2, 2])
    clear = np.abs(states.astype(np.float64) @ np.asarray(CONTROLLER)) > 1e-4  # not within rounding of the boundary
    actions, _ = expert.predict(states, deterministic=True)
    np.testing.assert_array_equal(actions[clear], controller_action(states)[clear])
    assert [controller_return(seed, flip_probability=0.1) for seed in range(5)] == [500.0] * 5


@pytest.mark.slow
@pytest.mark.both_paths
def test_cloning_a_ppo_expert_reaches_most_of_its_return_and_a2c_fine_tunes_on(expert_path: Path) -> None:
    """The expert is analytic (``tests/cartpole_expert.py``), so its 500 does not depend on the CPU; cloning is
    supervised learning, which rounding does not tip over. Margins, measured over student seeds 1-5 and few-ulp
    perturbations of the student's initial weights: accuracy 0.961-0.964 (≥ 0.9 asserted), final/first loss
    0.24-0.27 (< 0.5), the clone's return and, after the gentle fine-tuning, the return 500 (≥ 400)."""
    expert = pgplug.load(expert_path)
    expert_score = evaluate(expert, "CartPole-v1", n_episodes=10, seed=100).mean
    assert expert_score >= 475
    dataset = collect_expert_data(expert_path, "CartPole-v1", n_steps=5_000, seed=1)
    # A small learning rate for the RL phase: the cloned policy meets an untrained critic (docs/behavioural-cloning.md).
    env = make_vec_env("CartPole-v1", n_envs=8, seed=2)
    student = pgplug.A2C("MlpPolicy", env, learning_rate=1e-4, seed=1, device="cpu")
    assert evaluate(student, "CartPole-v1", n_episodes=10, seed=100).mean < 0.2 * expert_score
    result = behavioural_cloning(student, dataset, n_epochs=10, batch_size=64, learning_rate=1e-3, seed=0)
    assert result.n_updates == 10 * 79 and result.losses[-1] < 0.5 * result.losses[0]
    assert result.accuracy is not None and result.accuracy >= 0.9
    assert student.policy.optimizer.state_dict()["state"] == {}  # A2C's RMSprop is untouched by cloning
    assert evaluate(student, "CartPole-v1", n_episodes=10, seed=100).mean >= 0.8 * expert_score
    cloned = {k: v.clone() for k, v in student.policy.state_dict().items()}
    student.learn(3_000)
    assert student.num_timesteps == 3_000
    assert any(not th.equal(student.policy.state_dict()[k], v) for k, v in cloned.items())
    assert evaluate(student, "CartPole-v1", n_episodes=10, seed=100).mean >= 0.8 * expert_score


def test_clone_expert_plays_the_models_own_env_then_learning_starts_afresh(expert_path: Path) -> None:
    model = pgplug.A2C("MlpPolicy", make_vec_env("CartPole-v1", n_envs=4, seed=0), seed=0, device="cpu")
    result = clone_expert(model, expert_path, n_steps=500, n_epochs=2, batch_size=100, seed=0)
    assert result.n_updates == 2 * 5 and len(result.losses) == 2
    assert model._last_obs is None
    model.learn(40)
    assert model.num_timesteps == 40


# -- bad input ----------------------------------------------------------------------------------


def test_bad_input_fails_in_one_line(tmp_path: Path) -> None:
    model = pgplug.A2C("MlpPolicy", "CartPole-v1", seed=0, device="cpu")
    dataset = collect_expert_data(model, "CartPole-v1", n_steps=10)
    with pytest.raises(PgplugError, match=r"^n_steps must be a positive integer, got 0$"):
        collect_expert_data(model, "CartPole-v1", n_steps=0)
    with pytest.raises(PgplugError, match=r"^n_epochs must be a positive integer, got 0$"):
        behavioural_cloning(model, dataset, n_epochs=0)
    with pytest.raises(PgplugError, match=r"^batch_size must be a positive integer, got 2.5$"):
        behavioural_cloning(model, dataset, batch_size=2.5)  # type: ignore[arg-type]
    with pytest.raises(PgplugError, match="the expert dataset is empty"):
        behavioural_cloning(model, ExpertDataset(np.zeros((0, 4), np.float32), np.zeros(0, np.int64)))
    recurrent = RecurrentPPO("MlpLstmPolicy", "CartPole-v1", seed=0, device="cpu")
    with pytest.raises(PgplugError, match="needs a non-recurrent ActorCriticPolicy, got RecurrentActorCriticPolicy"):
        behavioural_cloning(recurrent, dataset)
    (tmp_path / "junk.npz").write_text("junk")
    with pytest.raises(PgplugError, match=r"junk\.npz is not an expert dataset"):
        ExpertDataset.load(tmp_path / "junk.npz")
