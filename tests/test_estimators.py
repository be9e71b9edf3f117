"""The advantage estimators: hand-computed cases, identities on random rollouts, the shared contract.

Expected numbers are literals worked out by hand from design.md §2 (the arithmetic is in the
comments), never produced by the code under test. Every case has two env columns holding different
data, so the vectorisation over envs is checked too.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch as th
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from pgplug.contracts.estimator import Estimate, Estimator
from pgplug.contracts.registries import get_host, make_estimator
from pgplug.errors import PgplugError, UnknownNameError
from pgplug.plugins.estimators import ESTIMATORS, GAE, TD, Baseline, FullReturn, NStep, RewardToGo

GAMMA = 0.5


def columns(*cols: list[float]) -> np.ndarray:
    """Time-major ``[T, N]`` float32 array from one list per env column."""
    return np.array(cols, dtype=np.float32).T


def run(estimator: Estimator, data: dict[str, Any], gamma: float) -> Estimate:
    return estimator(gamma=gamma, **data)


# ------------------------------------------------------------------------------------------------
# Hand-computed cases, γ = 0.5. Notation: dones d_t, V_T = last_values, δ_t = r_t + γV_{t+1}(1−d_t) − V_t.
# ------------------------------------------------------------------------------------------------

SCENARIOS: dict[str, dict[str, np.ndarray]] = {
    # Column 0 and column 1: one 3-step episode with rewards (1, 2, 3) that ends at the rollout's last
    # step; values (2, 4, 8) and (1, −1, 2). last_values are ignored (the last step is done).
    "one_episode": {
        "rewards": columns([1, 2, 3], [1, 2, 3]),
        "values": columns([2, 4, 8], [1, -1, 2]),
        "episode_starts": columns([1, 0, 0], [1, 0, 0]),
        "last_values": np.array([16, 5], dtype=np.float32),
        "last_dones": np.array([1, 1], dtype=np.float32),
    },
    # Two episodes per column, both complete. Column 0: steps 0–2 then step 3; column 1: step 0 then steps 1–3.
    "two_episodes": {
        "rewards": columns([1, 2, 3, 4], [4, 1, 2, 3]),
        "values": columns([1, 2, 1, 2], [3, 2, 4, 8]),
        "episode_starts": columns([1, 0, 0, 1], [1, 1, 0, 0]),
        "last_values": np.array([9, 10], dtype=np.float32),
        "last_dones": np.array([1, 1], dtype=np.float32),
    },
    # The episodes continue past the rollout's end: bootstrap from last_values (16 and 8).
    # Column 1's first step belongs to an episode that began before the rollout and ends at t = 0.
    "continues": {
        "rewards": columns([1, 2, 3], [2, 1, 4]),
        "values": columns([2, 4, 8], [4, 2, 4]),
        "episode_starts": columns([1, 0, 0], [0, 1, 0]),
        "last_values": np.array([16, 8], dtype=np.float32),
        "last_dones": np.array([0, 0], dtype=np.float32),
    },
    # Time-limit truncations, SB3's convention: the step is done and its reward already holds γ·V(terminal obs).
    # Column 0: truncated at t = 1 with true reward 2 and V(terminal) = 6, so r_1 = 2 + 0.5·6 = 5; a new
    #           episode starts at t = 2 and continues past the rollout (V_T = 10).
    # Column 1: truncated at the rollout's last step with true reward 3 and V(terminal) = 4, so r_2 = 3 + 0.5·4 = 5;
    #           last_values = 100 is V of the next episode's first state and must not be used.
    "timeout": {
        "rewards": columns([1, 5, 3], [1, 2, 5]),
        "values": columns([2, 4, 8], [2, 4, 8]),
        "episode_starts": columns([1, 0, 1], [1, 0, 0]),
        "last_values": np.array([10, 100], dtype=np.float32),
        "last_dones": np.array([0, 1], dtype=np.float32),
    },
}

CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "full_return": ("full_return", {}),
    "reward_to_go": ("reward_to_go", {}),
    "baseline": ("baseline", {}),
    "td": ("td", {}),
    "nstep(n=1)": ("nstep", {"n": 1}),
    "nstep(n=2)": ("nstep", {"n": 2}),
    "nstep(n=None)": ("nstep", {"n": None}),
    "gae(lambda=0)": ("gae", {"gae_lambda": 0.0}),
    "gae(lambda=0.5)": ("gae", {"gae_lambda": 0.5}),
    "gae(lambda=1)": ("gae", {"gae_lambda": 1.0}),
}

# (advantages, returns) per scenario and estimator configuration; returns is None without a critic.
EXPECTED: dict[str, dict[str, tuple[np.ndarray, np.ndarray | None]]] = {
    "one_episode": {
        # reward-to-go (both columns): G_2 = 3, G_1 = 2 + 0.5·3 = 3.5, G_0 = 1 + 0.5·3.5 = 2.75
        "full_return": (columns([2.75, 2.75, 2.75], [2.75, 2.75, 2.75]), None),
        "reward_to_go": (columns([2.75, 3.5, 3], [2.75, 3.5, 3]), None),
        # col 0: 2.75 − 2, 3.5 − 4, 3 − 8; col 1: 2.75 − 1, 3.5 + 1, 3 − 2
        "baseline": (columns([0.75, -0.5, -5], [1.75, 4.5, 1]), columns([2.75, 3.5, 3], [2.75, 3.5, 3])),
        # targets col 0: 1 + 0.5·4 = 3, 2 + 0.5·8 = 6, 3 (done); col 1: 1 + 0.5·(−1) = 0.5, 2 + 0.5·2 = 3, 3
        # δ col 0: 3 − 2 = 1, 6 − 4 = 2, 3 − 8 = −5; col 1: 0.5 − 1 = −0.5, 3 + 1 = 4, 3 − 2 = 1
        "td": (columns([1, 2, -5], [-0.5, 4, 1]), columns([3, 6, 3], [0.5, 3, 3])),
        "nstep(n=1)": (columns([1, 2, -5], [-0.5, 4, 1]), columns([3, 6, 3], [0.5, 3, 3])),
        # G^(2) col 0: 1 + 0.5·2 + 0.25·8 = 4; t=1: m = 2 steps to the episode's end, 2 + 0.5·3 = 3.5 (no
        # bootstrap); t=2: 3. col 1: 1 + 0.5·2 + 0.25·2 = 2.5, 3.5, 3.
        "nstep(n=2)": (columns([2, -0.5, -5], [1.5, 4.5, 1]), columns([4, 3.5, 3], [2.5, 3.5, 3])),
        # the episode ends inside the rollout, so G^(∞) is the reward-to-go
        "nstep(n=None)": (columns([0.75, -0.5, -5], [1.75, 4.5, 1]), columns([2.75, 3.5, 3], [2.75, 3.5, 3])),
        "gae(lambda=0)": (columns([1, 2, -5], [-0.5, 4, 1]), columns([3, 6, 3], [0.5, 3, 3])),
        # γλ = 0.25. col 0: A_2 = −5, A_1 = 2 + 0.25·(−5) = 0.75, A_0 = 1 + 0.25·0.75 = 1.1875;
        # col 1: A_2 = 1, A_1 = 4 + 0.25·1 = 4.25, A_0 = −0.5 + 0.25·4.25 = 0.5625. returns = A + V.
        "gae(lambda=0.5)": (
            columns([1.1875, 0.75, -5], [0.5625, 4.25, 1]),
            columns([3.1875, 4.75, 3], [1.5625, 3.25, 3]),
        ),
        # γλ = 0.5. col 0: A_2 = −5, A_1 = 2 − 2.5 = −0.5, A_0 = 1 − 0.25 = 0.75;
        # col 1: A_2 = 1, A_1 = 4 + 0.5 = 4.5, A_0 = −0.5 + 2.25 = 1.75
        "gae(lambda=1)": (
            columns([0.75, -0.5, -5], [1.75, 4.5, 1]),
            columns([2.75, 3.5, 3], [2.75, 3.5, 3]),
        ),
    },
    "two_episodes": {
        # dones col 0: (0, 0, 1, 1); col 1: (1, 0, 0, 1).
        # reward-to-go col 0: G_2 = 3, G_1 = 2 + 1.5 = 3.5, G_0 = 1 + 1.75 = 2.75, G_3 = 4;
        #              col 1: G_0 = 4, G_3 = 3, G_2 = 2 + 1.5 = 3.5, G_1 = 1 + 1.75 = 2.75
        "full_return": (columns([2.75, 2.75, 2.75, 4], [4, 2.75, 2.75, 2.75]), None),
        "reward_to_go": (columns([2.75, 3.5, 3, 4], [4, 2.75, 3.5, 3]), None),
        # col 0: 2.75 − 1, 3.5 − 2, 3 − 1, 4 − 2; col 1: 4 − 3, 2.75 − 2, 3.5 − 4, 3 − 8
        "baseline": (
            columns([1.75, 1.5, 2, 2], [1, 0.75, -0.5, -5]),
            columns([2.75, 3.5, 3, 4], [4, 2.75, 3.5, 3]),
        ),
        # targets col 0: 1 + 0.5·2 = 2, 2 + 0.5·1 = 2.5, 3, 4; col 1: 4, 1 + 0.5·4 = 3, 2 + 0.5·8 = 6, 3
        # δ col 0: 2 − 1, 2.5 − 2, 3 − 1, 4 − 2; col 1: 4 − 3, 3 − 2, 6 − 4, 3 − 8
        "td": (columns([1, 0.5, 2, 2], [1, 1, 2, -5]), columns([2, 2.5, 3, 4], [4, 3, 6, 3])),
        "nstep(n=1)": (columns([1, 0.5, 2, 2], [1, 1, 2, -5]), columns([2, 2.5, 3, 4], [4, 3, 6, 3])),
        # G^(2) col 0: 1 + 0.5·2 + 0.25·V_2 = 1 + 1 + 0.25 = 2.25, 2 + 0.5·3 = 3.5 (ends), 3, 4;
        #       col 1: 4, 1 + 0.5·2 + 0.25·V_3 = 1 + 1 + 2 = 4, 2 + 0.5·3 = 3.5 (ends), 3
        "nstep(n=2)": (
            columns([1.25, 1.5, 2, 2], [1, 2, -0.5, -5]),
            columns([2.25, 3.5, 3, 4], [4, 4, 3.5, 3]),
        ),
        "nstep(n=None)": (
            columns([1.75, 1.5, 2, 2], [1, 0.75, -0.5, -5]),
            columns([2.75, 3.5, 3, 4], [4, 2.75, 3.5, 3]),
        ),
        "gae(lambda=0)": (columns([1, 0.5, 2, 2], [1, 1, 2, -5]), columns([2, 2.5, 3, 4], [4, 3, 6, 3])),
        # γλ = 0.25, stopping at episode ends. col 0: A_3 = 2, A_2 = 2, A_1 = 0.5 + 0.25·2 = 1, A_0 = 1 + 0.25·1 = 1.25;
        # col 1: A_3 = −5, A_2 = 2 + 0.25·(−5) = 0.75, A_1 = 1 + 0.25·0.75 = 1.1875, A_0 = 1
        "gae(lambda=0.5)": (
            columns([1.25, 1, 2, 2], [1, 1.1875, 0.75, -5]),
            columns([2.25, 3, 3, 4], [4, 3.1875, 4.75, 3]),
        ),
        # γλ = 0.5. col 0: A_3 = 2, A_2 = 2, A_1 = 0.5 + 1 = 1.5, A_0 = 1 + 0.75 = 1.75;
        # col 1: A_3 = −5, A_2 = 2 − 2.5 = −0.5, A_1 = 1 − 0.25 = 0.75, A_0 = 1
        "gae(lambda=1)": (
            columns([1.75, 1.5, 2, 2], [1, 0.75, -0.5, -5]),
            columns([2.75, 3.5, 3, 4], [4, 2.75, 3.5, 3]),
        ),
    },
    "continues": {
        # dones col 0: (0, 0, 0); col 1: (1, 0, 0). Monte-Carlo estimators never bootstrap: they sum what the
        # rollout holds. col 0: 3, 2 + 1.5 = 3.5, 1 + 1.75 = 2.75; col 1: 2 (ends), 4, 1 + 0.5·4 = 3.
        # full_return col 1: t = 0 is its episode's first step in the rollout (2); then 3 for the new episode.
        "full_return": (columns([2.75, 2.75, 2.75], [2, 3, 3]), None),
        "reward_to_go": (columns([2.75, 3.5, 3], [2, 3, 4]), None),
        # col 0: 2.75 − 2, 3.5 − 4, 3 − 8; col 1: 2 − 4, 3 − 2, 4 − 4
        "baseline": (columns([0.75, -0.5, -5], [-2, 1, 0]), columns([2.75, 3.5, 3], [2, 3, 4])),
        # targets col 0: 1 + 0.5·4 = 3, 2 + 0.5·8 = 6, 3 + 0.5·16 = 11; col 1: 2 (done), 1 + 0.5·4 = 3, 4 + 0.5·8 = 8
        "td": (columns([1, 2, 3], [-2, 1, 4]), columns([3, 6, 11], [2, 3, 8])),
        "nstep(n=1)": (columns([1, 2, 3], [-2, 1, 4]), columns([3, 6, 11], [2, 3, 8])),
        # G^(2) col 0: 1 + 0.5·2 + 0.25·8 = 4, 2 + 0.5·3 + 0.25·16 = 7.5, m = 1 at the rollout's end: 3 + 0.5·16 = 11;
        #       col 1: 2, 1 + 0.5·4 + 0.25·8 = 5, 4 + 0.5·8 = 8
        "nstep(n=2)": (columns([2, 3.5, 3], [-2, 3, 4]), columns([4, 7.5, 11], [2, 5, 8])),
        # G^(∞) col 0: 11, 2 + 0.5·11 = 7.5, 1 + 0.5·7.5 = 4.75; col 1: 2, 1 + 0.5·4 + 0.25·8 = 5, 8
        "nstep(n=None)": (columns([2.75, 3.5, 3], [-2, 3, 4]), columns([4.75, 7.5, 11], [2, 5, 8])),
        "gae(lambda=0)": (columns([1, 2, 3], [-2, 1, 4]), columns([3, 6, 11], [2, 3, 8])),
        # δ col 0: (1, 2, 3), col 1: (−2, 1, 4). γλ = 0.25. col 0: A_2 = 3, A_1 = 2 + 0.75 = 2.75,
        # A_0 = 1 + 0.25·2.75 = 1.6875; col 1: A_2 = 4, A_1 = 1 + 0.25·4 = 2, A_0 = −2 (done)
        "gae(lambda=0.5)": (columns([1.6875, 2.75, 3], [-2, 2, 4]), columns([3.6875, 6.75, 11], [2, 4, 8])),
        # γλ = 0.5. col 0: A_2 = 3, A_1 = 2 + 1.5 = 3.5, A_0 = 1 + 1.75 = 2.75; col 1: 4, 1 + 2 = 3, −2
        "gae(lambda=1)": (columns([2.75, 3.5, 3], [-2, 3, 4]), columns([4.75, 7.5, 11], [2, 5, 8])),
    },
    "timeout": {
        # dones col 0: (0, 1, 0); col 1: (0, 0, 1).
        # reward-to-go col 0: G_1 = 5, G_0 = 1 + 0.5·5 = 3.5, G_2 = 3; col 1: 5, 2 + 2.5 = 4.5, 1 + 2.25 = 3.25
        "full_return": (columns([3.5, 3.5, 3], [3.25, 3.25, 3.25]), None),
        "reward_to_go": (columns([3.5, 5, 3], [3.25, 4.5, 5]), None),
        # col 0: 3.5 − 2, 5 − 4, 3 − 8; col 1: 3.25 − 2, 4.5 − 4, 5 − 8
        "baseline": (columns([1.5, 1, -5], [1.25, 0.5, -3]), columns([3.5, 5, 3], [3.25, 4.5, 5])),
        # targets col 0: 1 + 0.5·4 = 3, 5 (done: γ·V(terminal) is inside r_1), 3 + 0.5·10 = 8;
        #         col 1: 1 + 0.5·4 = 3, 2 + 0.5·8 = 6, 5 (done: last_values = 100 unused)
        "td": (columns([1, 1, 0], [1, 2, -3]), columns([3, 5, 8], [3, 6, 5])),
        "nstep(n=1)": (columns([1, 1, 0], [1, 2, -3]), columns([3, 5, 8], [3, 6, 5])),
        # G^(2) col 0: 1 + 0.5·5 = 3.5 (ends at t = 1), 5, 8; col 1: 1 + 0.5·2 + 0.25·8 = 4, 2 + 0.5·5 = 4.5, 5
        "nstep(n=2)": (columns([1.5, 1, 0], [2, 0.5, -3]), columns([3.5, 5, 8], [4, 4.5, 5])),
        # G^(∞) col 0: 3.5, 5, 8; col 1: the reward-to-go 3.25, 4.5, 5
        "nstep(n=None)": (columns([1.5, 1, 0], [1.25, 0.5, -3]), columns([3.5, 5, 8], [3.25, 4.5, 5])),
        "gae(lambda=0)": (columns([1, 1, 0], [1, 2, -3]), columns([3, 5, 8], [3, 6, 5])),
        # δ col 0: (1, 1, 0), col 1: (1, 2, −3). γλ = 0.25. col 0: A_2 = 0, A_1 = 1, A_0 = 1 + 0.25·1 = 1.25;
        # col 1: A_2 = −3, A_1 = 2 + 0.25·(−3) = 1.25, A_0 = 1 + 0.25·1.25 = 1.3125
        "gae(lambda=0.5)": (columns([1.25, 1, 0], [1.3125, 1.25, -3]), columns([3.25, 5, 8], [3.3125, 5.25, 5])),
        # γλ = 0.5. col 0: 0, 1, 1 + 0.5 = 1.5; col 1: −3, 2 − 1.5 = 0.5, 1 + 0.25 = 1.25
        "gae(lambda=1)": (columns([1.5, 1, 0], [1.25, 0.5, -3]), columns([3.5, 5, 8], [3.25, 4.5, 5])),
    },
}


def test_hand_cases_cover_every_builtin_estimator() -> None:
    assert {name for name, _ in CONFIGS.values()} == {cls.name for cls in ESTIMATORS}
    assert all(set(cases) == set(CONFIGS) for cases in EXPECTED.values())


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_hand_computed(scenario: str, config: str) -> None:
    name, kwargs = CONFIGS[config]
    expected_advantages, expected_returns = EXPECTED[scenario][config]
    estimate = run(make_estimator(name, kwargs), SCENARIOS[scenario], GAMMA)
    th.testing.assert_close(estimate.advantages, th.as_tensor(expected_advantages), rtol=0, atol=1e-6)
    if expected_returns is None:
        assert estimate.returns is None
    else:
        assert estimate.returns is not None
        th.testing.assert_close(estimate.returns, th.as_tensor(expected_returns), rtol=0, atol=1e-6)


def test_nstep_longer_than_the_rollout_runs_to_its_end() -> None:
    """n ≥ T is the same as n=None: m is capped by the rollout's end."""
    data = SCENARIOS["continues"]
    for n in (3, 4, 100):
        estimate = run(NStep(n=n), data, GAMMA)
        th.testing.assert_close(estimate.returns, th.as_tensor(columns([4.75, 7.5, 11], [2, 5, 8])), rtol=0, atol=0)


