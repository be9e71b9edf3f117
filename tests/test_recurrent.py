"""Recurrent policies (sb3-contrib's ``MlpLstmPolicy``): hidden-state handling, learning a memory task,
A3C/A2C parity, save/load/predict as sb3-contrib does it, and the command line.

The memory task is ``pgplug/CueMemory-v0``: a cue at step 0, the answer at step 5, ±1 at the end. A
feed-forward policy scores 0 on average, an LSTM that remembers the cue scores 1.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch as th
import torch.nn.functional as F
from gymnasium import spaces
from gymnasium.wrappers import TimeLimit
from learning import until_reward
from sb3_contrib import RecurrentPPO
from sb3_contrib.common.recurrent.policies import RecurrentActorCriticCnnPolicy, RecurrentActorCriticPolicy
from sb3_contrib.common.recurrent.type_aliases import RNNStates
from stable_baselines3.common.callbacks import EvalCallback, StopTrainingOnRewardThreshold
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import VecEnv

import pgplug
import pgplug.toy_envs  # registers pgplug/CueMemory-v0 and pgplug/CartPoleNoVel-v1
from pgplug import A2C, A3C, REINFORCE
from pgplug.cli import main
from pgplug.cli.settings import base_hyperparams
from pgplug.contracts.objective import LossTerms
from pgplug.contracts.registries import make_objective
from pgplug.contracts.rollout import Rollout
from pgplug.interop.config import builtin_config_path, load_config_file, select_entry
from pgplug.runtime.collector import RolloutCollector
from pgplug.runtime.policy_runner import PolicyRunner
from pgplug.runtime.recurrent import RecurrentRunner, zero_states
from pgplug.runtime.runners import runner_for

CUE = "pgplug/CueMemory-v0"
NO_VEL = "pgplug/CartPoleNoVel-v1"
#: sb3-contrib's LSTM layouts: a critic LSTM of its own (the default), one LSTM shared by actor and
#: critic, an MLP critic without memory, and two stacked layers.
LSTM_VARIANTS: dict[str, dict[str, Any]] = {
    "critic-lstm": {"lstm_hidden_size": 8},
    "shared-lstm": {"lstm_hidden_size": 8, "shared_lstm": True, "enable_critic_lstm": False},
    "mlp-critic": {"lstm_hidden_size": 8, "enable_critic_lstm": False},
    "two-layers": {"lstm_hidden_size": 8, "n_lstm_layers": 2},
}


def lstm_policy(env: VecEnv, policy_kwargs: dict[str, Any]) -> RecurrentActorCriticPolicy:
    """A freshly initialised (seeded) ``MlpLstmPolicy`` for ``env``."""
    policy = A2C("MlpLstmPolicy", env, seed=0, policy_kwargs=policy_kwargs).policy
    assert isinstance(policy, RecurrentActorCriticPolicy)
    return policy


def recurrent_collector(
    env: VecEnv, policy: RecurrentActorCriticPolicy, gamma: float = 0.99, fast: bool = True
) -> RolloutCollector:
    runner = runner_for(policy, fast=fast)
    assert isinstance(runner, RecurrentRunner) and runner.fast == fast
    collector = RolloutCollector(runner, env, gamma)
    collector.last_obs = env.reset()
    return collector


def policy_gradient_terms(runner: PolicyRunner, rollout: Rollout, **settings: Any) -> LossTerms:
    """The policy-gradient objective's loss on ``rollout``, as an update computes it."""
    with th.no_grad():
        return make_objective("policy_gradient", settings).loss(runner.evaluate_rollout(rollout, False))


def replay(
    policy: RecurrentActorCriticPolicy, rollout: Rollout, states: RNNStates | None = None
) -> tuple[th.Tensor, th.Tensor]:
    """Values and log-probs ``[T, N]`` of the training pass: the recurrent runner's env-major replay from ``states``."""
    flat = rollout.flat
    with th.no_grad():
        values, log_prob, _ = policy.evaluate_actions(
            flat(rollout.observations, env_major=True, masked=False),
            flat(rollout.actions, env_major=True, masked=False),
            rollout.recurrent_states if states is None else states,
            flat(rollout.episode_starts, env_major=True, masked=False),
        )
    shape = (rollout.rewards.shape[1], rollout.n_steps)
    return values.reshape(shape).T, log_prob.reshape(shape).T


