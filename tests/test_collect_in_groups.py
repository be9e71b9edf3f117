"""Collection group by group: the policy acts for one group of envs while another group's emulators step.

``AleVecEnv(groups=k)`` must step exactly as one ``AtariVectorEnv``, and a rollout collected group by group must be a
rollout of the env: its actions, replayed on a fresh env with the same seeds, give back its observations, rewards
and episode starts, and its values and log-probs are the policy's own for its observations and actions.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch as th

from pgplug import A2C
from pgplug.contracts.vec_env import GroupSteppedVecEnv
from pgplug.errors import PgplugError
from pgplug.runtime.ale_vector import AleVecEnv
from pgplug.runtime.collector import RolloutCollector
from pgplug.runtime.runners import runner_for

#: Short games (100 frames: 25 agent steps) so that a rollout crosses episode ends.
SHORT = {"max_num_frames_per_episode": 100}


def ale(game: str, n_envs: int, groups: int, seed: int = 0, **kwargs: Any) -> AleVecEnv:
    env = AleVecEnv(game, n_envs, groups=groups, stack_num=4, **kwargs)
    env.seed(seed)
    return env


def test_groups_split_the_envs_consecutively() -> None:
    env = ale("pong", 5, groups=3)
    assert isinstance(env, GroupSteppedVecEnv)
    assert env.groups == (slice(0, 2), slice(2, 3), slice(3, 5))
    env.close()
    with pytest.raises(PgplugError, match="1 to 2 groups, not 3"):
        AleVecEnv("pong", 2, groups=3)


def test_envs_in_groups_step_as_one_vector_env() -> None:
    """The same seeds, the same random actions: the same frames, rewards, dones, lives and game scores."""
    one, three = ale("breakout", 5, groups=1), ale("breakout", 5, groups=3)
    assert np.array_equal(one.reset(), three.reset())
    rng = np.random.default_rng(0)
    dones_seen = 0
    for _ in range(400):
        actions = rng.integers(0, 4, 5)
        (obs1, rew1, done1, info1), (obs3, rew3, done3, info3) = one.step(actions), three.step(actions)
        assert np.array_equal(obs1, obs3) and np.array_equal(rew1, rew3) and np.array_equal(done1, done3)
        for a, b in zip(info1, info3):
            assert a.keys() == b.keys() and a["lives"] == b["lives"]
            assert a.get("episode", {}).get("r") == b.get("episode", {}).get("r")
        dones_seen += int(done1.sum())
    assert dones_seen > 0  # lives were lost along the way
    one.close(), three.close()


def collect(
    env: AleVecEnv, fast: bool = True, keep_graph: bool = False, rollouts: int = 2, steps: int = 20, seed: int = 0
) -> tuple[A2C, RolloutCollector, list[dict[str, Any]]]:
    """Rollouts of an untrained CNN policy, copied, with the collector that took them."""
    model = A2C("CnnPolicy", env, seed=seed, device="cpu")
    collector = RolloutCollector(runner_for(model.policy, fast=fast, keep_graph=keep_graph), env, gamma=0.99)
    collector.bootstrap_truncation = False  # the rewards as the env gave them, for the replay
    collector.last_obs = env.reset()
    kept = []
    for _ in range(rollouts):
        rollout = collector.collect(steps)
        assert rollout is not None
        kept.append({name: getattr(rollout, name).clone() for name in ("observations", "actions", "rewards")})
        kept[-1].update(
            episode_starts=rollout.episode_starts.clone(),
            last_dones=rollout.last_dones.clone(),
            values=rollout.values.clone(),
            log_probs=rollout.log_probs.clone(),
            rollout=rollout,
        )
    return model, collector, kept


def test_a_rollout_collected_in_groups_replays_on_the_env() -> None:
    env = ale("pong", 4, groups=2, **SHORT)
    _, collector, rollouts = collect(env, seed=3)
    assert collector.steps_in_groups()
    replay = ale("pong", 4, groups=1, seed=3, **SHORT)  # as the model seeds its env (SB3's set_random_seed)
    obs = replay.reset()
    starts = np.ones(4, dtype=np.float32)
    ends = 0
    for rollout in rollouts:
        for t in range(rollout["actions"].shape[0]):
            assert np.array_equal(rollout["observations"][t].numpy(), obs)
            assert np.array_equal(rollout["episode_starts"][t].numpy(), starts)
            obs, rewards, dones, _ = replay.step(rollout["actions"][t].numpy())
            assert np.array_equal(rollout["rewards"][t].numpy(), rewards)
            starts = dones.astype(np.float32)
            ends += int(dones.sum())
        assert np.array_equal(rollout["last_dones"].numpy(), starts)
    assert np.array_equal(collector.last_obs, obs) and ends >= 4  # every env's game ended at least once
    replay.close(), env.close()


@pytest.mark.parametrize("keep_graph", [False, True])
def test_values_and_log_probs_are_the_policys_own(keep_graph: bool) -> None:
    """Each group's step forward, and (keep_graph) the rollout graph the update differentiates, put back in order."""
    env = ale("pong", 5, groups=2, **SHORT)  # groups of 2 and 3 envs
    model, collector, rollouts = collect(env, keep_graph=keep_graph, rollouts=1, steps=6)
    rollout = rollouts[0]
    obs, actions = rollout["observations"].flatten(0, 1), rollout["actions"].flatten(0, 1)
    with th.no_grad():
        values, log_probs, _ = model.policy.evaluate_actions(obs, actions)
    # CNN sums round differently at another batch size: agreement to float32 rounding, not bitwise
    th.testing.assert_close(rollout["values"].flatten(), values.flatten(), atol=1e-4, rtol=1e-4)
    th.testing.assert_close(rollout["log_probs"].flatten(), log_probs, atol=1e-4, rtol=1e-4)
    if keep_graph:
        batch = collector.runner.evaluate_rollout(rollout["rollout"], differentiate_entropy=True)
        assert batch.evaluation.values.requires_grad  # the kept graph, not a new forward
        th.testing.assert_close(batch.evaluation.values.detach(), values.flatten(), atol=1e-4, rtol=1e-4)
        th.testing.assert_close(batch.evaluation.log_prob.detach(), log_probs, atol=1e-4, rtol=1e-4)
    env.close()


