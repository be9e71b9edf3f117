"""Continuing a saved run (``load`` + ``learn(reset_num_timesteps=False)``, ``pgplug train -i``) equals not stopping.

What "equal" means. SB3 saves no env state: a model continued from its file starts on a fresh env that
is reset, where the uninterrupted run would go on mid-episode. So the reference is the same run continued
in memory whose env is replaced, at the step the file was saved, by one built the way the continuation
builds it (same seed, the same ``VecNormalize`` statistics). Everything the model carries must come back
from the file exactly: policy weights, optimizer state, counters (``num_timesteps``, ``_n_updates``), the
learning-rate schedule's position, the random generators actions are drawn from, the ``VecNormalize``
statistics and the LSTM states. Then the two runs take bitwise the same updates: their weights, optimizer
state, counters and generators are compared with ``torch.equal`` / ``==``, no tolerance. With the env kept,
the in-memory continuation is itself the uninterrupted run (the first test).
"""

from __future__ import annotations

import json
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch as th
import yaml
from stable_baselines3 import A2C as SB3A2C
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

import pgplug
from pgplug.cli import main
from pgplug.errors import PgplugError
from pgplug.interop.compat import read_zip
from pgplug.interop.config import linear_schedule

N, M = 200, 200  # timesteps before and after the save: A2C's 10 + 10 rollouts of 4 envs × 5 steps
SEED, NEW_SEED = 0, 1  # the run's seed, and the seed the continuation's fresh env is built with


def make_env(seed: int, normalize: bool = False) -> VecEnv:
    venv = make_vec_env("CartPole-v1", n_envs=4, seed=seed)
    return VecNormalize(venv, gamma=0.99) if normalize else venv


def carry_statistics(source: VecNormalize, venv: VecEnv) -> VecNormalize:
    """A ``VecNormalize`` around ``venv`` with ``source``'s settings and a copy of its statistics (no pickle)."""
    env = VecNormalize(
        venv,
        norm_obs=source.norm_obs,
        norm_reward=source.norm_reward,
        clip_obs=source.clip_obs,
        clip_reward=source.clip_reward,
        gamma=source.gamma,
        epsilon=source.epsilon,
        norm_obs_keys=source.norm_obs_keys,
    )
    env.obs_rms, env.ret_rms = source.obs_rms.copy(), source.ret_rms.copy()
    return env


def continuation_env(model: Any, seed: int) -> VecEnv:
    """The env a continuation starts on: built afresh from ``seed``, with the model's normalization statistics."""
    venv = make_vec_env("CartPole-v1", n_envs=model.n_envs, seed=seed)
    statistics = model.get_vec_normalize_env()
    return venv if statistics is None else carry_statistics(statistics, venv)


def random_states() -> tuple[Any, ...]:
    numpy_state = np.random.get_state()
    return th.get_rng_state(), numpy_state[1].copy(), numpy_state[2:], random.getstate()


def assert_same_random_states(a: tuple[Any, ...], b: tuple[Any, ...]) -> None:
    assert th.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2:] == b[2:]


def assert_same_run(a: Any, b: Any) -> None:
    """Bitwise the same weights, optimizer state, counters, schedule position and normalization statistics."""
    weights_a, weights_b = a.policy.state_dict(), b.policy.state_dict()
    assert weights_a.keys() == weights_b.keys()
    assert all(th.equal(weights_a[k], weights_b[k]) for k in weights_a), "the weights differ"
    optimizer_a, optimizer_b = a.policy.optimizer.state_dict(), b.policy.optimizer.state_dict()
    assert optimizer_a["param_groups"] == optimizer_b["param_groups"]  # the learning rate included
    assert optimizer_a["state"].keys() == optimizer_b["state"].keys() and optimizer_a["state"]
    for index, state in optimizer_a["state"].items():
        assert state.keys() == optimizer_b["state"][index].keys()
        assert all(th.equal(value, optimizer_b["state"][index][key]) for key, value in state.items())
    counters = ("num_timesteps", "_n_updates", "_total_timesteps", "_current_progress_remaining")
    assert [getattr(a, name) for name in counters] == [getattr(b, name) for name in counters]
    assert [(e["r"], e["l"]) for e in a.ep_info_buffer] == [(e["r"], e["l"]) for e in b.ep_info_buffer]
    stats_a, stats_b = a.get_vec_normalize_env(), b.get_vec_normalize_env()
    assert (stats_a is None) == (stats_b is None)
    if stats_a is not None:
        for rms_a, rms_b in ((stats_a.obs_rms, stats_b.obs_rms), (stats_a.ret_rms, stats_b.ret_rms)):
            assert np.array_equal(rms_a.mean, rms_b.mean) and np.array_equal(rms_a.var, rms_b.var)
            assert rms_a.count == rms_b.count