def all_states(states: RNNStates) -> list[th.Tensor]:
    return [*states.pi, *states.vf]


def clone_rollout(rollout: Rollout) -> dict[str, Any]:
    """The fields of a rollout, copied (the next ``collect`` overwrites the buffers it views)."""
    names = ("observations", "actions", "episode_starts", "log_probs", "values", "rewards", "last_values")
    return {name: getattr(rollout, name).clone() for name in names}


# ------------------------------------------------------------------------------------------------
# Hidden-state handling
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "reference"])
@pytest.mark.parametrize("variant", LSTM_VARIANTS)
def test_training_pass_recomputes_what_the_actors_computed(variant: str, fast: bool) -> None:
    """Rollouts of 8 steps over 6-step episodes: episodes start mid-rollout and run on into the next
    rollout. The replay from the stored states gives the actors' log-probs and values, and the loss
    pairs each step's advantage with that step's log-prob (env-major replay, time-major estimates)."""
    env = make_vec_env(CUE, n_envs=2, seed=0)
    policy = lstm_policy(env, LSTM_VARIANTS[variant])
    collector = recurrent_collector(env, policy, fast=fast)
    generator = th.Generator().manual_seed(0)
    for episode_start in (6, 4, 2):  # stream steps 0..23 in rollouts of 8; episodes start at 0, 6, 12, 18
        rollout = collector.collect(8)
        assert rollout is not None
        assert rollout.episode_starts[:, 0].nonzero().flatten().tolist()[-1] == episode_start
        values, log_probs = replay(policy, rollout)
        th.testing.assert_close(log_probs, rollout.log_probs, rtol=0, atol=1e-6)
        th.testing.assert_close(values, rollout.values, rtol=0, atol=1e-6)

        rollout.advantages = th.randn(rollout.rewards.shape, generator=generator)
        rollout.returns = th.randn(rollout.rewards.shape, generator=generator)
        terms = policy_gradient_terms(collector.runner, rollout, ent_coef=0.0, vf_coef=0.5)
        expected_policy_loss = -(rollout.advantages * rollout.log_probs).mean()
        th.testing.assert_close(terms.policy_loss, expected_policy_loss, rtol=1e-6, atol=1e-6)
        assert terms.value_loss is not None
        th.testing.assert_close(terms.value_loss, F.mse_loss(rollout.returns, rollout.values), rtol=1e-6, atol=1e-6)