# ------------------------------------------------------------------------------------------------
# Pure-python references of the design.md §2 formulas, one env column at a time.
# ------------------------------------------------------------------------------------------------


def column_dones(starts: list[float], last_done: float) -> list[bool]:
    """done_t = episode_starts[t + 1], and last_dones for the last step."""
    return [bool(s) for s in starts[1:]] + [bool(last_done)]


def steps_left(dones: list[bool], t: int) -> tuple[int, bool]:
    """Steps from t to its episode's end (inclusive) or to the rollout's end, and whether the episode ended."""
    for k in range(t, len(dones)):
        if dones[k]:
            return k - t + 1, True
    return len(dones) - t, False


def reference_sum_to_go(rewards: list[float], dones: list[bool]) -> list[float]:
    """γ = 1 reward-to-go: the plain sum of the episode's rewards from t on."""
    return [sum(rewards[t : t + steps_left(dones, t)[0]]) for t in range(len(rewards))]


def reference_nstep(
    rewards: list[float],
    values: list[float],
    dones: list[bool],
    last_value: float,
    gamma: float,
    n: int | None,
) -> list[float]:
    """G_t^(m) = Σ_{k<m} γ^k r_{t+k} + γ^m V_{t+m}·[no episode end in between], m = min(n, steps left)."""
    horizon = len(rewards)
    v = [*values, last_value]
    out = []
    for t in range(horizon):
        left, episode_ends = steps_left(dones, t)
        m = left if n is None else min(n, left)
        ended = episode_ends and m == left
        target = sum(gamma**k * rewards[t + k] for k in range(m))
        if not ended:
            target += gamma**m * v[t + m]
        out.append(target)
    return out