# -- the Python API ------------------------------------------------------------------------------

CASES = {
    "a2c": (pgplug.A2C, "MlpPolicy", {"n_steps": 5}, False),
    "a2c-vecnormalize": (pgplug.A2C, "MlpPolicy", {"n_steps": 5}, True),
    "a2c-lstm": (pgplug.A2C, "MlpLstmPolicy", {"n_steps": 5, "policy_kwargs": {"lstm_hidden_size": 16}}, False),
    "a2c-linear-schedule": (pgplug.A2C, "MlpPolicy", {"n_steps": 5, "learning_rate": linear_schedule(7e-4)}, False),
    "reinforce": (pgplug.REINFORCE, "MlpPolicy", {}, False),
    "reinforce-lstm-vecnormalize": (
        pgplug.REINFORCE,
        "MlpLstmPolicy",
        {"policy_kwargs": {"lstm_hidden_size": 16}},
        True,
    ),
}


@pytest.mark.both_paths
def test_learning_on_in_a_second_call_equals_one_call() -> None:
    """The reference is the uninterrupted run: ``learn(N)`` then ``learn(M, reset_num_timesteps=False)`` takes
    bitwise the updates of ``learn(N + M)`` (a constant learning rate; N a whole number of rollouts)."""
    once = pgplug.A2C("MlpPolicy", make_env(SEED), n_steps=5, seed=SEED, device="cpu").learn(N + M)
    twice = pgplug.A2C("MlpPolicy", make_env(SEED), n_steps=5, seed=SEED, device="cpu").learn(N)
    twice.learn(M, reset_num_timesteps=False)
    assert_same_run(once, twice)
    assert twice.num_timesteps == N + M and twice._n_updates == (N + M) // 20


@pytest.mark.both_paths
@pytest.mark.parametrize("case", list(CASES))
def test_continuing_from_the_file_equals_continuing_in_memory(case: str, tmp_path: Path) -> None:
    cls, policy, kwargs, normalize = CASES[case]

    def train_first_part() -> Any:
        return cls(policy, make_env(SEED, normalize), seed=SEED, device="cpu", **kwargs).learn(N)

    in_memory = train_first_part()
    in_memory.set_env(continuation_env(in_memory, NEW_SEED))  # set_env resets, as load(env=...) does
    in_memory.learn(M, reset_num_timesteps=False)
    generators_in_memory = random_states()

    saved = train_first_part()
    saved.save(tmp_path / "model.zip")
    if normalize:
        saved.get_vec_normalize_env().save(str(tmp_path / "vecnormalize.pkl"))
        env = VecNormalize.load(str(tmp_path / "vecnormalize.pkl"), make_vec_env("CartPole-v1", 4, seed=NEW_SEED))
    else:
        env = make_vec_env("CartPole-v1", n_envs=4, seed=NEW_SEED)
    del saved
    resumed = cls.load(tmp_path / "model.zip", env=env, seed=NEW_SEED, device="cpu")  # seed= seeds the new env
    assert resumed.num_timesteps >= N
    resumed.learn(M, reset_num_timesteps=False)

    assert_same_run(in_memory, resumed)
    assert_same_random_states(generators_in_memory, random_states())


class LearningRates(BaseCallback):
    """The optimizer's learning rate before each rollout: the rate of the update before it."""

    def __init__(self) -> None:
        super().__init__()
        self.rates: list[float] = []

    def _on_rollout_start(self) -> None:
        self.rates.append(self.model.policy.optimizer.param_groups[0]["lr"])

    def _on_step(self) -> bool:
        return True