class DictObservation(gym.ObservationWrapper):
    """CueMemory's observation as a dict (``MultiInputLstmPolicy``'s input)."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.observation_space = spaces.Dict(
            {"cue": spaces.Box(-1, 1, (2,), np.float32), "ask": spaces.Box(-1, 1, (1,), np.float32)}
        )

    def observation(self, observation: np.ndarray) -> dict[str, np.ndarray]:
        return {"cue": observation[:2], "ask": observation[2:]}


@pytest.mark.parametrize(
    ("policy", "env_id", "wrapper", "n_steps", "start"),
    [
        ("MultiInputLstmPolicy", CUE, DictObservation, 8, 2),  # third rollout: an episode starts at stream step 18
        ("MlpLstmPolicy", "Pendulum-v1", None, 70, 60),  # continuous actions; the 200-step time limit in rollout 3
    ],
)
def test_training_pass_replays_dict_observations_and_continuous_actions(
    policy: str, env_id: str, wrapper: type[gym.Wrapper] | None, n_steps: int, start: int
) -> None:
    env = make_vec_env(env_id, n_envs=2, seed=0, wrapper_class=wrapper)
    model = A2C(policy, env, seed=0, policy_kwargs={"lstm_hidden_size": 8})
    collector = recurrent_collector(env, model.policy)
    for _ in range(3):
        rollout = collector.collect(n_steps)
        assert rollout is not None
        values, log_probs = replay(model.policy, rollout)
        th.testing.assert_close(log_probs, rollout.log_probs, rtol=0, atol=1e-5)
        th.testing.assert_close(values, rollout.values, rtol=0, atol=1e-5)
    assert rollout.episode_starts[:, 0].nonzero().flatten().tolist() == [start]


def test_states_reset_at_episode_starts_and_carry_across_rollouts() -> None:
    env = make_vec_env(CUE, n_envs=2, seed=0)
    policy = lstm_policy(env, {"lstm_hidden_size": 8})
    collector = recurrent_collector(env, policy)
    first = collector.collect(8)
    assert first is not None
    assert all(th.equal(s, th.zeros_like(s)) for s in all_states(first.recurrent_states))
    end_of_first = [s.clone() for s in all_states(collector.runner.states)]

    second = collector.collect(8)
    assert second is not None
    # Carry: the second rollout starts from the states the first one ended with, and they are not zero.
    stored = all_states(second.recurrent_states)
    assert all(th.equal(a, b) for a, b in zip(stored, end_of_first, strict=True))
    assert all(s.abs().sum() > 0 for s in stored)

    # Stream steps 8..15: the episode that began at step 6 ends at 11, the next one starts at local step 4.
    starts = second.episode_starts.T.tolist()
    assert starts == [[0, 0, 0, 0, 1, 0, 0, 0]] * 2
    # Reset: that episode's log-probs are those of its own observations run from zero states ...
    for i in range(2):
        isolated = second.observations[4:, i]
        with th.no_grad():
            _, log_prob, _ = policy.evaluate_actions(
                isolated, second.actions[4:, i], zero_states(policy, 1), second.episode_starts[4:, i]
            )
        th.testing.assert_close(log_prob, second.log_probs[4:, i], rtol=0, atol=1e-6)
    # ... and whatever the states before it: replaying from random states changes only the steps before 4.
    random_states = RNNStates(
        tuple(th.randn_like(s) for s in second.recurrent_states.pi),
        tuple(th.randn_like(s) for s in second.recurrent_states.vf),
    )
    values, log_probs = replay(policy, second, random_states)
    th.testing.assert_close(log_probs[4:], second.log_probs[4:], rtol=0, atol=1e-6)
    th.testing.assert_close(values[4:], second.values[4:], rtol=0, atol=1e-6)
    assert not th.allclose(values[:4], second.values[:4], atol=1e-4)  # the carried states mattered


def test_truncation_bootstrap_and_last_values_continue_the_critic_states() -> None:
    """Episodes cut at 4 steps by a time limit: the last reward gets γ·V(terminal obs), V taken with the
    critic's states after the episode's steps (no reset), and V(last obs) continues the running episode."""
    gamma = 0.9
    env = make_vec_env(CUE, n_envs=2, seed=0, wrapper_class=TimeLimit, wrapper_kwargs={"max_episode_steps": 4})
    policy = lstm_policy(env, {"lstm_hidden_size": 8})
    collector = recurrent_collector(env, policy, gamma)
    rollout = collector.collect(6)
    assert rollout is not None
    assert rollout.episode_starts.T.tolist() == [[1, 0, 0, 0, 1, 0]] * 2

    def critic(observations: th.Tensor) -> th.Tensor:
        """V of the last of ``observations``, one episode from its start."""
        starts = th.zeros(len(observations))
        starts[0] = 1.0
        with th.no_grad():
            return policy.predict_values(observations, zero_states(policy, 1).vf, starts)[-1, 0]

    terminal = th.zeros(1, 3)  # CueMemory's observation at its step 4: no cue, not the answer step
    for i in range(2):
        expected = gamma * critic(th.cat([rollout.observations[:4, i], terminal]))
        th.testing.assert_close(rollout.rewards[3, i], expected, rtol=1e-6, atol=1e-6)
        assert rollout.rewards[[0, 1, 2, 4, 5], i].tolist() == [0.0] * 5
        last_obs = th.as_tensor(collector.last_obs[i : i + 1])
        expected_last = critic(th.cat([rollout.observations[4:, i], last_obs]))
        th.testing.assert_close(rollout.last_values[i], expected_last, rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------------------------------------
# Learning the memory task
# ------------------------------------------------------------------------------------------------

LEARN_KWARGS: dict[str, Any] = {"learning_rate": 1e-3, "ent_coef": 0.01}
LSTM_KWARGS = {"lstm_hidden_size": 32}


def cue_score(model: Any, seed: int = 100) -> float:
    """Mean deterministic return over 100 episodes (a feed-forward policy's ≈ 0 ± 0.1 at this count)."""
    mean, _ = evaluate_policy(model, make_vec_env(CUE, n_envs=1, seed=seed), n_eval_episodes=100, deterministic=True)
    return float(mean)


@pytest.mark.slow
@pytest.mark.both_paths
def test_a2c_lstm_solves_cue_memory_where_feed_forward_cannot() -> None:
    """Budget: with 8 envs × 6 steps, the LSTM scored 1.0 on seeds 0, 1 and 2 at 10k steps (5k solved only
    2 of 3); the feed-forward policy scored 0.2, −0.08 and 0.12 at 10k. One seed is tested. Re-measured for
    robustness to other CPUs' rounding: seeds 0-5 all reached 1.0 by 6k steps and stayed there through 10k
    (evaluated every 2k); the feed-forward policy cannot beat chance whatever the rounding."""
    scores = {}
    for policy, policy_kwargs in (("MlpLstmPolicy", LSTM_KWARGS), ("MlpPolicy", {})):
        env = make_vec_env(CUE, n_envs=8, seed=0)
        model = A2C(policy, env, n_steps=6, seed=0, policy_kwargs=policy_kwargs, **LEARN_KWARGS)
        scores[policy] = cue_score(model.learn(10_000))
    assert scores["MlpLstmPolicy"] >= 0.9, scores
    assert scores["MlpPolicy"] <= 0.5, scores


@pytest.mark.slow
@pytest.mark.both_paths
def test_a3c_lstm_workers_solve_cue_memory_where_feed_forward_cannot() -> None:
    """Two worker processes × 4 envs, t_max 6, each keeping its LSTM states across rollouts and syncs.

    Hogwild runs are not reproducible, so the LSTM trains until an evaluation in the main process
    (global weights) scores ≥ 0.95, within 30k steps: over 6 runs (seeds 0, 1, 2, twice) that took
    3.7k-14.7k steps, while a fixed 10k budget left 3 runs of 12 unsolved. The feed-forward policy gets a
    fixed 10k (it cannot beat chance at any budget: the answer step looks the same whatever the cue);
    it scored 0.16, −0.14 and 0.1 on seeds 0, 1 and 2. One seed is tested.
    """

    def a3c(policy: str, policy_kwargs: dict[str, Any]) -> A3C:
        return A3C(policy, f"pgplug.toy_envs:{CUE}", n_workers=2, n_envs_per_worker=4, t_max=6, seed=0,
                   policy_kwargs=policy_kwargs, **LEARN_KWARGS)  # fmt: skip

    until_solved = until_reward(CUE, 0.95, every_steps=1_000, n_envs=4, eval_seed=50, n_eval_episodes=50)
    lstm = a3c("MlpLstmPolicy", LSTM_KWARGS).learn(30_000, callback=until_solved)
    feed_forward = a3c("MlpPolicy", {}).learn(10_000)
    assert feed_forward.num_timesteps >= 10_000
    scores = {"lstm": cue_score(lstm), "feed-forward": cue_score(feed_forward), "lstm steps": lstm.num_timesteps}
    assert scores["lstm"] >= 0.9, scores
    assert scores["feed-forward"] <= 0.5, scores


def test_reinforce_lstm_masked_loss_replays_each_complete_episode() -> None:
    """REINFORCE's masked path: envs that finished their episode keep stepping until all have, and those
    steps are masked out after the sequences are evaluated. The loss is the one of each kept episode
    evaluated on its own from zero states; an update changes the LSTM's weights."""
    env = make_vec_env(NO_VEL, n_envs=3, seed=0)
    # Without orthogonal init (action-net gain 0.01) the log-probs vary enough that a mis-ordered replay shows.
    policy_kwargs = {"lstm_hidden_size": 8, "ortho_init": False}
    model = REINFORCE("MlpLstmPolicy", env, seed=0, policy_kwargs=policy_kwargs, learning_rate=1e-2)
    _, callback = model._setup_learn(10_000, None)
    assert model.collect_rollouts(model.env, callback, model.rollout_buffer, model.n_steps)
    rollout = model.last_rollout
    assert rollout is not None and rollout.mask is not None and rollout.advantages is not None
    assert not bool(rollout.mask.all()), "the episodes should have different lengths"
    lengths = rollout.mask.sum(dim=0).tolist()

    policy = model.policy
    log_probs = []
    for i, length in enumerate(lengths):  # env-major, as the loss flattens
        with th.no_grad():
            _, log_prob, _ = policy.evaluate_actions(
                rollout.observations[:length, i],
                rollout.actions[:length, i],
                zero_states(policy, 1),
                rollout.episode_starts[:length, i],
            )
        th.testing.assert_close(log_prob, rollout.log_probs[:length, i], rtol=0, atol=1e-6)
        log_probs.append(log_prob)
    assert th.cat(log_probs).std() > 0.01
    terms = policy_gradient_terms(
        model.runner, rollout, ent_coef=model.ent_coef, vf_coef=model.vf_coef, normalize_advantage=True
    )
    # The loss flattens env-major, so the mean pairs env-major log-probs with env-major advantages.
    env_major_advantages = rollout.flat(rollout.advantages, env_major=True)
    env_major_advantages = (env_major_advantages - env_major_advantages.mean()) / (env_major_advantages.std() + 1e-8)
    th.testing.assert_close(terms.policy_loss, -(env_major_advantages * th.cat(log_probs)).mean())

    lstm_before = [p.detach().clone() for p in policy.lstm_actor.parameters()]
    metrics = model.update(rollout)
    assert np.isfinite(metrics["train/policy_loss"])
    assert all(not th.equal(a, b) for a, b in zip(lstm_before, policy.lstm_actor.parameters(), strict=True))
    model.learn(300, reset_num_timesteps=False)  # the learn loop: envs reset between batches, states too
    assert model._n_updates > 1


@pytest.mark.slow
@pytest.mark.both_paths
def test_reinforce_lstm_learns_cue_memory() -> None:
    """Trains until an evaluation (50 episodes every 1,000 steps) scores ≥ 0.95, within 30k steps.

    Not the score after a fixed budget: it once asserted ≥ 0.9 after 20k steps, and seed 5 solves the task
    by 4k, then forgets it (0.16 from 12k on), so a CPU whose rounding sends a run that way would fail. The
    first evaluation ≥ 0.95 came at 3k-11k steps for seeds 0-7 (seed 0, tested: 11k), each then scoring 1.0.
    """
    model = REINFORCE("MlpLstmPolicy", make_vec_env(CUE, n_envs=8, seed=0), learning_rate=3e-3, seed=0,
                      policy_kwargs=LSTM_KWARGS)  # fmt: skip
    until_solved = EvalCallback(
        make_vec_env(CUE, n_envs=1, seed=50),
        eval_freq=1_000 // 8,
        n_eval_episodes=50,
        callback_on_new_best=StopTrainingOnRewardThreshold(0.95),
    )
    assert cue_score(model.learn(30_000, callback=until_solved)) >= 0.9


# ------------------------------------------------------------------------------------------------
# A3C's serial worker is A2C, update for update
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("env_id", "t_max"), [(CUE, 5), (NO_VEL, 8)])
@pytest.mark.both_paths
def test_serial_a3c_lstm_matches_a2c_update_for_update(env_id: str, t_max: int) -> None:
    """With one worker and one env, A3C's worker keeps its LSTM states across rollouts and weight syncs
    as A2C's collector does: 50 updates later the parameters are equal, bitwise. (CueMemory's 6-step
    episodes straddle the 5-step rollouts; CartPoleNoVel's episodes span several rollouts.)"""
    updates = 50
    kwargs: dict[str, Any] = {"seed": 0, "policy_kwargs": {"lstm_hidden_size": 16}, **LEARN_KWARGS}
    a3c = A3C("MlpLstmPolicy", f"pgplug.toy_envs:{env_id}", backend="serial", n_workers=1, t_max=t_max, **kwargs)
    a3c.learn(updates * t_max)
    a2c = A2C("MlpLstmPolicy", make_vec_env(env_id, n_envs=1, seed=0), n_steps=t_max, **kwargs)
    a2c.learn(updates * t_max)
    assert a3c._n_updates == a2c._n_updates == updates
    a3c_state, a2c_state = a3c.policy.state_dict(), a2c.policy.state_dict()
    assert a3c_state.keys() == a2c_state.keys()
    for key in a3c_state:
        assert th.equal(a3c_state[key], a2c_state[key]), key
    initial = A2C("MlpLstmPolicy", make_vec_env(env_id, n_envs=1, seed=0), n_steps=t_max, **kwargs).policy
    assert not th.equal(initial.lstm_actor.weight_hh_l0, a2c.policy.lstm_actor.weight_hh_l0)


