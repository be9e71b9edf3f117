"""The worked example of docs/examples/clipped_ratio.py: a new algorithm with its own objective, in one file that
touches nothing in the core. It is short, uses public names only, takes pgplug's gradient step, equals A2C's update
where the maths says it must, refuses what does not fit, learns, and saves."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch as th
from learning import until_reward
from stable_baselines3.common.env_util import make_vec_env

import pgplug
from pgplug.cli import main
from pgplug.contracts.registries import Host, get_host, reset_host
from pgplug.errors import IncompatibleObjectiveError, PgplugError

EXAMPLE = Path(__file__).resolve().parent.parent / "docs" / "examples" / "clipped_ratio.py"
#: What a plugin may import of pgplug: the contracts, the runtime and the plugins' public names, not the speed paths,
#: the interop layer or the CLI.
PUBLIC = ("pgplug.contracts", "pgplug.runtime", "pgplug.plugins", "pgplug.validation", "pgplug.errors")


def public(module: str) -> bool:
    return module == "pgplug" or any(module == name or module.startswith(f"{name}.") for name in PUBLIC)


@pytest.fixture
def host() -> Iterator[Host]:
    reset_host()
    get_host().load_local(str(EXAMPLE))
    yield get_host()
    reset_host()


def test_one_short_file_of_public_names() -> None:
    source = EXAMPLE.read_text()
    assert len(source.splitlines()) < 200
    imported = [node.module for node in ast.walk(ast.parse(source)) if isinstance(node, ast.ImportFrom) and node.module]
    pgplug_imports = [name for name in imported if name.startswith("pgplug")]
    assert pgplug_imports and all(public(name) for name in pgplug_imports)


def test_registered_like_the_built_ins(host: Host) -> None:
    assert host.objectives.entry("clipped_ratio").source == f"local file {EXAMPLE}"
    assert host.algorithms.entry("clipped_pg").cls is pgplug.ClippedPG


def test_one_epoch_is_a2cs_update(host: Host) -> None:
    """At the weights that collected the rollout the ratio is 1, and the clipped surrogate's gradient is the policy
    gradient's: with one epoch per rollout, the clipped algorithm makes A2C's updates (same optimizer, GAE, Ψ
    standardised)."""
    settings = {"n_steps": 8, "learning_rate": 1e-3, "normalize_advantage": True, "seed": 0, "device": "cpu"}
    runs = []
    for cls, extra in ((pgplug.ClippedPG, {"n_epochs": 1}), (pgplug.A2C, {"use_rms_prop": False, "gae_lambda": 0.95})):
        model = cls("MlpPolicy", make_vec_env("CartPole-v1", n_envs=2, seed=0), **settings, **extra)
        runs.append(model.learn(8 * 2 * 10))
    clipped, a2c = runs
    assert clipped._n_updates == a2c._n_updates == 10
    for mine, theirs in zip(clipped.policy.parameters(), a2c.policy.parameters(), strict=True):
        th.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-6)


def test_several_epochs_move_the_ratio_and_are_clipped(host: Host) -> None:
    model = pgplug.ClippedPG("MlpPolicy", "CartPole-v1", n_steps=64, n_epochs=8, learning_rate=3e-3, seed=0)
    model.learn(64 * 3)
    assert model._n_updates == 24
    logged = model.logger.name_to_value
    assert logged["train/approx_kl"] > 0 and 0 <= logged["train/clip_fraction"] <= 1


def test_it_takes_only_the_objective_it_declares(host: Host) -> None:
    with pytest.raises(IncompatibleObjectiveError, match=r"objectives that fit clipped_pg: clipped_ratio$"):
        pgplug.ClippedPG("MlpPolicy", "CartPole-v1", objective="policy_gradient")
    with pytest.raises(PgplugError, match=r"clip_range must be a number in \(0, 1\), got 2"):
        pgplug.ClippedPG("MlpPolicy", "CartPole-v1", clip_range=2)


@pytest.mark.slow
def test_it_learns_cartpole(host: Host) -> None:
    """An evaluation (5 episodes every 2,000 steps) reaches 400 within 50k steps; a random policy scores about 20.

    Not the last weights after a fixed budget: at 25k steps seeds 0-5 evaluated 470, 375, 500, 440, 466 and
    165 (one run oscillates from 500 at 15k to 165), so a threshold there sits a chaotic trajectory's
    rounding away from failing. The first evaluation ≥ 400 came at 12k-20k steps for seeds 0-7 (seed 2: 14k).
    """
    model = pgplug.ClippedPG("MlpPolicy", make_vec_env("CartPole-v1", n_envs=4, seed=2), learning_rate=1e-3, seed=2)
    evaluation = until_reward("CartPole-v1", 400, every_steps=2_000, n_envs=4, eval_seed=100)
    model.learn(50_000, callback=evaluation)
    assert evaluation.best_mean_reward >= 400


def test_it_saves_loads_and_trains_from_the_command_line(host: Host, tmp_path: Path) -> None:
    model = pgplug.ClippedPG("MlpPolicy", "CartPole-v1", n_steps=16, n_epochs=2, clip_range=0.1, seed=0).learn(32)
    model.save(tmp_path / "clipped")
    loaded = pgplug.ClippedPG.load(tmp_path / "clipped.zip")
    assert (loaded.clip_range, loaded.n_epochs, loaded.objective_for_update().clip_range) == (0.1, 2, 0.1)
    obs = np.zeros((1, 4), dtype=np.float32)
    assert (loaded.predict(obs, deterministic=True)[0] == model.predict(obs, deterministic=True)[0]).all()
    args = ["train", "--plugin", str(EXAMPLE), "--algo", "clipped_pg", "--env", "CartPole-v1", "-n", "256"]
    assert main([*args, "-f", str(tmp_path), "--eval-freq", "-1", "--n-eval-episodes", "0", "--no-progress"]) == 0
