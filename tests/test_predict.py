"""pgplug's ``predict`` (SB3's, minus per-call checks) returns exactly what SB3's returns."""

from __future__ import annotations

import numpy as np
import pytest
import stable_baselines3 as sb3
import torch as th

import pgplug


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
@pytest.mark.parametrize("deterministic", [True, False])
@pytest.mark.both_paths
def test_predict_matches_sb3(env_id: str, deterministic: bool) -> None:
    """Same weights, same seed: the same actions for batched and single observations; eval mode after."""
    ours = pgplug.A2C("MlpPolicy", env_id, seed=0, device="cpu")
    theirs = sb3.A2C("MlpPolicy", env_id, seed=1, device="cpu")
    theirs.policy.load_state_dict(ours.policy.state_dict())
    ours.policy.set_training_mode(True)
    rng = np.random.default_rng(0)
    shape = ours.observation_space.shape
    for batch in (rng.normal(size=(16, *shape)), rng.normal(size=shape)):
        batch = batch.astype(np.float32)
        th.manual_seed(3)
        expected, _ = theirs.predict(batch, deterministic=deterministic)
        th.manual_seed(3)
        actions, state = ours.predict(batch, deterministic=deterministic)
        assert state is None
        assert actions.shape == expected.shape
        np.testing.assert_array_equal(actions, expected)
    assert not any(module.training for module in ours.policy.modules())
    assert "set_training_mode" not in ours.policy.__dict__  # the stand-in is gone after the call


def test_predict_refuses_a_gym_reset_tuple() -> None:
    """SB3's check for the ``obs, info = env.reset()`` mistake still applies."""
    model = pgplug.A2C("MlpPolicy", "CartPole-v1", seed=0, device="cpu")
    with pytest.raises(ValueError, match="mixing Gym API"):
        model.predict((np.zeros(4, dtype=np.float32), {}))
    assert "set_training_mode" not in model.policy.__dict__
