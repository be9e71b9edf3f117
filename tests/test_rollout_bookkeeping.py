"""The rollout loop's bookkeeping: values and log-probs written once per rollout, V(last obs) from a
spare buffer row, episode stats for ended envs only (``on_episodes_end``), and ``learn()`` without
callbacks skipping the per-step callback protocol with nothing observable changed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecEnv

from pgplug import A2C
from pgplug.rollout import Rollout, RolloutCollector

N_ENVS = 4
N_STEPS = 5
TOTAL_TIMESTEPS = 20 * N_ENVS * N_STEPS  # 20 updates


def make_env(**kwargs: Any) -> VecEnv:
    return make_vec_env("CartPole-v1", n_envs=N_ENVS, seed=0, **kwargs)


def make_a2c(env: VecEnv | None = None) -> A2C:
    return A2C("MlpPolicy", env if env is not None else make_env(), n_steps=N_STEPS, seed=0, device="cpu")


class CountingCallback(BaseCallback):
    """Observes every step (so learn() must run the callback protocol) and changes nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.seen_num_timesteps: list[int] = []
        self.episodes_ended = 0

    def _on_step(self) -> bool:
        self.seen_num_timesteps.append(self.num_timesteps)
        self.episodes_ended += int(np.count_nonzero(self.locals["dones"]))
        return True


class StepRecorder:
    """An ``on_step`` hook keeping copies of what the collector passed at each step."""

    def __init__(self) -> None:
        self.values: list[th.Tensor] = []
        self.log_probs: list[th.Tensor] = []
        self.dones: list[np.ndarray] = []
        self.infos: list[list[dict[str, Any]]] = []
        self.new_obs: list[np.ndarray] = []

    def __call__(self, step: dict[str, Any]) -> bool:
        assert step["n_steps"] == len(self.values)
        self.values.append(step["values"].detach().clone())
        self.log_probs.append(step["log_probs"].detach().clone())
        self.dones.append(np.array(step["dones"], copy=True))
        self.infos.append(list(step["infos"]))
        self.new_obs.append(np.array(step["new_obs"], copy=True))
        return True


def assert_outputs_stored_row_by_row(rollout: Rollout, recorder: StepRecorder) -> None:
    assert rollout.n_steps == len(recorder.values)
    assert rollout.values.shape == rollout.log_probs.shape == (rollout.n_steps, N_ENVS)
    for t, (values, log_probs) in enumerate(zip(recorder.values, recorder.log_probs)):
        assert th.equal(rollout.values[t], values.reshape(-1)), f"values row {t}"
        assert th.equal(rollout.log_probs[t], log_probs.reshape(-1)), f"log_probs row {t}"


def fresh_collector() -> RolloutCollector:
    """A bare collector over a fresh A2C policy and env, reset and ready to collect."""
    model = make_a2c()
    collector = RolloutCollector(model.policy, model.env, model.gamma)
    collector.last_obs = model.env.reset()
    return collector


def stop_after(n: int) -> Callable[[int, np.ndarray], bool]:
    """An ``until`` for ``collect(None, ...)``: stop after ``n`` steps."""
    return lambda t, dones: t >= n


# -- learn() without callbacks ------------------------------------------------------------------


def test_learn_without_callback_equals_learn_with_a_counting_callback() -> None:
    silent = make_a2c().learn(TOTAL_TIMESTEPS, callback=None)
    counting = CountingCallback()
    observed = make_a2c().learn(TOTAL_TIMESTEPS, callback=counting)

    assert silent.num_timesteps == observed.num_timesteps == TOTAL_TIMESTEPS
    assert silent._n_updates == observed._n_updates == TOTAL_TIMESTEPS // (N_ENVS * N_STEPS)
    for (name, p), q in zip(silent.policy.named_parameters(), observed.policy.parameters()):
        assert th.equal(p, q), name
    # Monitor's "t" is wall-clock time since the env was made: the rest of each entry is compared.
    silent_episodes = [(info["r"], info["l"]) for info in silent.ep_info_buffer]
    observed_episodes = [(info["r"], info["l"]) for info in observed.ep_info_buffer]
    assert silent_episodes == observed_episodes
    assert len(observed_episodes) == counting.episodes_ended > 0  # every ended episode, each once


def test_callback_sees_every_step_with_num_timesteps_advanced_as_sb3() -> None:
    counting = CountingCallback()
    model = make_a2c().learn(TOTAL_TIMESTEPS, callback=counting)
    assert counting.n_calls == model.num_timesteps // N_ENVS == TOTAL_TIMESTEPS // N_ENVS
    assert counting.seen_num_timesteps == list(range(N_ENVS, TOTAL_TIMESTEPS + 1, N_ENVS))


# -- values and log-probs written once per rollout ------------------------------------------------


def test_a2c_rollout_stores_the_values_and_log_probs_passed_to_on_step() -> None:
    model = make_a2c().learn(N_ENVS * N_STEPS)
    collector = model._collector
    # The same length twice (cached row views), another in between.
    for n in (N_STEPS, 3, N_STEPS):
        recorder = StepRecorder()
        rollout = collector.collect(n, on_step=recorder)
        assert_outputs_stored_row_by_row(rollout, recorder)


def test_growing_buffers_store_the_values_and_log_probs_passed_to_on_step() -> None:
    collector = fresh_collector()
    recorder = StepRecorder()
    rollout = collector.collect(None, on_step=recorder, until=stop_after(150))
    assert rollout.n_steps == 150
    assert collector._buffers.capacity == 256  # 64 -> 128 -> 256: grown twice mid-collection
    assert_outputs_stored_row_by_row(rollout, recorder)


# -- actions ---------------------------------------------------------------------------------------


