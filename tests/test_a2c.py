"""A2C: update-for-update parity with Stable-Baselines3's A2C, Atari, VecNormalize save/load,
SB3 callbacks, learning CartPole, and the one-line refusals."""

from __future__ import annotations

from typing import Any

import ale_py
import gymnasium as gym
import numpy as np
import pytest
import stable_baselines3 as sb3
import torch as th
from learning import until_reward
from stable_baselines3.common.callbacks import BaseCallback, EvalCallback, StopTrainingOnRewardThreshold
from stable_baselines3.common.env_util import make_atari_env, make_vec_env
from stable_baselines3.common.vec_env import VecFrameStack, VecNormalize

import pgplug
from pgplug.errors import IncompatibleEstimatorError, PgplugError

gym.register_envs(ale_py)


N_ENVS = 4
N_STEPS = 5
PARITY_UPDATES = 30


class RecordActions(BaseCallback):
    """Keeps the actions of every env step (SB3 and pgplug both pass them in the step locals)."""

    def __init__(self) -> None:
        super().__init__()
        self.actions: list[np.ndarray] = []
        self.initial_params: list[th.Tensor] = []

    def _on_training_start(self) -> None:
        self.initial_params = [p.detach().clone() for p in self.model.policy.parameters()]

    def _on_step(self) -> bool:
        self.actions.append(np.array(self.locals["actions"], copy=True))
        return True


def train_both(
    env_id: str,
    sb3_kwargs: dict[str, Any],
    pg_kwargs: dict[str, Any],
    env_kwargs: dict[str, Any] | None = None,
    updates: int = PARITY_UPDATES,
) -> tuple[tuple[Any, RecordActions], tuple[Any, RecordActions]]:
    """SB3's A2C and pgplug's A2C, same seed, env and hyperparameters, ``updates`` updates each."""
    runs = []
    for cls, kwargs in ((sb3.A2C, sb3_kwargs), (pgplug.A2C, pg_kwargs)):
        env = make_vec_env(env_id, n_envs=N_ENVS, seed=0, env_kwargs=env_kwargs)
        model = cls("MlpPolicy", env, n_steps=N_STEPS, seed=0, device="cpu", **kwargs)
        record = RecordActions()
        model.learn(updates * N_ENVS * N_STEPS, callback=record)
        runs.append((model, record))
    return runs[0], runs[1]


def assert_same_training(
    sb3_run: tuple[Any, RecordActions],
    pg_run: tuple[Any, RecordActions],
    updates: int = PARITY_UPDATES,
    rtol: float = 1e-5,
    atol: float = 1e-6,
) -> None:
    (sb3_model, sb3_record), (pg_model, pg_record) = sb3_run, pg_run
    assert pg_model.num_timesteps == sb3_model.num_timesteps == updates * N_ENVS * N_STEPS
    assert pg_model._n_updates == sb3_model._n_updates == updates
    # The same random draws, step for step: the rollouts are the same.
    assert len(pg_record.actions) == len(sb3_record.actions)
    for pg_actions, sb3_actions in zip(pg_record.actions, sb3_record.actions):
        np.testing.assert_allclose(pg_actions, sb3_actions, rtol=rtol, atol=atol)
    # The same updates, up to float32 rounding: SB3 shuffles the batch before its means, pgplug
    # keeps it time-major, so sums are taken in another order (differences of ~1e-7).
    sb3_params = dict(sb3_model.policy.named_parameters())
    for name, param in pg_model.policy.named_parameters():
        th.testing.assert_close(param, sb3_params[name], rtol=rtol, atol=atol, msg=name)
    moved = [not th.allclose(p, q, atol=1e-4) for p, q in zip(pg_model.policy.parameters(), pg_record.initial_params)]
    assert all(moved), "some parameter barely moved: the comparison would prove little"


def linear_schedule(progress_remaining: float) -> float:
    return 1e-3 * progress_remaining


