"""What the results scripts share (benchmarks/results_common.py): the train command, run folders, spreads."""

from __future__ import annotations

from pathlib import Path

import pytest
import results_common


def test_train_job_is_a_pgplug_command_a_reader_can_paste(tmp_path: Path) -> None:
    job = results_common.train_job(
        "td seed 1", tmp_path, "a2c", "CartPole-v1", seed=1, steps=1000, eval_freq=500,
        estimator="gae", estimator_kwargs=["gae_lambda=0.9"], hyperparams=["n_envs=4"], extra=["--vec-env", "dummy"],
    )  # fmt: skip
    command = job.command
    assert command[1:3] == ["-m", "pgplug"] and command[3] == "train"
    pairs = {command[i]: command[i + 1] for i in range(len(command) - 1) if command[i].startswith("-")}
    assert pairs["--algo"] == "a2c" and pairs["--env"] == "CartPole-v1" and pairs["--seed"] == "1"
    assert pairs["-n"] == "1000" and pairs["-f"] == str(tmp_path) and pairs["--eval-freq"] == "500"
    assert pairs["--estimator"] == "gae" and pairs["--estimator-kwargs"] == "gae_lambda=0.9"
    assert pairs["-params"] == "n_envs=4" and command[-2:] == ["--vec-env", "dummy"]
    assert (
        "--estimator" not in results_common.train_job("x", tmp_path, "a2c", "E", seed=0, steps=1, eval_freq=1).command
    )


def test_run_folder_takes_the_newest_run_and_fails_in_one_line_without_one(tmp_path: Path) -> None:
    for k in (1, 2, 10):
        (tmp_path / "a2c" / f"CartPole-v1_{k}").mkdir(parents=True)
    assert results_common.run_folder(tmp_path, "a2c", "CartPole-v1").name == "CartPole-v1_10"
    with pytest.raises(SystemExit, match="holds no run of Acrobot-v1"):
        results_common.run_folder(tmp_path, "a2c", "Acrobot-v1")


def test_spread_counts_the_runs_that_never_solved() -> None:
    assert results_common.spread([1.0, None, 3.0, 2.0]) == {
        "n": 3, "missing": 1, "median": 2.0, "min": 1.0, "max": 3.0, "mean": 2.0,
        "std": pytest.approx(0.8165, abs=1e-4),
    }  # fmt: skip
    assert results_common.spread([None, None])["median"] is None


def test_fresh_folder_empties_an_earlier_invocations_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(results_common, "RUNS", tmp_path)
    old = results_common.fresh_folder("section", "setting") / "old.txt"
    old.write_text("earlier")
    folder = results_common.fresh_folder("section", "setting")
    assert folder == tmp_path / "section" / "setting" and folder.is_dir() and not old.exists()