def reference_gae(
    rewards: list[float],
    values: list[float],
    dones: list[bool],
    last_value: float,
    gamma: float,
    gae_lambda: float,
) -> list[float]:
    """Forward view Σ_l (γλ)^l δ_{t+l} over the rest of t's episode inside the rollout."""
    v = [*values, last_value]
    deltas = [r + gamma * v[t + 1] * (not d) - v[t] for t, (r, d) in enumerate(zip(rewards, dones))]
    return [
        sum((gamma * gae_lambda) ** k * deltas[t + k] for k in range(steps_left(dones, t)[0]))
        for t in range(len(rewards))
    ]


# ------------------------------------------------------------------------------------------------
# Properties on random rollouts.
# ------------------------------------------------------------------------------------------------

PROPERTY_SETTINGS = settings(max_examples=150, deadline=None)
TOL: dict[str, float] = {"rtol": 1e-5, "atol": 1e-4}
finite = st.floats(-10, 10, allow_nan=False, allow_infinity=False, width=32)
unit = st.floats(0, 1, allow_nan=False)


@st.composite
def rollouts(draw: st.DrawFn, gamma: st.SearchStrategy[float] = unit) -> tuple[dict[str, np.ndarray], float]:
    """A random time-major rollout (T ≤ 12 steps, N ≤ 3 envs) and a discount factor."""
    horizon, n_envs = draw(st.integers(1, 12)), draw(st.integers(1, 3))
    data = {
        "rewards": draw(hnp.arrays(np.float32, (horizon, n_envs), elements=finite)),
        "values": draw(hnp.arrays(np.float32, (horizon, n_envs), elements=finite)),
        "episode_starts": draw(hnp.arrays(np.float32, (horizon, n_envs), elements=st.sampled_from([0.0, 1.0]))),
        "last_values": draw(hnp.arrays(np.float32, (n_envs,), elements=finite)),
        "last_dones": draw(hnp.arrays(np.float32, (n_envs,), elements=st.sampled_from([0.0, 1.0]))),
    }
    return data, draw(gamma)