# ------------------------------------------------------------------------------------------------
# Save, load, predict and evaluate as sb3-contrib does
# ------------------------------------------------------------------------------------------------

PREDICT_KWARGS = {"lstm_hidden_size": 16, "net_arch": [32]}


def trained(algo: str) -> Any:
    """A briefly trained recurrent model on CartPole without velocities (variable episode lengths)."""
    if algo == "a2c":
        env = make_vec_env(NO_VEL, n_envs=4, seed=0)
        return A2C("MlpLstmPolicy", env, n_steps=8, seed=0, policy_kwargs=PREDICT_KWARGS).learn(1_000)
    model = A3C("MlpLstmPolicy", f"pgplug.toy_envs:{NO_VEL}", backend="serial", n_workers=1, n_envs_per_worker=4,
                t_max=8, seed=0, policy_kwargs=PREDICT_KWARGS)  # fmt: skip
    return model.learn(1_000)


@pytest.mark.parametrize("algo", ["a2c", "a3c"])
def test_save_load_predict_threads_states_like_recurrent_ppo(algo: str, tmp_path: Path) -> None:
    model = trained(algo)
    model.save(tmp_path / "model.zip")
    cls = type(model)
    loaded = [cls.load(tmp_path / "model.zip"), pgplug.load(tmp_path / "model.zip")]
    assert all(type(m) is cls and isinstance(m.policy, RecurrentActorCriticPolicy) for m in loaded)
    reference = RecurrentPPO("MlpLstmPolicy", make_vec_env(NO_VEL, n_envs=1), policy_kwargs=PREDICT_KWARGS, seed=0)
    reference.policy.load_state_dict(model.policy.state_dict())

    # predict(obs, state, episode_start) → (actions, states), the states passed back in, over episode ends.
    env = make_vec_env(NO_VEL, n_envs=3, seed=5)
    models = [model, *loaded, reference]
    states: list[Any] = [None] * len(models)
    obs, starts = env.reset(), np.ones(3, dtype=bool)
    saw_episode_end = False
    for _ in range(30):
        outputs = [m.predict(obs, state=s, episode_start=starts, deterministic=True) for m, s in zip(models, states)]
        actions, new_states = outputs[0]
        assert isinstance(new_states, tuple) and new_states[0].shape == (1, 3, 16)
        for other_actions, other_states in outputs[1:]:
            np.testing.assert_array_equal(other_actions, actions)
            for a, b in zip(other_states, new_states, strict=True):
                np.testing.assert_array_equal(a, b)
        if states[0] is not None:
            assert not np.array_equal(new_states[0], states[0][0])  # the state moves on
        states = [output[1] for output in outputs]
        obs, _, starts, _ = env.step(actions)
        saw_episode_end |= bool(starts.any())
    assert saw_episode_end

    # evaluate_policy threads states itself: the same episodes for pgplug's model and RecurrentPPO.
    def episodes(m: Any) -> tuple[list[float], list[int]]:
        eval_env = make_vec_env(NO_VEL, n_envs=2, seed=7)
        return evaluate_policy(m, eval_env, n_eval_episodes=6, deterministic=True, return_episode_rewards=True)

    ours = episodes(loaded[0])
    assert ours == episodes(reference) == episodes(model)
    assert len(set(ours[1])) > 1  # different lengths: the comparison is not trivially equal