def test_a_linear_schedule_goes_on_from_the_saved_timestep_not_from_its_start(tmp_path: Path) -> None:
    """SB3's schedules run on the remaining progress 1 − num_timesteps / total, the total of the current ``learn``
    call, which counts the saved timesteps when continuing: the resumed rates go on from N / (N + M)."""
    model = pgplug.A2C(
        "MlpPolicy", make_env(SEED), n_steps=5, learning_rate=linear_schedule(7e-4), seed=SEED, device="cpu"
    )
    model.learn(N)
    model.save(tmp_path / "model.zip")
    resumed = pgplug.A2C.load(tmp_path / "model.zip", env=make_env(NEW_SEED), device="cpu")
    recorder = LearningRates()
    resumed.learn(M, reset_num_timesteps=False, callback=recorder)
    rates = [*recorder.rates[1:], resumed.policy.optimizer.param_groups[0]["lr"]]  # the M / 20 updates' rates
    expected = [7e-4 * (1 - (N + 20 * k) / (N + M)) for k in range(1, M // 20 + 1)]
    assert rates == pytest.approx(expected, rel=1e-9, abs=1e-15)
    assert rates[0] < 0.5 * 7e-4  # a continuation restarting the schedule would begin near 7e-4 again
    assert resumed.num_timesteps == N + M and resumed._n_updates == (N + M) // 20


def test_load_restores_the_random_generators_that_save_found(tmp_path: Path) -> None:
    model = pgplug.A2C("MlpPolicy", make_env(SEED), n_steps=5, seed=SEED, device="cpu").learn(40)
    observations = np.random.default_rng(0).uniform(-0.2, 0.2, (64, 4)).astype(np.float32)
    model.save(tmp_path / "model.zip")
    saved_states = random_states()
    sampled_in_memory, _ = model.predict(observations, deterministic=False)  # drawn from torch's generator
    th.rand(3), np.random.rand(3), random.random()

    resumed = pgplug.A2C.load(tmp_path / "model.zip", seed=123, device="cpu")  # SB3 would reseed all three
    assert_same_random_states(saved_states, random_states())
    sampled_resumed, _ = resumed.predict(observations, deterministic=False)
    np.testing.assert_array_equal(sampled_resumed, sampled_in_memory)
    assert "random_state" not in resumed.__dict__  # restored, not left behind as an attribute

    entry = read_zip(tmp_path / "model.zip").data["random_state"]
    assert set(entry) == {"python", "numpy", "torch"} and ":serialized:" not in json.dumps(entry)  # no pickle


def test_files_without_random_states_load_as_in_sb3_and_a_broken_entry_is_one_line(tmp_path: Path) -> None:
    SB3A2C("MlpPolicy", "CartPole-v1", n_steps=5, seed=0, device="cpu").save(tmp_path / "sb3.zip")
    th.manual_seed(99)
    pgplug.A2C.load(tmp_path / "sb3.zip", seed=7, device="cpu")  # SB3's seeding, then the policy's construction
    after_seed_7 = th.get_rng_state()
    pgplug.A2C.load(tmp_path / "sb3.zip", seed=7, device="cpu")
    assert th.equal(th.get_rng_state(), after_seed_7)

    pgplug.A2C("MlpPolicy", "CartPole-v1", seed=0, device="cpu").save(tmp_path / "model.zip")
    with zipfile.ZipFile(tmp_path / "model.zip") as old, zipfile.ZipFile(tmp_path / "broken.zip", "w") as new:
        for item in old.infolist():
            content = old.read(item.filename)
            if item.filename == "data":
                data = json.loads(content)
                data["random_state"]["torch"] = "not base64!"
                content = json.dumps(data).encode()
            new.writestr(item, content)
    with pytest.raises(PgplugError, match=r"broken\.zip: its 'random_state' entry is not a saved random state"):
        pgplug.A2C.load(tmp_path / "broken.zip", device="cpu")


# -- pgplug train -i -----------------------------------------------------------------------------

QUIET = ["--no-progress", "--eval-freq", "-1", "--n-eval-episodes", "0"]
CLI_CASES = {
    "a2c-vecnormalize-linear-schedule": ("a2c", ["normalize=true", "learning_rate=lin_7e-4"]),
    "a2c-lstm": ("a2c", ["policy=MlpLstmPolicy", "policy_kwargs={lstm_hidden_size: 16}"]),
    "reinforce": ("reinforce", []),
}


@pytest.mark.parametrize("case", list(CLI_CASES))
def test_train_i_equals_training_on_in_memory(case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``pgplug train -i <run>/CartPole-v1.zip -n M --seed S2`` ends where the first run's model, trained on in
    memory for M steps on an env built from S2 with its normalization statistics, ends; and it loads and saves
    the run's ``vecnormalize.pkl``."""
    algo, hyperparams = CLI_CASES[case]
    cls = pgplug.A2C if algo == "a2c" else pgplug.REINFORCE
    trained: list[Any] = []
    original_learn = cls.learn

    def learn(self, *args: Any, **kwargs: Any) -> Any:
        trained.append(self)
        return original_learn(self, *args, **kwargs)

    monkeypatch.setattr(cls, "learn", learn)  # to keep the first run's model
    logs = tmp_path / "logs"
    common = ["train", "--algo", algo, "--env", "CartPole-v1", "-f", str(logs), *QUIET]
    extra = ["--hyperparams", *hyperparams] if hyperparams else []
    assert main([*common, "-n", str(N), "--seed", str(SEED), *extra]) == 0
    first_run = logs / algo / "CartPole-v1_1"

    in_memory = trained[0]
    in_memory.set_env(continuation_env(in_memory, NEW_SEED))
    original_learn(in_memory, M, reset_num_timesteps=False)
    generators_in_memory = random_states()

    assert main([*common, "-i", str(first_run / "CartPole-v1.zip"), "-n", str(M), "--seed", str(NEW_SEED)]) == 0
    assert_same_random_states(generators_in_memory, random_states())
    second_run = logs / algo / "CartPole-v1_2"
    assert yaml.safe_load((second_run / "config.yml").read_text())["seed"] == NEW_SEED
    statistics = second_run / "vecnormalize.pkl"
    assert statistics.is_file() == ("normalize=true" in hyperparams)
    env = make_vec_env("CartPole-v1", n_envs=in_memory.n_envs)
    if statistics.is_file():
        env = VecNormalize.load(str(statistics), env)
        first = VecNormalize.load(str(first_run / "vecnormalize.pkl"), make_vec_env("CartPole-v1", n_envs=8))
        assert env.obs_rms.count > first.obs_rms.count  # the saved statistics went on from the first run's
    resumed = pgplug.load(second_run / "CartPole-v1.zip", env=env, device="cpu")
    assert resumed.num_timesteps >= N + M and type(resumed) is cls
    assert_same_run(in_memory, resumed)


def test_train_i_from_a_checkpoint_equals_stopping_there(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``-i <run>/rl_model_<K>_steps.zip`` continues with that checkpoint's own ``VecNormalize`` statistics
    (``rl_model_vecnormalize_<K>_steps.pkl``, not the run's final ``vecnormalize.pkl``): it ends where the same
    run, stopped at step K and trained on in memory, ends."""
    checkpoint_step = 160  # the last step of the 4th rollout of 8 envs × 5 steps: saved before its update
    stopped: list[Any] = []
    original_learn = pgplug.A2C.learn

    class StopAtCheckpoint(BaseCallback):
        def _on_step(self) -> bool:
            return self.model.num_timesteps < checkpoint_step

    def learn_until_the_checkpoint(self, total_timesteps: int, callback: Any = None, **kwargs: Any) -> Any:
        stopped.append(self)
        callback = CallbackList([callback, StopAtCheckpoint()])
        return original_learn(self, total_timesteps, callback=callback, **kwargs)

    logs = tmp_path / "logs"
    common = ["train", "--algo", "a2c", "--env", "CartPole-v1", "-f", str(logs), *QUIET]
    first = [*common, "-n", "400", "--seed", str(SEED), "--save-freq", str(checkpoint_step), "--hyperparams",
             "normalize=true"]  # fmt: skip
    assert main(first) == 0  # the whole run, with its checkpoint
    checkpoint = logs / "a2c" / "CartPole-v1_1" / f"rl_model_{checkpoint_step}_steps.zip"
    assert checkpoint.with_name(f"rl_model_vecnormalize_{checkpoint_step}_steps.pkl").is_file()
    with monkeypatch.context() as patch:
        patch.setattr(pgplug.A2C, "learn", learn_until_the_checkpoint)
        assert main(first) == 0  # the same run, stopped at the checkpoint
    (in_memory,) = stopped
    assert in_memory.num_timesteps == checkpoint_step
    in_memory.set_env(continuation_env(in_memory, NEW_SEED))
    in_memory.learn(M, reset_num_timesteps=False)

    assert main([*common, "-i", str(checkpoint), "-n", str(M), "--seed", str(NEW_SEED)]) == 0
    resumed_run = logs / "a2c" / "CartPole-v1_3"
    env = VecNormalize.load(str(resumed_run / "vecnormalize.pkl"), make_vec_env("CartPole-v1", n_envs=8))
    resumed = pgplug.load(resumed_run / "CartPole-v1.zip", env=env, device="cpu")
    assert resumed.num_timesteps == checkpoint_step + M
    assert_same_run(in_memory, resumed)
