"""The update differentiates the rollout's own forward passes (CNN policies): the same learning as SB3."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import stable_baselines3 as sb3
import torch as th
from gymnasium import spaces
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.torch_layers import NatureCNN

import pgplug
from pgplug.fast.rollout_graph import can_reuse_rollout_graph
from pgplug.runtime.runners import runner_for


class NoisyImages(gym.Env):
    """36×36 grey images of noise; the reward favours action 0 when the image is bright (learnable by a CNN)."""

    def __init__(self, continuous: bool = False) -> None:
        self.observation_space = spaces.Box(0, 255, (36, 36, 1), np.uint8)
        self.action_space = spaces.Box(-1, 1, (2,), np.float32) if continuous else spaces.Discrete(3)
        self.steps = 0

    def _obs(self) -> np.ndarray:
        self.bright = self.np_random.random() < 0.5
        return self.np_random.integers(100 if self.bright else 0, 156 if self.bright else 100, (36, 36, 1), np.uint8)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.steps = 0
        return self._obs(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.steps += 1
        first = float(np.asarray(action).reshape(-1)[0])
        reward = float(first > 0 if self.bright else first <= 0)
        return self._obs(), reward, False, self.steps >= 12, {}


def image_env(continuous: bool, seed: int = 0):
    return make_vec_env(NoisyImages, n_envs=2, seed=seed, env_kwargs={"continuous": continuous})


SMALL_CNN = {"features_extractor_class": NatureCNN, "features_extractor_kwargs": {"features_dim": 32}}


def flat_params(model: Any) -> th.Tensor:
    return th.cat([p.detach().flatten() for p in model.policy.parameters()])


@pytest.mark.parametrize("continuous", [False, True])
@pytest.mark.both_paths
def test_cnn_a2c_matches_sb3_with_the_rollout_graph(continuous: bool, fast_paths: bool) -> None:
    """Same seed and settings as SB3's A2C: the same actions at every step and allclose weights after 12 updates
    (with the fast paths, the update differentiates the rollout's own forward passes; without, SB3's code runs)."""
    kwargs = {"n_steps": 5, "ent_coef": 0.01, "seed": 0, "device": "cpu", "policy_kwargs": SMALL_CNN}
    ours = pgplug.A2C("CnnPolicy", image_env(continuous), **kwargs)
    theirs = sb3.A2C("CnnPolicy", image_env(continuous), **kwargs)
    theirs.policy.load_state_dict(ours.policy.state_dict())
    initial = flat_params(ours)
    actions: dict[str, list[np.ndarray]] = {"ours": [], "theirs": []}

    class Record(BaseCallback):
        def __init__(self, key: str) -> None:
            super().__init__()
            self.key = key

        def _on_step(self) -> bool:
            actions[self.key].append(np.array(self.locals["actions"]))
            return True

    th.manual_seed(5)
    ours.learn(120, callback=Record("ours"))
    th.manual_seed(5)
    theirs.learn(120, callback=Record("theirs"))
    assert ours.runner.fast == fast_paths and getattr(ours.runner, "keep_graph", False) == fast_paths
    for a, b in zip(actions["ours"], actions["theirs"], strict=True):
        np.testing.assert_allclose(a.reshape(b.shape), b, rtol=1e-5, atol=1e-6)
    assert not th.equal(flat_params(ours), initial)  # the updates moved the weights
    th.testing.assert_close(flat_params(ours), flat_params(theirs), rtol=1e-4, atol=1e-5)


def test_the_graph_is_used_once_and_dropped_on_abort() -> None:
    """A second loss on the same rollout runs the policy again; a stopped collection keeps no graph."""
    model = pgplug.A2C("CnnPolicy", image_env(False), n_steps=4, seed=0, device="cpu", policy_kwargs=SMALL_CNN)
    model.learn(8)
    _, callback = model._setup_learn(100, None, False, "t", False)
    assert model.collect_rollouts(model.env, callback, model.rollout_buffer, model.n_steps)
    rollout = model.last_rollout
    runner = model.runner
    assert rollout is not None and runner._graph is not None and runner._graph[0] is rollout
    assert runner._graph[2].values.requires_grad
    model.train()
    assert runner._graph is None
    model.train()  # no "backward through the graph a second time": the forward ran again

    class StopAt(BaseCallback):
        def _on_step(self) -> bool:
            return self.n_calls < 2

    stopper = StopAt()
    stopper.init_callback(model)
    assert model.collect_rollouts(model.env, stopper, model.rollout_buffer, model.n_steps) is False
    assert runner._graph_steps == [] and runner._graph is None


class DropoutCNN(NatureCNN):
    """A feature extractor whose training mode differs from its eval mode."""

    def __init__(self, observation_space: spaces.Box, features_dim: int = 32) -> None:
        super().__init__(observation_space, features_dim)
        self.linear.append(th.nn.Dropout(0.1))


def test_which_policies_reuse_the_graph() -> None:
    """CNNs do; plain MLPs (overhead-bound), recurrent policies, gSDE and unknown or mode-dependent modules do not."""

    def policy(name: str, env: Any, **kwargs: Any) -> Any:
        return pgplug.A2C(name, env, seed=0, device="cpu", **kwargs).policy

    assert can_reuse_rollout_graph(policy("CnnPolicy", image_env(False), policy_kwargs=SMALL_CNN))
    assert not can_reuse_rollout_graph(policy("MlpPolicy", "CartPole-v1"))
    assert not can_reuse_rollout_graph(policy("MlpLstmPolicy", "CartPole-v1"))
    assert not can_reuse_rollout_graph(policy("CnnPolicy", image_env(True), use_sde=True, policy_kwargs=SMALL_CNN))
    dropout = {"features_extractor_class": DropoutCNN, "features_extractor_kwargs": {"features_dim": 32}}
    assert not can_reuse_rollout_graph(policy("CnnPolicy", image_env(False), policy_kwargs=dropout))


def test_only_algorithms_that_update_once_per_rollout_ask_for_it() -> None:
    """A2C (and each A3C worker) ask the collector to keep the graph; REINFORCE, and a collector by default, do not."""
    cnn = {"policy_kwargs": SMALL_CNN, "seed": 0, "device": "cpu"}
    a2c = pgplug.A2C("CnnPolicy", image_env(False), n_steps=2, **cnn)
    a2c.learn(4)
    assert a2c.runner.keep_graph
    assert not runner_for(a2c.policy, fast=True).keep_graph
    reinforce = pgplug.REINFORCE("CnnPolicy", image_env(False), n_episodes=2, **cnn)
    reinforce.learn(24)
    assert not reinforce.runner.keep_graph
    # With the fast paths off, SB3's own code runs: no graph is kept.
    reference = pgplug.A2C("CnnPolicy", image_env(False), n_steps=2, fast_paths=False, **cnn)
    assert not reference.runner.fast and not getattr(reference.runner, "keep_graph", False)


def test_weights_changed_after_the_rollout_make_the_update_run_the_policy_again() -> None:
    """A callback that changes the weights in place at the rollout's end (as set_parameters does) makes the kept
    forward passes stale: the update runs the policy again, as SB3's does, instead of failing in backward."""

    class Nudge(BaseCallback):
        def _on_step(self) -> bool:
            return True

        def _on_rollout_end(self) -> None:
            with th.no_grad():
                for param in self.model.policy.parameters():
                    param.mul_(1.0)

    kwargs = {"n_steps": 4, "seed": 0, "device": "cpu", "policy_kwargs": SMALL_CNN}
    nudged = pgplug.A2C("CnnPolicy", image_env(False), **kwargs).learn(16, callback=Nudge())
    plain = pgplug.A2C("CnnPolicy", image_env(False), fast_paths=False, **kwargs).learn(16, callback=Nudge())
    assert nudged.runner.keep_graph and nudged._n_updates == 2
    th.testing.assert_close(flat_params(nudged), flat_params(plain), rtol=1e-4, atol=1e-5)