class ActionRecorder:
    """An ``on_step`` hook keeping the ``actions`` arrays it was given (not copies)."""

    def __init__(self) -> None:
        self.actions: list[np.ndarray] = []
        self.clipped: list[np.ndarray] = []

    def __call__(self, step: dict[str, Any]) -> bool:
        self.actions.append(step["actions"])
        self.clipped.append(step["clipped_actions"])
        return True


def test_rollout_stores_the_actions_and_callbacks_keep_fresh_arrays() -> None:
    """The env reads the actions from their buffer row; a callback's arrays survive the next rollout."""
    model = make_a2c().learn(N_ENVS * N_STEPS)
    collector = model._collector
    recorder = ActionRecorder()
    rollout = collector.collect(N_STEPS, on_step=recorder)
    kept = [a.copy() for a in recorder.actions]
    for t, actions in enumerate(recorder.actions):
        np.testing.assert_array_equal(rollout.actions[t].numpy(), actions)
        assert recorder.clipped[t] is actions  # Discrete: the env got the same actions
        assert not np.shares_memory(actions, rollout.actions.numpy())
    collector.collect(N_STEPS)  # rewrites the buffer rows
    for before, after in zip(kept, recorder.actions):
        np.testing.assert_array_equal(before, after)


# -- V(last obs) ------------------------------------------------------------------------------------


def expected_last_values(collector: RolloutCollector) -> th.Tensor:
    with th.no_grad():
        return collector.policy.predict_values(th.as_tensor(collector.last_obs)).reshape(-1)


def assert_last_values(rollout: Rollout, collector: RolloutCollector) -> None:
    """V(last obs) as SB3's ``predict_values`` gives it (the fused MLP may round the last float32 bit)."""
    th.testing.assert_close(rollout.last_values, expected_last_values(collector), rtol=1e-6, atol=1e-6)


def test_last_values_from_the_spare_buffer_row_leave_the_rollout_intact() -> None:
    model = make_a2c().learn(N_ENVS * N_STEPS)
    collector = model._collector
    first_obs = np.array(collector.last_obs, copy=True)
    recorder = StepRecorder()
    rollout = collector.collect(N_STEPS, on_step=recorder)
    assert collector._buffers.capacity > rollout.n_steps  # a spare row was there
    assert_last_values(rollout, collector)
    # Each observation row is still the one the policy acted on (the spare row is past the rollout).
    acted_on = np.stack([first_obs, *recorder.new_obs[:-1]])
    np.testing.assert_array_equal(rollout.observations.numpy(), acted_on)


def test_last_values_when_the_collection_fills_the_buffer() -> None:
    collector = fresh_collector()
    rollout = collector.collect(None, until=stop_after(64))
    assert rollout.n_steps == collector._buffers.capacity == 64  # no spare row: the fallback path
    assert_last_values(rollout, collector)


# -- episode stats ----------------------------------------------------------------------------------


def test_on_episodes_end_gets_the_infos_of_ended_envs_at_the_steps_they_end() -> None:
    collector = fresh_collector()
    recorder = StepRecorder()
    calls: list[tuple[int, list[dict[str, Any]], np.ndarray]] = []

    def on_episodes_end(infos: list[dict[str, Any]], dones: np.ndarray) -> None:
        calls.append((len(recorder.values) - 1, infos, np.array(dones, copy=True)))  # after that step's on_step

    collector.collect(100, on_step=recorder, on_episodes_end=on_episodes_end)

    ending_steps = [t for t, dones in enumerate(recorder.dones) if dones.any()]
    assert [t for t, _, _ in calls] == ending_steps and len(ending_steps) >= 5
    for t, infos, dones in calls:
        ended = np.flatnonzero(recorder.dones[t])
        assert len(infos) == len(ended) and all(info is recorder.infos[t][i] for info, i in zip(infos, ended))
        assert dones.dtype == bool and dones.shape == (len(ended),) and dones.all()
        assert all("episode" in info for info in infos)  # make_vec_env's Monitor


class SuccessInfo(gym.Wrapper):
    """``is_success`` in every info: False mid-episode, and at the end whether the episode lasted 20+ steps."""

    outcomes: list[bool] = []

    def reset(self, **kwargs: Any):
        self.length = 0
        return self.env.reset(**kwargs)

    def step(self, action: Any):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.length += 1
        info["is_success"] = False
        if terminated or truncated:
            info["is_success"] = self.length >= 20
            SuccessInfo.outcomes.append(info["is_success"])
        return obs, reward, terminated, truncated, info


def test_is_success_of_ended_episodes_reaches_ep_success_buffer() -> None:
    SuccessInfo.outcomes = []
    model = make_a2c(make_env(wrapper_class=SuccessInfo)).learn(TOTAL_TIMESTEPS, callback=None)
    outcomes = SuccessInfo.outcomes
    assert True in outcomes and False in outcomes and len(outcomes) < model._stats_window_size
    assert list(model.ep_success_buffer) == outcomes  # the ended episodes only, in env order


# -- distributions' argument checks -------------------------------------------------------------------


class ValidationRecorder(BaseCallback):
    """Records whether torch.distributions validates arguments while the callback runs."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[bool] = set()

    def _on_step(self) -> bool:
        self.seen.add(th.distributions.Distribution._validate_args)
        return True


def test_callbacks_run_with_the_users_distribution_checks() -> None:
    """The rollout turns argument checks off only around its own forward passes, not around callbacks."""
    recorder = ValidationRecorder()
    before = th.distributions.Distribution._validate_args
    make_a2c().learn(2 * N_ENVS * N_STEPS, callback=recorder)
    assert recorder.seen == {before}
    assert th.distributions.Distribution._validate_args == before