# ------------------------------------------------------------------------------------------------
# Command line and configs
# ------------------------------------------------------------------------------------------------


def test_cli_trains_a_recurrent_a2c(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    args = ["train", "--algo", "a2c", "--env", f"pgplug.toy_envs:{CUE}", "--hyperparams", "policy=MlpLstmPolicy",
            "-n", "600", "--seed", "0", "--num-threads", "1", "--no-progress", "--n-eval-episodes", "2"]  # fmt: skip
    assert main(args) == 0
    (zip_path,) = (tmp_path / "logs" / "a2c").glob("*/pgplug-CueMemory-v0.zip")
    model = A2C.load(zip_path)
    assert isinstance(model.policy, RecurrentActorCriticPolicy)
    assert model.num_timesteps >= 600
    action, state = model.predict(np.array([1.0, 1.0, 0.0], dtype=np.float32), episode_start=np.ones(1, bool))
    assert action in (0, 1) and state is not None and state[0].shape == model.policy.lstm_hidden_state_shape


def test_cli_a3c_pong_trains_with_the_paper_lstm_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--hyperparams policy=CnnLstmPolicy`` picks ``atari/CnnLstmPolicy``: one frame per step into a
    256-unit LSTM shared by actor and critic (one serial worker here, to keep it quick)."""
    monkeypatch.chdir(tmp_path)
    args = ["train", "--algo", "a3c", "--env", "PongNoFrameskip-v4", "--hyperparams", "policy=CnnLstmPolicy",
            "backend=serial", "n_workers=1", "n_envs_per_worker=1", "-n", "80", "--seed", "0", "--num-threads", "1",
            "--no-progress", "--n-eval-episodes", "0", "--eval-freq", "-1"]  # fmt: skip
    assert main(args) == 0
    (zip_path,) = (tmp_path / "logs" / "a3c").glob("*/PongNoFrameskip-v4.zip")
    model = A3C.load(zip_path)
    policy = model.policy
    assert isinstance(policy, RecurrentActorCriticCnnPolicy)
    assert model.observation_space.shape == (1, 84, 84)  # frame_stack 1
    assert (policy.lstm_actor.hidden_size, policy.shared_lstm, policy.lstm_critic) == (256, True, None)
    assert model.t_max == 20 and model._n_updates == 4  # 80 steps / t_max 20


def test_a3c_config_prefers_the_lstm_entry_when_the_lstm_policy_is_asked_for() -> None:
    entries = load_config_file(builtin_config_path("a3c"))
    key, lstm = select_entry(entries, "PongNoFrameskip-v4", atari=True, policy="CnnLstmPolicy")
    assert (key, lstm["policy"], lstm["frame_stack"]) == ("atari/CnnLstmPolicy", "CnnLstmPolicy", 1)
    for policy in (None, "CnnPolicy"):
        key, plain = select_entry(entries, "PongNoFrameskip-v4", atari=True, policy=policy)
        assert (key, plain["policy"], plain["frame_stack"]) == ("atari", "CnnPolicy", 4)
    # No LSTM entry for CartPole: its own entry is used whatever the policy.
    assert select_entry(entries, "CartPole-v1", atari=False, policy="MlpLstmPolicy")[0] == "CartPole-v1"

    # What `pgplug train --algo a3c --env PongNoFrameskip-v4 --hyperparams policy=CnnLstmPolicy` reads.
    args = argparse.Namespace(conf_file=None, algo="a3c", hyperparams=["policy=CnnLstmPolicy"])
    hyperparams, source = base_hyperparams(args, "PongNoFrameskip-v4", True, None)
    assert hyperparams == lstm and "'atari/CnnLstmPolicy'" in source
    args.hyperparams = []
    assert base_hyperparams(args, "PongNoFrameskip-v4", True, None)[0]["frame_stack"] == 4