def assert_estimates_close(a: Estimate, b: Estimate, returns: bool = True) -> None:
    th.testing.assert_close(a.advantages, b.advantages, **TOL)
    if returns:
        assert a.returns is not None and b.returns is not None
        th.testing.assert_close(a.returns, b.returns, **TOL)


def per_column(data: dict[str, np.ndarray]) -> list[dict[str, list[float]]]:
    """One dict of plain python lists per env column."""
    return [{key: value[..., i].tolist() for key, value in data.items()} for i in range(data["rewards"].shape[1])]


@PROPERTY_SETTINGS
@given(rollouts())
def test_nstep_1_is_td(case: tuple[dict[str, np.ndarray], float]) -> None:
    data, gamma = case
    assert_estimates_close(run(NStep(n=1), data, gamma), run(TD(), data, gamma))


@PROPERTY_SETTINGS
@given(rollouts())
def test_nstep_none_is_gae_lambda_1(case: tuple[dict[str, np.ndarray], float]) -> None:
    data, gamma = case
    assert_estimates_close(run(NStep(n=None), data, gamma), run(GAE(gae_lambda=1.0), data, gamma))


@PROPERTY_SETTINGS
@given(rollouts())
def test_gae_lambda_0_is_td(case: tuple[dict[str, np.ndarray], float]) -> None:
    data, gamma = case
    assert_estimates_close(run(GAE(gae_lambda=0.0), data, gamma), run(TD(), data, gamma))


