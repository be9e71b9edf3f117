"""Every registered algorithm that constructs like an SB3 one, ``Algo(policy, env)``, works with SB3's tools:
evaluation, callbacks, loggers, tensorboard, the progress bar, Dict observations, Box actions, set_env."""

from __future__ import annotations

import csv
import inspect
import math
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.callbacks import (
    BaseCallback,
    CheckpointCallback,
    EvalCallback,
    StopTrainingOnRewardThreshold,
)
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.logger import configure

from pgplug.contracts.registries import get_host
from pgplug.runtime.algorithm import PolicyGradientAlgorithm

# Algorithms that train in worker processes get the same SB3-interface checks in their own test
# file (tests/test_a3c.py), with process-aware budgets; here each check runs in-process.
WORKER_ALGORITHMS = {"a3c"}


def constructs_like_sb3(cls: type) -> bool:
    first_two = list(inspect.signature(cls.__init__).parameters)[1:3]
    return first_two == ["policy", "env"]


ALGORITHMS = [
    entry.cls
    for entry in get_host().algorithms
    if entry.name not in WORKER_ALGORITHMS and constructs_like_sb3(entry.cls)
]


@pytest.fixture(params=ALGORITHMS, ids=lambda cls: cls.name)
def algo(request) -> type[PolicyGradientAlgorithm]:
    return request.param


class DictObsEnv(gym.Env):
    """A small Dict-observation env: a position and a flag; 10-step episodes, reward 1 for action == flag."""

    observation_space = spaces.Dict({"position": spaces.Box(-1.0, 1.0, (2,), np.float32), "flag": spaces.Discrete(2)})
    action_space = spaces.Discrete(2)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def _obs(self) -> dict:
        self.flag = int(self.np_random.integers(2))
        return {"position": self.np_random.uniform(-1, 1, 2).astype(np.float32), "flag": self.flag}

    def step(self, action):
        reward = float(action == self.flag)
        self.t += 1
        return self._obs(), reward, False, self.t >= 10, {}


def test_algorithms_under_test_include_reinforce_and_a2c() -> None:
    assert {"reinforce", "a2c"} <= {cls.name for cls in ALGORITHMS}


def test_evaluate_policy(algo) -> None:
    model = algo("MlpPolicy", "CartPole-v1", seed=0).learn(200)
    rewards, lengths = evaluate_policy(model, model.get_env(), n_eval_episodes=3, return_episode_rewards=True)
    assert len(rewards) == len(lengths) == 3
    assert all(r == length > 0 for r, length in zip(rewards, lengths))  # CartPole: reward 1 per step


def test_eval_callback_writes_evaluations_and_best_model(algo, tmp_path: Path) -> None:
    eval_env = make_vec_env("CartPole-v1", n_envs=1, seed=1)
    callback = EvalCallback(
        eval_env, n_eval_episodes=2, eval_freq=100, log_path=str(tmp_path), best_model_save_path=str(tmp_path)
    )
    algo("MlpPolicy", "CartPole-v1", seed=0).learn(400, callback=callback)
    evaluations = np.load(tmp_path / "evaluations.npz")
    assert len(evaluations["timesteps"]) >= 3
    assert evaluations["results"].shape[1] == 2
    best = algo.load(tmp_path / "best_model.zip")
    assert best.predict(np.zeros(4, dtype=np.float32), deterministic=True)[0].shape == ()


def test_checkpoint_callback_writes_loadable_zips(algo, tmp_path: Path) -> None:
    callback = CheckpointCallback(save_freq=100, save_path=str(tmp_path), name_prefix="ckpt")
    algo("MlpPolicy", "CartPole-v1", seed=0).learn(300, callback=callback)
    zips = sorted(tmp_path.glob("ckpt_*_steps.zip"))
    assert len(zips) >= 2
    assert algo.load(zips[-1]).num_timesteps > 0


def test_stop_on_reward_threshold_stops_early(algo) -> None:
    # Any CartPole episode scores >= 1, so the first evaluation is a new best above the threshold.
    stop = StopTrainingOnRewardThreshold(reward_threshold=0.0)
    eval_env = make_vec_env("CartPole-v1", n_envs=1, seed=1)
    callback = EvalCallback(eval_env, callback_on_new_best=stop, n_eval_episodes=1, eval_freq=50)
    model = algo("MlpPolicy", "CartPole-v1", seed=0).learn(100_000, callback=callback)
    assert callback.n_calls == 50
    assert model.num_timesteps == 50


