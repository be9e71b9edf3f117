"""Results §2 (benchmarks/results_reinforce.py) on fabricated run folders: ``pgplug train`` is replaced by a stand-in
that writes the files it would (Monitor csv files, evaluations.npz); nothing trains."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import results_reinforce
from results_common import Done, Job

#: The evaluation means every 5,000 steps of a fabricated run, by estimator: full_return never solves, baseline
#: at 10,000 steps, reward_to_go at 15,000 (at 20,000 on seed 1).
CURVES = {
    "full_return": [20.0, 60.0, 150.0, 300.0],
    "reward_to_go": [30.0, 200.0, 480.0, 500.0],
    "baseline": [40.0, 490.0, 500.0, 500.0],
}


def option(command: list[str], name: str) -> str | None:
    return command[command.index(name) + 1] if name in command else None


def fake_run(folder: Path, estimator: str, kwargs: str | None, seed: int) -> None:
    """``<folder>/reinforce/CartPole-v1_1/``: 4 Monitor files whose 100-step episodes end every 0.1 s per env (so
    the run makes 4,000 steps a second), and evaluations every 5,000 steps."""
    run = folder / "reinforce" / "CartPole-v1_1"
    run.mkdir(parents=True)
    for rank in range(4):
        lines = [f'#{{"t_start": {1000.0 + rank * 0.01}, "env_id": "CartPole-v1"}}', "r,l,t"]
        lines += [f"100.0,100,{0.1 * (k + 1) - rank * 0.01:.4f}" for k in range(50)]
        (run / f"{rank}.monitor.csv").write_text("\n".join(lines) + "\n")
    means = list(CURVES[estimator] if kwargs is None else [10.0, 20.0, 30.0, 40.0])
    if estimator == "reward_to_go" and kwargs is None and seed == 1:
        means[2] = 470.0
    results = np.array([[m - 5, m + 5] for m in means]).clip(max=500.0)
    steps = np.array([5000, 10000, 15000, 20000])
    np.savez(run / "evaluations.npz", timesteps=steps, results=results, ep_lengths=results)


@pytest.fixture
def commands(results_folders: Path, monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    seen: list[list[str]] = []

    def fake_run_jobs(jobs: list[Job], parallel: int = 2, log: Path | None = None) -> list[Done]:
        for job in jobs:
            seen.append(job.command)
            command = job.command
            fake_run(
                Path(option(command, "-f")),
                option(command, "--estimator"),
                option(command, "--estimator-kwargs"),
                int(option(command, "--seed")),
            )
        return [Done(job.label, 12.0, 0, "") for job in jobs]

    monkeypatch.setattr(results_reinforce, "run_jobs", fake_run_jobs)
    return seen


def test_a_run_per_setting_and_seed_is_read_back_into_the_json_csv_and_picture(
    commands: list[list[str]], results_folders: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results_reinforce.main(["--seeds", "0", "1", "--budget", "20000", "--hyperparams", "n_envs=4"])
    assert len(commands) == 8
    assert [(option(c, "--estimator"), option(c, "--seed")) for c in commands[:4]] == [
        ("full_return", "0"), ("reward_to_go", "0"), ("baseline", "0"), ("reward_to_go", "0")
    ]  # fmt: skip
    assert option(commands[3], "--estimator-kwargs") == "gamma_t=true" and "--estimator-kwargs" not in commands[1]
    assert all(option(c, "--algo") == "reinforce" and option(c, "-n") == "20000" for c in commands)
    assert all(option(c, "--eval-freq") == "5000" and option(c, "-params") == "n_envs=4" for c in commands)

    result = json.loads((results_folders / "docs" / "results" / "reinforce.json").read_text())
    settings = result["settings"]
    assert list(settings) == ["full_return", "reward_to_go", "baseline", "reward_to_go:gamma_t=true"]
    assert [settings[k]["solved"] for k in settings] == [0, 2, 2, 0]
    assert [r["solved_steps"] for r in settings["reward_to_go"]["runs"]] == [15000, 20000]
    assert settings["reward_to_go"]["solved_steps"] == pytest.approx(
        {"n": 2, "missing": 0, "median": 17500.0, "min": 15000.0, "max": 20000.0, "mean": 17500.0, "std": 2500.0}
    )
    # 4 envs of 100-step episodes every 0.1 s: 4,000 steps a second, so 10,000 steps at 2.5 s.
    assert settings["baseline"]["solved_seconds"]["median"] == pytest.approx(2.5, abs=0.05)
    assert settings["full_return"]["solved_steps"]["missing"] == 2 and settings["full_return"]["best"]["max"] == 300
    band = settings["baseline"]["band_steps"]
    assert band["x"] == [5000, 10000, 15000, 20000] and band["mean"][1] == 490.0
    assert band["lower"] == band["upper"] == band["mean"]
    spread = settings["reward_to_go"]["band_steps"]
    assert spread["lower"][2] == 470.0 and spread["upper"][2] == 480.0
    assert settings["baseline"]["band_seconds"]["x"][-1] == pytest.approx(5.0, abs=0.05)
    assert settings["baseline"]["runs"][0]["evaluations"]["steps"] == [5000, 10000, 15000, 20000]
    assert result["budget"] == 20000 and result["seeds"] == [0, 1] and result["hyperparams"].endswith("n_envs=4")

    with (results_folders / "docs" / "results" / "reinforce.csv").open(newline="") as file:
        table = list(csv.DictReader(file))
    assert len(table) == 8 and table[0]["setting"] == "full_return" and table[0]["solved_steps"] == ""
    row = next(r for r in table if r["setting"] == "reward_to_go:gamma_t=true" and r["seed"] == "1")
    assert row["estimator"] == "reward_to_go" and row["estimator_kwargs"] == "gamma_t=true" and row["final"] == "40.0"

    assert (results_folders / "docs" / "images" / "results" / "reinforce-curves.png").stat().st_size > 10_000
    assert "reinforce-curves.png" in capsys.readouterr().out
    assert results_reinforce.summary_rows(result)[1:3] == [
        ("reward_to_go", "2/2", "17,500 [15,000, 20,000]", "4.4 [3.8, 5.0]", "498 [498, 498]", "498 [498, 498]"),
        ("baseline", "2/2", "10,000 [10,000, 10,000]", "2.5 [2.5, 2.5]", "498 [498, 498]", "498 [498, 498]"),
    ]
    assert results_reinforce.summary_rows(result)[0][1:4] == ("0/2", "–", "–")
    lines = results_reinforce.table(result).splitlines()
    assert lines[1].split()[:2] == ["estimator", "solved"] and lines[4].split()[:3] == ["baseline", "2/2", "10,000"]


def test_plot_only_redraws_from_the_json(commands: list[list[str]], results_folders: Path) -> None:
    with pytest.raises(SystemExit, match=r"reinforce\.json does not exist"):
        results_reinforce.main(["--plot-only"])
    results_reinforce.main(["--seeds", "0", "--budget", "20000", "--estimators", "baseline", "full_return"])
    picture = results_folders / "docs" / "images" / "results" / "reinforce-curves.png"
    picture.unlink()
    results_reinforce.main(["--plot-only"])
    assert len(commands) == 2 and picture.stat().st_size > 10_000


def test_fresh_folders_per_setting_and_seed(results_folders: Path) -> None:
    args = argparse.Namespace(seeds=[3], budget=10, eval_freq=5, eval_episodes=1, hyperparams=[])
    planned = results_reinforce.jobs(args, list(results_reinforce.SETTINGS))
    assert [p[2].relative_to(results_folders / "runs") for p in planned] == [
        Path("reinforce/full_return/seed_3"), Path("reinforce/reward_to_go/seed_3"), Path("reinforce/baseline/seed_3"),
        Path("reinforce/reward_to_go_gamma_t_true/seed_3"),
    ]  # fmt: skip