def test_on_step_aborts_before_any_env_steps_again() -> None:
    env = ale("pong", 4, groups=2)
    model = A2C("CnnPolicy", env, seed=0, device="cpu")
    collector = RolloutCollector(runner_for(model.policy, fast=True), env, gamma=0.99)
    collector.last_obs = env.reset()
    calls = []

    def stop_at_third(step_locals: dict[str, Any]) -> bool:
        calls.append(step_locals["n_steps"])
        assert step_locals["new_obs"].shape == (4, 4, 84, 84) and len(step_locals["infos"]) == 4
        return len(calls) < 3

    assert collector.collect(10, on_step=stop_at_third) is None
    assert calls == [0, 1, 2] and collector.env_steps_taken == 3
    assert collector.collect(5) is not None  # every group was received: the env steps on
    env.close()


def test_only_fast_feed_forward_runners_with_several_groups_step_in_groups() -> None:
    env, single = ale("pong", 4, groups=2), ale("pong", 4, groups=1)
    model = A2C("CnnPolicy", env, seed=0, device="cpu")
    assert RolloutCollector(runner_for(model.policy, fast=True), env, 0.99).steps_in_groups()
    assert not RolloutCollector(runner_for(model.policy, fast=False), env, 0.99).steps_in_groups()  # the off switch
    assert not RolloutCollector(runner_for(model.policy, fast=True), single, 0.99).steps_in_groups()
    from stable_baselines3.common.vec_env import VecMonitor

    wrapped = VecMonitor(env)  # forwards the group methods to env: stepping them would bypass the wrapper
    assert not RolloutCollector(runner_for(model.policy, fast=True), wrapped, 0.99).steps_in_groups()
    env.close(), single.close()


def test_a2c_learns_in_groups_with_callbacks() -> None:
    from stable_baselines3.common.callbacks import BaseCallback

    class Count(BaseCallback):
        def _on_step(self) -> bool:
            return True

    env = ale("pong", 4, groups=2)
    model = A2C("CnnPolicy", env, n_steps=5, seed=0, device="cpu")
    counter = Count()
    model.learn(100, callback=counter)
    assert model.num_timesteps == 100 and counter.n_calls == 25
    assert model._collector is not None and model._collector.steps_in_groups()
    assert not np.shares_memory(model._last_obs, model.rollout_buffer.rows["observations"])  # the env's, kept
    env.close()