def test_a_callback_returning_false_stops_learn(algo) -> None:
    class StopAtOnce(BaseCallback):
        def _on_step(self) -> bool:
            return False

    env = make_vec_env("CartPole-v1", n_envs=2, seed=0)
    model = algo("MlpPolicy", env, seed=0)
    before = {k: v.clone() for k, v in model.policy.state_dict().items()}
    model.learn(10_000, callback=StopAtOnce())
    assert model.num_timesteps == 2  # one step of two envs
    assert model._n_updates == 0
    assert all(th.equal(before[k], v) for k, v in model.policy.state_dict().items())


def test_tensorboard_log_writes_event_files(algo, tmp_path: Path) -> None:
    model = algo("MlpPolicy", "CartPole-v1", tensorboard_log=str(tmp_path), seed=0)
    model.learn(300, log_interval=1)
    run_dirs = list(tmp_path.iterdir())
    assert [d.name for d in run_dirs] == [f"{algo.name.upper()}_1"]
    assert list(run_dirs[0].glob("events.out.tfevents.*"))


@pytest.mark.filterwarnings("ignore::tqdm.TqdmExperimentalWarning")
def test_progress_bar(algo) -> None:
    model = algo("MlpPolicy", "CartPole-v1", seed=0).learn(200, progress_bar=True)
    assert model.num_timesteps >= 200


def test_logger_records_rollout_and_train_values(algo, tmp_path: Path) -> None:
    model = algo("MlpPolicy", "CartPole-v1", seed=0)
    model.set_logger(configure(str(tmp_path), ["csv"]))
    model.learn(600, log_interval=1)
    with open(tmp_path / "progress.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows

    def values(key: str) -> list[float]:
        return [float(row[key]) for row in rows if row.get(key)]

    assert values("rollout/ep_rew_mean") and all(v >= 1 for v in values("rollout/ep_rew_mean"))
    assert values("train/policy_loss") and all(math.isfinite(v) for v in values("train/policy_loss"))
    assert values("time/total_timesteps")[-1] <= model.num_timesteps


def test_multi_input_policy_on_dict_observations(algo) -> None:
    model = algo("MultiInputPolicy", DictObsEnv(), seed=0)
    before = {k: v.clone() for k, v in model.policy.state_dict().items()}
    model.learn(100)
    assert model._n_updates >= 3
    assert any(not th.equal(before[k], v) for k, v in model.policy.state_dict().items())
    action, _ = model.predict({"position": np.zeros(2, dtype=np.float32), "flag": 1}, deterministic=True)
    assert action.shape == ()


def test_box_actions_on_pendulum(algo) -> None:
    model = algo("MlpPolicy", "Pendulum-v1", seed=0)
    before = {k: v.clone() for k, v in model.policy.state_dict().items()}
    model.learn(600)
    assert model._n_updates >= 3
    after = model.policy.state_dict()
    assert any(not th.equal(before[k], after[k]) for k in before)
    assert all(th.isfinite(v).all() for v in after.values())
    actions, _ = model.predict(np.zeros((5, 3), dtype=np.float32))
    assert actions.shape == (5, 1)
    assert np.all(np.abs(actions) <= 2.0)


def test_set_env_and_continue_the_step_counter(algo) -> None:
    model = algo("MlpPolicy", "CartPole-v1", seed=0).learn(200)
    steps = model.num_timesteps
    new_env = make_vec_env("CartPole-v1", n_envs=1, seed=7)
    model.set_env(new_env)
    model.learn(200, reset_num_timesteps=False)
    assert model.get_env() is new_env
    assert model.num_timesteps >= steps + 200


def test_predict_single_observation_and_batch(algo) -> None:
    model = algo("MlpPolicy", "CartPole-v1", seed=0).learn(100)
    batch = np.random.default_rng(0).uniform(-0.1, 0.1, size=(6, 4)).astype(np.float32)
    actions, state = model.predict(batch, deterministic=True)
    assert actions.shape == (6,) and state is None
    assert all(model.action_space.contains(int(a)) for a in actions)
    single, _ = model.predict(batch[0], deterministic=True)
    assert single.shape == ()
    assert single == actions[0]
    np.testing.assert_array_equal(model.predict(batch, deterministic=True)[0], actions)
