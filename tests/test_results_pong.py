"""Results §7 (benchmarks/results_pong.py) and the Atari pipelines' comparison (benchmarks/atari_vec.py) on fabricated
inputs: no training."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import results_pong

from pgplug.interop.curves import rolling_mean


@pytest.fixture
def run(tmp_path: Path) -> Path:
    """A run of a3c_pong_long.py in miniature: 3 logger rows, 4 episodes, 2 evaluations of 2 episodes."""
    with (tmp_path / "progress.csv").open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["time/total_timesteps", "time/time_elapsed", "rollout/ep_rew_mean"])
        writer.writerows([[1000, 10, -21], [2000, 20, -20], [4000, 60, -10]])
    with (tmp_path / "episodes.csv").open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["wall_time", "timesteps", "worker", "reward", "length"])
        writer.writerows(
            [[7.2, 800, 0, -21, 900], [18.0, 1900, 1, -19, 900], [36, 3000, 0, 5, 900], [54, 3900, 1, 19, 9]]
        )
    results = np.array([[-21.0, -19.0], [17.0, 19.0]])
    np.savez(tmp_path / "evaluations.npz", timesteps=np.array([1500, 3000]), results=results, ep_lengths=results * 0)
    return tmp_path


def test_evaluations_are_placed_on_the_wall_clock_by_the_logger_and_counted_in_frames(run: Path) -> None:
    evals = results_pong.evaluations(run)
    assert [e["frames"] for e in evals] == [6000, 12000]
    assert [e["hours"] for e in evals] == [pytest.approx(15 / 3600, abs=1e-4), pytest.approx(40 / 3600, abs=1e-4)]
    assert [(e["mean"], e["std"]) for e in evals] == [(-20.0, 1.0), (18.0, 1.0)]


def test_the_summary_names_when_the_target_was_reached_and_the_rate(run: Path) -> None:
    result = results_pong.summary(results_pong.evaluations(run), results_pong.episodes(run), run)
    assert result["reached_target"] == {"frames": 12000, "hours": pytest.approx(40 / 3600, abs=1e-4), "mean": 18.0}
    assert result["best_evaluation"]["mean"] == 18.0
    assert result["steps_per_second"] == pytest.approx(4000 / 60, abs=0.1)
    assert result["training_episodes"] == 4


def test_rolling_mean_uses_fewer_values_at_the_start() -> None:
    assert rolling_mean(np.array([1.0, 3.0, 5.0, 7.0]), 2).tolist() == [1.0, 2.0, 4.0, 6.0]


def test_the_picture_is_drawn_from_the_run(run: Path, tmp_path: Path) -> None:
    output = results_pong.draw(results_pong.evaluations(run), results_pong.episodes(run), tmp_path / "pong.png")
    assert output.stat().st_size > 10_000


def test_atari_vec_compares_two_score_distributions() -> None:
    import atari_vec

    same = atari_vec.compare([1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0])
    assert same["difference"] == 0.0 and same["ks"] == 0.0 and same["low"] <= 0.0 <= same["high"]
    apart = atari_vec.compare([-21.0, -20.0, -21.0], [18.0, 19.0, 20.0])
    assert apart["ks"] == 1.0 and apart["low"] > 30