GAE_1 = {"estimator": "gae", "estimator_kwargs": {"gae_lambda": 1.0}}
PARITY_CASES = {
    "cartpole-nstep": ("CartPole-v1", {}, {}, None),
    "cartpole-gae1": ("CartPole-v1", {}, GAE_1, None),
    "pendulum-nstep": ("Pendulum-v1", {}, {}, None),
    "pendulum-gae1": ("Pendulum-v1", {}, GAE_1, None),
    "normalize-advantage": ("CartPole-v1", {"normalize_advantage": True}, {"normalize_advantage": True}, None),
    "adam": ("Pendulum-v1", {"use_rms_prop": False}, {"use_rms_prop": False}, None),
    "linear-lr": ("CartPole-v1", {"learning_rate": linear_schedule}, {"learning_rate": linear_schedule}, None),
    "entropy-and-vf-coef": (
        "CartPole-v1",
        {"ent_coef": 0.01, "vf_coef": 0.25},
        {"ent_coef": 0.01, "vf_coef": 0.25},
        None,
    ),
    # Episodes cut by a time limit every 8 steps: the truncation bootstrap (γ·V(terminal obs)) is exercised.
    "cartpole-truncation": ("CartPole-v1", {}, {}, {"max_episode_steps": 8}),
    "pendulum-truncation-gae1": ("Pendulum-v1", {}, GAE_1, {"max_episode_steps": 8}),
    "gae-0.95": (
        "CartPole-v1",
        {"gae_lambda": 0.95},
        {"estimator": "gae", "estimator_kwargs": {"gae_lambda": 0.95}},
        None,
    ),
}


@pytest.mark.parametrize("case", list(PARITY_CASES))
@pytest.mark.both_paths
def test_matches_sb3_a2c_update_for_update(case: str) -> None:
    env_id, sb3_kwargs, pg_kwargs, env_kwargs = PARITY_CASES[case]
    sb3_run, pg_run = train_both(env_id, sb3_kwargs, pg_kwargs, env_kwargs)
    assert_same_training(sb3_run, pg_run)


@pytest.mark.parametrize("sde_sample_freq", [-1, 2])
@pytest.mark.both_paths
def test_matches_sb3_a2c_with_gsde(sde_sample_freq: int) -> None:
    """gSDE exploration (noise matrix resampled per rollout, or every 2 steps as SB3 does)."""
    kwargs = {"use_sde": True, "sde_sample_freq": sde_sample_freq}
    # gSDE amplifies float32 rounding more than a Gaussian with state-independent noise: fewer updates.
    sb3_run, pg_run = train_both("Pendulum-v1", kwargs, kwargs, updates=8)
    assert_same_training(sb3_run, pg_run, updates=8, rtol=1e-4, atol=1e-5)


def test_truncation_case_really_truncates() -> None:
    """The truncation cases above only prove something if episodes do end on the time limit."""
    ended: list[bool] = []

    class Truncations(BaseCallback):
        def _on_step(self) -> bool:
            for done, info in zip(self.locals["dones"], self.locals["infos"]):
                if done:
                    ended.append(bool(info.get("TimeLimit.truncated", False)))
            return True

    env = make_vec_env("Pendulum-v1", n_envs=N_ENVS, seed=0, env_kwargs={"max_episode_steps": 8})
    pgplug.A2C("MlpPolicy", env, n_steps=N_STEPS, seed=0).learn(
        PARITY_UPDATES * N_ENVS * N_STEPS, callback=Truncations()
    )
    assert len(ended) >= N_ENVS * 10 and all(ended)


