"""The γ^t factor (``gamma_t=True``, any estimator): Ψ_t times γ^t, t counted from the episode's start.

Hand-computed numbers at γ = 0.5, the episode time across rollout boundaries as the collector counts it, the option
on a third-party estimator, and a model that saves and loads it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env

import pgplug.toy_envs  # noqa: F401  (registers pgplug/CueMemory-v0)
from pgplug import A2C, REINFORCE
from pgplug.contracts.estimator import episode_time
from pgplug.contracts.registries import make_estimator
from pgplug.errors import PgplugError
from pgplug.interop.variance import parse_estimator

PLUGIN_FIXTURES = Path(__file__).parent / "plugin_fixtures"


def columns(*cols: list[float]) -> th.Tensor:
    return th.tensor(cols, dtype=th.float32).T


def test_episode_time_counts_from_each_start_and_on_from_the_steps_run_before() -> None:
    starts = columns([1, 0, 0, 1], [0, 0, 1, 0])
    assert episode_time(starts).tolist() == columns([0, 1, 2, 0], [0, 1, 0, 1]).tolist()
    assert episode_time(starts, th.tensor([5, 3])).tolist() == columns([0, 1, 2, 0], [3, 4, 0, 1]).tolist()


def test_reward_to_go_with_gamma_t_matches_the_hand_computed_discounted_gradient_weights() -> None:
    # One 3-step episode, rewards 1, 1, 1, γ = 0.5: reward-to-go 1.75, 1.5, 1; times γ^t = 1, 0.5, 0.25.
    data = {"rewards": columns([1, 1, 1]), "episode_starts": columns([1, 0, 0]), "last_dones": th.ones(1)}
    plain = make_estimator("reward_to_go")(gamma=0.5, **data).advantages
    exact = make_estimator("reward_to_go", {"gamma_t": True})(gamma=0.5, **data).advantages
    assert plain[:, 0].tolist() == [1.75, 1.5, 1.0]
    assert exact[:, 0].tolist() == [1.75, 0.75, 0.25]


def test_gamma_t_weights_the_advantages_not_the_critic_targets() -> None:
    # A 2-step rollout inside an episode that had run 2 steps before it: t = 2, 3.
    data = {
        "rewards": columns([1, 1]),
        "episode_starts": columns([0, 0]),
        "last_dones": th.zeros(1),
        "values": columns([1, 1]),
        "last_values": th.ones(1),
        "first_step_times": th.tensor([2]),
    }
    plain = make_estimator("td")(gamma=0.5, **data)
    exact = make_estimator("td", {"gamma_t": True})(gamma=0.5, **data)
    assert plain.advantages[:, 0].tolist() == [0.5, 0.5]  # r + γV' − V = 1 + 0.5 − 1
    assert exact.advantages[:, 0].tolist() == [0.5 * 0.25, 0.5 * 0.125]
    assert th.equal(exact.returns, plain.returns)


def test_gamma_t_is_remembered_as_a_parameter_and_refused_when_not_a_boolean() -> None:
    estimator = make_estimator("gae", {"gae_lambda": 0.9, "gamma_t": True})
    assert estimator.params() == {"gae_lambda": 0.9, "gamma_t": True}
    assert repr(estimator) == "GAE(gae_lambda=0.9, gamma_t=True)"
    assert make_estimator("gae").params() == {"gae_lambda": 0.95}
    with pytest.raises(PgplugError, match=r"^estimator 'gae''s gamma_t must be true or false, got 'yes'$"):
        make_estimator("gae", {"gamma_t": "yes"})
    with pytest.raises(PgplugError, match=r"valid keys: gae_lambda, gamma_t$"):
        make_estimator("gae", {"lambda": 0.9})


def test_a_third_party_estimator_takes_gamma_t_without_a_line_of_its_own(plugin_host) -> None:
    plugin_host.load_local(str(PLUGIN_FIXTURES / "scaled_td_plugin.py"))
    data = {
        "rewards": columns([1, 1]),
        "episode_starts": columns([1, 0]),
        "last_dones": th.zeros(1),
        "values": columns([1, 1]),
        "last_values": th.ones(1),
    }
    exact = make_estimator("scaled_td", {"scale": 2.0, "gamma_t": True})(gamma=0.5, **data)
    assert exact.advantages[:, 0].tolist() == [1.0, 0.5]  # 2 · 0.5 · γ^0, 2 · 0.5 · γ^1


def test_the_collector_carries_each_episodes_time_across_rollouts() -> None:
    """CueMemory episodes last 6 steps; A2C's 4-step rollouts cut them anywhere: each step's time is its index in
    the episode, whichever rollout holds it."""
    seen: list[np.ndarray] = []

    class Record(BaseCallback):
        def _on_step(self) -> bool:
            return True

        def _on_rollout_end(self) -> None:
            rollout = self.locals["rollout"]
            seen.append(episode_time(rollout.episode_starts, rollout.first_step_times).numpy().copy())

    env = make_vec_env("pgplug/CueMemory-v0", n_envs=2, seed=0)
    model = A2C("MlpPolicy", env, n_steps=4, seed=0, estimator="td")
    model.learn(40, callback=Record())
    times = np.concatenate(seen)  # [steps, envs], in the order taken
    expected = np.arange(len(times)) % 6
    assert len(seen) == 5
    assert times.tolist() == np.stack([expected, expected], axis=1).tolist()


def test_a_model_with_gamma_t_learns_saves_and_loads_it(tmp_path: Path) -> None:
    env = make_vec_env("CartPole-v1", n_envs=2, seed=0)
    model = REINFORCE("MlpPolicy", env, seed=0, estimator="reward_to_go", estimator_kwargs={"gamma_t": True})
    model.learn(400)
    model.save(tmp_path / "model.zip")
    loaded = REINFORCE.load(tmp_path / "model.zip")
    assert loaded.estimator.gamma_t is True
    assert loaded.estimator.params() == {"gamma_t": True}


def test_the_variance_lab_names_an_estimator_with_gamma_t() -> None:
    spec = parse_estimator("reward_to_go:gamma_t=true")
    assert spec.label == "reward_to_go:gamma_t=True"
    assert spec.build().gamma_t is True