@PROPERTY_SETTINGS
@given(rollouts())
def test_baseline_is_reward_to_go_minus_values(case: tuple[dict[str, np.ndarray], float]) -> None:
    data, gamma = case
    baseline, to_go = run(Baseline(), data, gamma), run(RewardToGo(), data, gamma)
    th.testing.assert_close(baseline.advantages, to_go.advantages - th.as_tensor(data["values"]), **TOL)
    assert baseline.returns is not None
    th.testing.assert_close(baseline.returns, to_go.advantages, rtol=0, atol=0)


@PROPERTY_SETTINGS
@given(rollouts())
def test_nstep_none_on_complete_episodes_is_monte_carlo(case: tuple[dict[str, np.ndarray], float]) -> None:
    """When every episode ends inside the rollout, G^(∞) never bootstraps: it is baseline's reward-to-go."""
    data, gamma = case
    data = {**data, "last_dones": np.ones_like(data["last_dones"])}
    assert_estimates_close(run(NStep(n=None), data, gamma), run(Baseline(), data, gamma))


@PROPERTY_SETTINGS
@given(rollouts())
def test_full_return_is_reward_to_go_of_the_episodes_first_step(case: tuple[dict[str, np.ndarray], float]) -> None:
    """On each episode's first step (or the rollout's first) both agree; within an episode G(τ) is constant."""
    data, gamma = case
    full = run(FullReturn(), data, gamma).advantages.numpy()
    to_go = run(RewardToGo(), data, gamma).advantages.numpy()
    starts = data["episode_starts"].astype(bool)
    for i in range(full.shape[1]):
        first = 0
        for t in range(full.shape[0]):
            if starts[t, i]:
                first = t
            assert full[t, i] == to_go[first, i]