@pytest.mark.both_paths
def test_cnn_policy_trains_on_atari_like_sb3() -> None:
    """CnnPolicy on real Pong frames (ale-py ships the ROM): a few updates, close to SB3's."""
    models = []
    for cls in (sb3.A2C, pgplug.A2C):
        env = VecFrameStack(make_atari_env("PongNoFrameskip-v4", n_envs=2, seed=0), n_stack=4)
        model = cls("CnnPolicy", env, n_steps=5, ent_coef=0.01, vf_coef=0.25, seed=0, device="cpu")
        model.learn(3 * 2 * 5)
        models.append(model)
    sb3_model, pg_model = models
    assert pg_model.num_timesteps == 30 and pg_model._n_updates == 3
    assert pg_model.policy.observation_space.shape == (4, 84, 84)
    # pgplug's CNN batches are channels-last (faster on CPU), SB3's are not: equal up to rounding.
    sb3_params = dict(sb3_model.policy.named_parameters())
    for name, param in pg_model.policy.named_parameters():
        th.testing.assert_close(param, sb3_params[name], rtol=1e-4, atol=1e-5, msg=name)
    # The rollout keeps the frames' channels-last memory layout (VecTransposeImage's views), so the
    # update's convolutions get channels-last batches.
    rollout = pg_model._collector.collect(2)
    assert rollout.observations.dtype == th.uint8
    assert rollout.flat(rollout.observations).is_contiguous(memory_format=th.channels_last)
    obs = pg_model.env.reset()
    actions, _ = pg_model.predict(obs, deterministic=True)
    assert actions.shape == (2,) and pg_model.action_space.contains(int(actions[0]))


@pytest.mark.both_paths
def test_vecnormalize_round_trip(tmp_path) -> None:
    env = VecNormalize(make_vec_env("Pendulum-v1", n_envs=2, seed=0))
    model = pgplug.A2C("MlpPolicy", env, seed=0)
    model.learn(400)
    model.save(tmp_path / "a2c.zip")
    env.save(tmp_path / "vecnormalize.pkl")

    loaded_env = VecNormalize.load(tmp_path / "vecnormalize.pkl", make_vec_env("Pendulum-v1", n_envs=2, seed=1))
    loaded_env.training = False
    loaded = pgplug.A2C.load(tmp_path / "a2c.zip", env=loaded_env)
    np.testing.assert_array_equal(loaded_env.obs_rms.mean, env.obs_rms.mean)
    np.testing.assert_array_equal(loaded_env.obs_rms.var, env.obs_rms.var)
    raw = np.random.default_rng(0).uniform(-1, 1, size=(16, 3)).astype(np.float32)
    expected, _ = model.predict(env.normalize_obs(raw), deterministic=True)
    actual, _ = loaded.predict(loaded_env.normalize_obs(raw), deterministic=True)
    np.testing.assert_array_equal(actual, expected)
    loaded.learn(100, reset_num_timesteps=False)  # it keeps learning, on the loaded normalised env
    assert loaded.num_timesteps == 400 + 100


def test_callback_returning_false_stops_learning() -> None:
    class StopAfter(BaseCallback):
        def __init__(self, calls: int) -> None:
            super().__init__()
            self.calls = calls
            self.ended = False

        def _on_step(self) -> bool:
            return self.n_calls < self.calls

        def _on_training_end(self) -> None:
            self.ended = True

    model = pgplug.A2C("MlpPolicy", make_vec_env("CartPole-v1", n_envs=N_ENVS, seed=0), n_steps=N_STEPS, seed=0)
    stop = StopAfter(calls=7)
    model.learn(10_000, callback=stop)
    assert stop.n_calls == 7 and stop.ended
    assert model.num_timesteps == 7 * N_ENVS
    assert model._n_updates == 1  # the rollout cut short by the callback is not trained on


def test_stop_training_on_reward_threshold() -> None:
    threshold = StopTrainingOnRewardThreshold(reward_threshold=5, verbose=0)
    eval_callback = EvalCallback(
        make_vec_env("CartPole-v1", n_envs=1, seed=1),
        callback_on_new_best=threshold,
        eval_freq=10,
        n_eval_episodes=2,
        verbose=0,
    )
    model = pgplug.A2C("MlpPolicy", make_vec_env("CartPole-v1", n_envs=N_ENVS, seed=0), n_steps=N_STEPS, seed=0)
    model.learn(10_000, callback=eval_callback)
    assert eval_callback.best_mean_reward >= 5  # any CartPole policy lasts 8+ steps
    assert model.num_timesteps == 10 * N_ENVS  # stopped at the first evaluation


