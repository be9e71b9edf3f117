"""The rollout loop's bookkeeping: values and log-probs written once per rollout, V(last obs) from a
spare buffer row, episode stats for ended envs only (``on_episodes_end``), and ``learn()`` without
callbacks skipping the per-step callback protocol with nothing observable changed."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3 import A2C as SB3A2C
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import MlpExtractor
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper

from pgplug import A2C
from pgplug.contracts.rollout import Rollout
from pgplug.fast.torch_internals import unchecked_distributions
from pgplug.runtime.collector import RolloutCollector

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
    collector = RolloutCollector(model.runner, model.env, model.gamma)
    collector.last_obs = model.env.reset()
    return collector


def stop_after(n: int) -> Callable[[int, np.ndarray], bool]:
    """An ``until`` for ``collect(None, ...)``: stop after ``n`` steps."""
    return lambda t, dones: t >= n


# -- learn() without callbacks ------------------------------------------------------------------


@pytest.mark.both_paths
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
    assert collector.buffer.capacity == 256  # 64 -> 128 -> 256: grown twice mid-collection
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
    """The rollout stores the actions the env got; the arrays a callback got survive the next rollout."""
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
    assert collector.buffer.capacity > rollout.n_steps  # a spare row was there
    assert_last_values(rollout, collector)
    # Each observation row is still the one the policy acted on (the spare row is past the rollout).
    acted_on = np.stack([first_obs, *recorder.new_obs[:-1]])
    np.testing.assert_array_equal(rollout.observations.numpy(), acted_on)


def test_last_values_when_the_collection_fills_the_buffer() -> None:
    collector = fresh_collector()
    rollout = collector.collect(None, until=stop_after(64))
    assert rollout.n_steps == collector.buffer.capacity == 64  # no spare row: the fallback path
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


# -- review regressions: fresh env actions, custom critics, threads, interrupted learn() ----------------


class ActionKeeper(gym.Env):
    """Keeps every action array it is given (as an env recording its history may), and a copy taken on arrival."""

    def __init__(self, action_space: gym.spaces.Space) -> None:
        self.observation_space = gym.spaces.Box(-1, 1, (3,), np.float32)
        self.action_space = action_space
        self.kept: list[np.ndarray] = []
        self.copies: list[np.ndarray] = []
        self.t = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(3, np.float32), {}

    def step(self, action: np.ndarray):
        self.kept.append(action)  # the array object itself
        self.copies.append(action.copy())
        self.t += 1
        return np.full(3, self.t / 100, np.float32), 0.0, self.t >= 50, False, {}


@pytest.mark.parametrize(
    "action_space",
    [gym.spaces.MultiDiscrete([3, 4]), gym.spaces.MultiBinary(2)],
    ids=["multidiscrete", "multibinary"],
)
def test_env_gets_fresh_action_arrays_that_later_steps_leave_alone(action_space: gym.spaces.Space) -> None:
    """The env's action arrays are not rows of a buffer the next rollout rewrites (as SB3: a new array per step)."""
    n_rollouts = 4
    env = make_vec_env(lambda: ActionKeeper(action_space), n_envs=N_ENVS, seed=0)
    make_a2c(env).learn(n_rollouts * N_ENVS * N_STEPS, callback=None)
    for i, monitored in enumerate(env.envs):
        keeper = monitored.unwrapped
        assert len(keeper.kept) == n_rollouts * N_STEPS
        assert len({copy.tobytes() for copy in keeper.copies}) > 1  # actions vary: an overwritten one would show
        for t, (kept, copy) in enumerate(zip(keeper.kept, keeper.copies)):
            np.testing.assert_array_equal(kept, copy, err_msg=f"env {i}, step {t}")


class ShiftedCriticExtractor(MlpExtractor):
    """SB3's MLP extractor with a critic that is not ``value_net(features)``."""

    def forward_critic(self, features: th.Tensor) -> th.Tensor:
        return self.value_net(features) + 1.0