@PROPERTY_SETTINGS
@given(rollouts(gamma=st.just(1.0)))
def test_undiscounted_reward_to_go_is_the_plain_sum(case: tuple[dict[str, np.ndarray], float]) -> None:
    data, gamma = case
    to_go = run(RewardToGo(), data, gamma).advantages.numpy()
    for i, col in enumerate(per_column(data)):
        dones = column_dones(col["episode_starts"], col["last_dones"])
        np.testing.assert_allclose(to_go[:, i], reference_sum_to_go(col["rewards"], dones), **TOL)


@PROPERTY_SETTINGS
@given(rollouts(), st.integers(1, 14) | st.none())
def test_nstep_matches_the_per_step_formula(case: tuple[dict[str, np.ndarray], float], n: int | None) -> None:
    data, gamma = case
    estimate = run(NStep(n=n), data, gamma)
    assert estimate.returns is not None
    for i, col in enumerate(per_column(data)):
        dones = column_dones(col["episode_starts"], col["last_dones"])
        expected = reference_nstep(col["rewards"], col["values"], dones, col["last_values"], gamma, n)
        np.testing.assert_allclose(estimate.returns[:, i].numpy(), expected, **TOL)


@PROPERTY_SETTINGS
@given(rollouts(), unit)
def test_gae_matches_the_forward_view(case: tuple[dict[str, np.ndarray], float], gae_lambda: float) -> None:
    data, gamma = case
    estimate = run(GAE(gae_lambda=gae_lambda), data, gamma)
    for i, col in enumerate(per_column(data)):
        dones = column_dones(col["episode_starts"], col["last_dones"])
        expected = reference_gae(col["rewards"], col["values"], dones, col["last_values"], gamma, gae_lambda)
        np.testing.assert_allclose(estimate.advantages[:, i].numpy(), expected, **TOL)