@pytest.mark.slow
@pytest.mark.both_paths
def test_learns_cartpole() -> None:
    """The zoo's CartPole-v1 settings (n_envs 8, ent_coef 0.0, A2C defaults otherwise) reach an evaluation of 400.

    Constant-rate A2C on CartPole oscillates (SB3's too), so the test stops at the first evaluation ≥ 400
    (5 episodes every 2,000 steps) instead of judging the weights at a fixed step: where exactly a run
    stands at 100k steps is a chaotic function of the CPU's rounding. It once asserted ≥ 400 at 100k;
    seeds 0-5 evaluated 494, 500, 500, 122, 168 and 134 there (10 episodes), so another CPU whose
    rounding flips one sampled action would fail it half the time. The first evaluation ≥ 400 came at
    6k-28k steps for seeds 0-7 (seed 2, tested: 8k); the 100k budget leaves more than 3× that.
    """
    seed = 2
    model = pgplug.A2C("MlpPolicy", make_vec_env("CartPole-v1", n_envs=8, seed=seed), ent_coef=0.0, seed=seed)
    evaluation = until_reward("CartPole-v1", 400, every_steps=2_000, n_envs=8, eval_seed=1000)
    model.learn(100_000, callback=evaluation)
    assert evaluation.best_mean_reward >= 400


def test_refuses_estimator_that_needs_complete_episodes() -> None:
    with pytest.raises(IncompatibleEstimatorError) as excinfo:
        pgplug.A2C("MlpPolicy", "CartPole-v1", estimator="reward_to_go")
    message = str(excinfo.value)
    assert "\n" not in message and "reward_to_go" in message
    fitting = pgplug.A2C.compatible_estimators()
    assert {"td", "nstep", "gae"} <= set(fitting) and "reward_to_go" not in fitting
    for name in fitting:
        assert name in message


@pytest.mark.parametrize("n_steps", [-1, 0, 2.5, "5"])
def test_refuses_bad_n_steps(n_steps: Any) -> None:
    with pytest.raises(PgplugError, match="n_steps") as excinfo:
        pgplug.A2C("MlpPolicy", "CartPole-v1", n_steps=n_steps)
    assert "\n" not in str(excinfo.value)


def test_refuses_cnn_policy_on_vector_observations() -> None:
    with pytest.raises(PgplugError, match="CnnPolicy needs image observations") as excinfo:
        pgplug.A2C("CnnPolicy", "CartPole-v1")
    message = str(excinfo.value)
    assert "\n" not in message and "MlpPolicy" in message and "(4,)" in message


def test_fused_step_forward_matches_the_policy() -> None:
    """The block-diagonal actor-critic forward of the rollout loop equals SB3's own modules, and follows updates."""
    from pgplug.fast.fused_mlp import FusedActorCritic

    model = pgplug.A2C("MlpPolicy", "CartPole-v1", seed=0, policy_kwargs={"net_arch": {"pi": [32, 16], "vf": [8, 24]}})
    policy = model.policy
    fused = FusedActorCritic.of(policy)
    assert fused is not None
    obs = th.randn(16, 4)

    def reference() -> tuple[th.Tensor, th.Tensor]:
        latent_pi, latent_vf = policy.mlp_extractor(policy.extract_features(obs))
        return policy.action_net(latent_pi), policy.value_net(latent_vf)

    with th.no_grad():
        for _ in range(2):
            logits, values = fused(policy.extract_features(obs))
            expected_logits, expected_values = reference()
            th.testing.assert_close(logits, expected_logits)
            th.testing.assert_close(values, expected_values)
            for p in policy.parameters():  # an in-place update, as the optimizer makes: the fused copy follows
                p.add_(0.1)
    # Stacks of unequal depth are run as they are.
    other = pgplug.A2C("MlpPolicy", "CartPole-v1", seed=0, policy_kwargs={"net_arch": {"pi": [32], "vf": [8, 8]}})
    assert FusedActorCritic.of(other.policy) is None