class ShiftedCriticNetwork(th.nn.Module):
    """SB3's documented custom network (``policy_net`` / ``value_net`` Sequentials), critic shifted likewise."""

    def __init__(self, feature_dim: int) -> None:
        super().__init__()
        self.latent_dim_pi = self.latent_dim_vf = 16
        self.policy_net = th.nn.Sequential(th.nn.Linear(feature_dim, 16), th.nn.ReLU())
        self.value_net = th.nn.Sequential(th.nn.Linear(feature_dim, 16), th.nn.ReLU())

    def forward(self, features: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        return self.forward_actor(features), self.forward_critic(features)

    def forward_actor(self, features: th.Tensor) -> th.Tensor:
        return self.policy_net(features)

    def forward_critic(self, features: th.Tensor) -> th.Tensor:
        return self.value_net(features) + 1.0


class ShiftedExtractorPolicy(ActorCriticPolicy):
    def _build_mlp_extractor(self) -> None:
        self.mlp_extractor = ShiftedCriticExtractor(
            self.features_dim, net_arch=self.net_arch, activation_fn=self.activation_fn, device=self.device
        )


class ShiftedNetworkPolicy(ActorCriticPolicy):
    def _build_mlp_extractor(self) -> None:
        self.mlp_extractor = ShiftedCriticNetwork(self.features_dim)


class HalvedObservationPolicy(ActorCriticPolicy):
    """Transforms the observation on the forward path (``predict_values`` runs BasePolicy's, without it)."""

    def extract_features(self, obs: th.Tensor, features_extractor: Any = None) -> Any:
        return super().extract_features(obs * 0.5, features_extractor)


def learned_collector(policy_class: type[ActorCriticPolicy], env_id: str) -> RolloutCollector:
    env = make_vec_env(env_id, n_envs=N_ENVS, seed=0)
    model = A2C(policy_class, env, n_steps=N_STEPS, seed=0, device="cpu").learn(2 * N_ENVS * N_STEPS)
    return model._collector


@pytest.mark.parametrize("env_id", ["Pendulum-v1", "CartPole-v1"])
@pytest.mark.parametrize("policy_class", [ShiftedExtractorPolicy, ShiftedNetworkPolicy])
def test_values_and_last_values_run_a_custom_critic(policy_class: type[ActorCriticPolicy], env_id: str) -> None:
    collector = learned_collector(policy_class, env_id)
    policy = collector.policy
    rollout = collector.collect(N_STEPS)
    assert_last_values(rollout, collector)
    with th.no_grad():
        for t in range(rollout.n_steps):
            _, values, _ = policy(rollout.observations[t])  # SB3's forward, through the custom critic
            th.testing.assert_close(rollout.values[t], values.reshape(-1), rtol=1e-6, atol=1e-6)
        # The shift matters: the critic's Sequential alone (what a fused copy of it computes) gives other values.
        features = policy.extract_features(th.as_tensor(collector.last_obs))
        unshifted = policy.value_net(policy.mlp_extractor.value_net(features)).reshape(-1)
    assert not th.allclose(rollout.last_values, unshifted, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("env_id", ["Pendulum-v1", "CartPole-v1"])
def test_last_values_of_a_policy_with_its_own_extract_features_are_predict_values(env_id: str) -> None:
    collector = learned_collector(HalvedObservationPolicy, env_id)
    policy = collector.policy
    rollout = collector.collect(N_STEPS)
    assert_last_values(rollout, collector)
    with th.no_grad():  # the override matters: through it (as the forward runs) V(last obs) would differ
        features = policy.extract_features(th.as_tensor(collector.last_obs))
        through_override = policy.value_net(policy.mlp_extractor.forward_critic(features)).reshape(-1)
    assert not th.allclose(rollout.last_values, through_override, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "order",
    [
        ("A enters", "B enters", "A exits", "B exits"),
        ("A enters", "B enters", "B exits", "A exits"),
    ],
    ids=["first-in-first-out", "last-in-first-out"],
)
@pytest.mark.parametrize("checks_before", [True, False], ids=["checks-on", "checks-off"])
def test_overlapping_unchecked_distributions_in_threads_leave_the_checks_as_they_were(
    order: tuple[str, ...], checks_before: bool
) -> None:
    """Two threads' ``unchecked_distributions`` overlap in a set order; afterwards the user's setting holds."""
    turns = [threading.Event() for _ in range(len(order) + 1)]
    inside: dict[str, bool] = {}

    def take_turn(step: str) -> None:
        assert turns[order.index(step)].wait(timeout=10), f"{step}: never its turn"

    def end_turn(step: str) -> None:
        turns[order.index(step) + 1].set()

    def thread(name: str) -> None:
        take_turn(f"{name} enters")
        with unchecked_distributions():
            inside[name] = th.distributions.Distribution._validate_args
            end_turn(f"{name} enters")
            take_turn(f"{name} exits")
        end_turn(f"{name} exits")

    th.distributions.Distribution.set_default_validate_args(checks_before)
    try:
        threads = [threading.Thread(target=thread, args=(name,)) for name in "AB"]
        for t in threads:
            t.start()
        turns[0].set()
        for t in threads:
            t.join(timeout=10)
        assert not any(t.is_alive() for t in threads) and turns[-1].is_set()
        assert inside == {"A": False, "B": False}  # off inside each
        assert th.distributions.Distribution._validate_args is checks_before
    finally:
        th.distributions.Distribution.set_default_validate_args(True)


def test_predict_from_several_threads_leaves_the_distribution_checks_on() -> None:
    """The reviewer's case, as a smoke test: overlaps here are up to the scheduler (the test above fixes them)."""
    model = A2C("MlpPolicy", "Pendulum-v1", seed=0, device="cpu")
    obs = np.zeros((1, 3), np.float32)
    assert th.distributions.Distribution._validate_args is True

    def predict_many() -> None:
        for _ in range(300):
            model.predict(obs)

    try:
        threads = [threading.Thread(target=predict_many) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert th.distributions.Distribution._validate_args is True
    finally:
        th.distributions.Distribution.set_default_validate_args(True)


class EnvCrashed(Exception):
    pass


class RaiseAtStep(gym.Wrapper):
    """Raises ``error`` at the ``at``-th ``step`` call counted over all envs sharing ``calls``."""

    def __init__(self, env: gym.Env, calls: list[int], at: int, error: type[BaseException]) -> None:
        super().__init__(env)
        self.calls, self.at, self.error = calls, at, error

    def step(self, action: Any):
        self.calls[0] += 1
        if self.calls[0] == self.at:
            raise self.error
        return self.env.step(action)


class LastStepRecorder(VecEnvWrapper):
    """Keeps copies of the observations and dones the vec env returned at its last completed step."""

    def reset(self) -> np.ndarray:
        return self.venv.reset()

    def step_wait(self):
        obs, rewards, dones, infos = self.venv.step_wait()
        self.last_obs, self.last_dones = obs.copy(), dones.copy()
        return obs, rewards, dones, infos


# Mid-rollout: 12 vec steps completed (two rollouts and two steps), the 13th interrupted at its 3rd env.
INTERRUPTED_AT = 12 * N_ENVS + 3


@pytest.mark.parametrize("error", [KeyboardInterrupt, EnvCrashed])
@pytest.mark.parametrize("with_callback", [False, True], ids=["callback=None", "counting-callback"])
@pytest.mark.both_paths
def test_interrupted_learn_counts_the_steps_taken_as_sb3(error: type[BaseException], with_callback: bool) -> None:
    models: dict[str, Any] = {}
    for name, algorithm in (("pgplug", A2C), ("sb3", SB3A2C)):
        env = LastStepRecorder(
            make_env(wrapper_class=RaiseAtStep, wrapper_kwargs={"calls": [0], "at": INTERRUPTED_AT, "error": error})
        )
        model = algorithm("MlpPolicy", env, n_steps=N_STEPS, seed=0, device="cpu")
        with pytest.raises(error):
            model.learn(TOTAL_TIMESTEPS, callback=CountingCallback() if with_callback else None)
        assert model.env is env
        np.testing.assert_array_equal(model._last_obs, env.last_obs, err_msg=name)
        np.testing.assert_array_equal(model._last_episode_starts, env.last_dones, err_msg=name)
        models[name] = model

    pgplug_model, sb3_model = models["pgplug"], models["sb3"]
    assert pgplug_model.num_timesteps == sb3_model.num_timesteps == 12 * N_ENVS
    np.testing.assert_array_equal(pgplug_model._last_obs, sb3_model._last_obs)  # the same draws, the same states