CRITIC_ESTIMATORS = {
    "baseline": st.builds(Baseline),
    "td": st.builds(TD),
    "nstep": st.builds(NStep, n=st.integers(1, 14) | st.none()),
    "gae": st.builds(GAE, gae_lambda=unit),
}


@pytest.mark.parametrize("name", list(CRITIC_ESTIMATORS))
@PROPERTY_SETTINGS
@given(data=st.data())
def test_returns_are_advantages_plus_values(name: str, data: st.DataObject) -> None:
    estimator = data.draw(CRITIC_ESTIMATORS[name])
    rollout, gamma = data.draw(rollouts())
    estimate = run(estimator, rollout, gamma)
    assert estimate.returns is not None
    th.testing.assert_close(estimate.returns, estimate.advantages + th.as_tensor(rollout["values"]), **TOL)


# ------------------------------------------------------------------------------------------------
# The contract every registered estimator honours (a plugin's estimator is tested here for free).
# ------------------------------------------------------------------------------------------------

REGISTERED = get_host().estimators.names()


def build(name: str) -> Estimator:
    return make_estimator(name)


@pytest.mark.parametrize("name", REGISTERED)
def test_declares_needs_and_description(name: str) -> None:
    entry = get_host().estimators.entry(name)
    assert entry.cls.name == name
    assert type(entry.cls.needs_critic) is bool
    assert type(entry.cls.needs_complete_episodes) is bool
    assert entry.description.strip() and "\n" not in entry.description


@pytest.mark.parametrize("name", REGISTERED)
@PROPERTY_SETTINGS
@given(case=rollouts())
def test_shapes_dtype_and_columns_are_independent(name: str, case: tuple[dict[str, np.ndarray], float]) -> None:
    """``[T, N]`` float32 outputs, and each env column is estimated on its own."""
    data, gamma = case
    estimator = build(name)
    estimate = run(estimator, data, gamma)
    shape = data["rewards"].shape
    outputs = [estimate.advantages] if estimate.returns is None else [estimate.advantages, estimate.returns]
    if estimator.needs_critic:
        assert estimate.returns is not None
    for out in outputs:
        assert isinstance(out, th.Tensor) and out.dtype == th.float32 and tuple(out.shape) == shape
    for i in range(shape[1]):
        column = run(estimator, {key: value[..., i : i + 1] for key, value in data.items()}, gamma)
        th.testing.assert_close(column.advantages, estimate.advantages[:, i : i + 1], **TOL)
        if estimate.returns is not None:
            assert column.returns is not None
            th.testing.assert_close(column.returns, estimate.returns[:, i : i + 1], **TOL)


@pytest.mark.parametrize("name", REGISTERED)
def test_numpy_and_torch_inputs_agree(name: str) -> None:
    """float64/bool numpy arrays and float32 tensors give the same float32 result; inputs are left untouched."""
    data = SCENARIOS["two_episodes"]
    as_numpy = {key: value.astype(np.float64) for key, value in data.items()}
    as_numpy["episode_starts"] = data["episode_starts"].astype(bool)
    as_numpy["last_dones"] = data["last_dones"].astype(bool)
    as_torch = {key: th.as_tensor(value) for key, value in data.items()}
    originals = {key: value.clone() for key, value in as_torch.items()}
    from_numpy, from_torch = run(build(name), as_numpy, GAMMA), run(build(name), as_torch, GAMMA)
    assert from_numpy.advantages.dtype == th.float32
    th.testing.assert_close(from_numpy.advantages, from_torch.advantages, rtol=0, atol=0)
    if from_torch.returns is None:
        assert from_numpy.returns is None
    else:
        assert from_numpy.returns is not None
        th.testing.assert_close(from_numpy.returns, from_torch.returns, rtol=0, atol=0)
    for key, value in as_torch.items():
        assert th.equal(value, originals[key]), f"{name} modified its {key} input"


@pytest.mark.parametrize("missing", ["values", "last_values"])
@pytest.mark.parametrize("name", [n for n in REGISTERED if get_host().estimators.get(n).needs_critic])
def test_critic_estimator_without_values_is_refused(name: str, missing: str) -> None:
    data = dict(SCENARIOS["one_episode"])
    data[missing] = None
    with pytest.raises(PgplugError, match=rf"{name}.*values"):
        run(build(name), data, GAMMA)


@pytest.mark.parametrize("name", [n for n in REGISTERED if not get_host().estimators.get(n).needs_critic])
def test_critic_free_estimator_ignores_values(name: str) -> None:
    data = SCENARIOS["two_episodes"]
    without = {key: value for key, value in data.items() if key not in ("values", "last_values")}
    th.testing.assert_close(run(build(name), without, GAMMA).advantages, run(build(name), data, GAMMA).advantages)


