"""The shared gradient step (``pgplug.runtime.gradient.compute_gradients``) stops a diverged run with one line.

The rollout's sampler skips ``torch.multinomial``'s checks, so a policy with NaN weights still
collects a rollout; the non-finite loss is where training must stop, with a ``DivergedError`` the
CLI prints as one line and a non-zero exit.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch as th

from pgplug import A2C
from pgplug.errors import DivergedError, PgplugError


def test_nan_weights_raise_a_one_line_diverged_error() -> None:
    """A NaN parameter makes the next update's loss NaN: learn() raises DivergedError naming the fixes."""
    model = A2C("MlpPolicy", "CartPole-v1", n_steps=5, seed=0, device="cpu")
    model.learn(200)
    assert model.num_timesteps == 200
    with th.no_grad():
        next(model.policy.parameters()).fill_(float("nan"))
    with pytest.raises(DivergedError) as info:
        model.learn(100)
    message = str(info.value)
    assert isinstance(info.value, PgplugError)  # so the CLI shows it as a one-line user error
    assert message == (
        "the loss is nan: training diverged (lower learning_rate or max_grad_norm, "
        "or check the observations and rewards for NaN/inf)"
    )
    assert "\n" not in message
    assert model.num_timesteps == 5  # one rollout was collected, its update refused


def test_cli_reports_divergence_on_one_line_and_exits_non_zero(tmp_path: Path) -> None:
    """An absurd learning rate overflows the weights to inf within 3000 steps (it did for every seed tried, 0-7).

    RMSprop normalises the gradient, so each step moves a weight by about ``learning_rate`` (a huge one
    is not enough: clipping and the saturating softmax keep 1e12 finite); with 1e30 the float32 weights
    and then the loss become infinite, and ``main`` prints the error's one line. The run is seeded, so
    the outcome is deterministic.
    """
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pgplug",
            "train",
            "--algo",
            "a2c",
            "--env",
            "CartPole-v1",
            "-n",
            "3000",
            "--seed",
            "0",
            "--hyperparams",
            "learning_rate=1e30",
            "-f",
            str(tmp_path / "logs"),
            "--device",
            "cpu",
            "--num-threads",
            "1",
            "--no-progress",
            "--eval-freq",
            "-1",
            "--save-freq",
            "-1",
            "--n-eval-episodes",
            "0",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        "pgplug: error: the loss is inf: training diverged (lower learning_rate or max_grad_norm, "
        "or check the observations and rewards for NaN/inf)"
    ]


def test_a3c_worker_divergence_is_one_line_in_the_main_process() -> None:
    """A worker's DivergedError reaches learn() as a one-line PgplugError naming the worker, and no worker is left."""
    from a3c_helpers import deadline

    from pgplug import A3C
    from pgplug.errors import WorkerError

    model = A3C("MlpPolicy", "CartPole-v1", n_workers=2, n_envs_per_worker=2, seed=0, learning_rate=1e30)
    with deadline(60), pytest.raises(WorkerError) as info:
        model.learn(20_000)
    message = str(info.value)
    assert isinstance(info.value, PgplugError) and "\n" not in message
    assert message.startswith("A3C worker ") and "training diverged" in message