def test_builtin_needs_match_the_design_table() -> None:
    needs = {cls.name: (cls.needs_critic, cls.needs_complete_episodes) for cls in ESTIMATORS}
    assert needs == {
        "full_return": (False, True),
        "reward_to_go": (False, True),
        "baseline": (True, True),
        "td": (True, False),
        "nstep": (True, False),
        "gae": (True, False),
    }


# ------------------------------------------------------------------------------------------------
# Parameter validation: one-line PgplugErrors naming the bad value and the valid choices.
# ------------------------------------------------------------------------------------------------


def one_line_error(excinfo: pytest.ExceptionInfo[PgplugError], *fragments: str) -> None:
    message = str(excinfo.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


@pytest.mark.parametrize("n", [0, -1, 1.5, True, "3"])
def test_nstep_rejects_bad_n(n: Any) -> None:
    with pytest.raises(PgplugError) as excinfo:
        NStep(n=n)
    one_line_error(excinfo, repr(n), ">= 1")
    with pytest.raises(PgplugError) as excinfo:
        make_estimator("nstep", {"n": n})
    one_line_error(excinfo, repr(n))


@pytest.mark.parametrize("n", [1, 2, 1000, None])
def test_nstep_accepts_good_n(n: int | None) -> None:
    assert make_estimator("nstep", {"n": n}).params() == {"n": n}


@pytest.mark.parametrize("gae_lambda", [-0.1, 1.5, math.nan, True, "0.9"])
def test_gae_rejects_bad_lambda(gae_lambda: Any) -> None:
    with pytest.raises(PgplugError) as excinfo:
        make_estimator("gae", {"gae_lambda": gae_lambda})
    one_line_error(excinfo, repr(gae_lambda), "[0, 1]")


@pytest.mark.parametrize("gae_lambda", [0, 0.0, 0.95, 1])
def test_gae_accepts_good_lambda(gae_lambda: float) -> None:
    assert make_estimator("gae", {"gae_lambda": gae_lambda}).params() == {"gae_lambda": float(gae_lambda)}


@pytest.mark.parametrize("gamma", [-0.01, 1.01, math.nan, math.inf, True, "0.99", None])
@pytest.mark.parametrize("name", REGISTERED)
def test_bad_gamma_is_refused(name: str, gamma: Any) -> None:
    with pytest.raises(PgplugError) as excinfo:
        run(build(name), SCENARIOS["one_episode"], gamma)
    one_line_error(excinfo, repr(gamma), "gamma", "[0, 1]")


@pytest.mark.parametrize("gamma", [0, 0.0, 1, 1.0])
def test_gamma_bounds_are_accepted(gamma: float) -> None:
    # γ = 0: Ψ_t = r_t − V_t for td; γ = 1: the undiscounted target.
    estimate = run(TD(), SCENARIOS["one_episode"], gamma)
    expected = columns([1, 2, 3], [1, 2, 3]) + gamma * columns([4, 8, 0], [-1, 2, 0])
    th.testing.assert_close(estimate.returns, th.as_tensor(expected), rtol=0, atol=0)


def test_unknown_estimator_lists_the_valid_names(plugin_host: Any) -> None:
    with pytest.raises(UnknownNameError) as excinfo:
        make_estimator("gea")
    one_line_error(excinfo, "'gea'", *plugin_host.estimators.names())


@pytest.mark.parametrize(
    ("name", "kwargs", "valid"),
    [("gae", {"lam": 0.9}, "gae_lambda, gamma_t"), ("nstep", {"n_steps": 5}, "n"), ("td", {"n": 3}, "gamma_t")],
)
def test_bad_estimator_kwargs_name_the_valid_keys(name: str, kwargs: dict[str, Any], valid: str) -> None:
    with pytest.raises(PgplugError) as excinfo:
        make_estimator(name, kwargs)
    (bad_key,) = kwargs
    one_line_error(excinfo, name, bad_key, f"valid keys: {valid}")


def test_make_estimator_from_instance() -> None:
    gae = GAE(gae_lambda=0.9)
    assert make_estimator(gae) is gae
    with pytest.raises(PgplugError) as excinfo:
        make_estimator(gae, {"gae_lambda": 0.5})
    one_line_error(excinfo, "estimator_kwargs")


def test_rewards_must_be_time_major() -> None:
    data = dict(SCENARIOS["one_episode"])
    data["rewards"] = data["rewards"][:, 0]
    with pytest.raises(PgplugError) as excinfo:
        run(TD(), data, GAMMA)
    one_line_error(excinfo, "rewards", "(3,)")


def test_repr_shows_the_parameters() -> None:
    assert repr(NStep(n=5)) == "NStep(n=5)"
    assert repr(GAE(gae_lambda=0.5)) == "GAE(gae_lambda=0.5)"
    assert repr(TD()) == "TD()"
