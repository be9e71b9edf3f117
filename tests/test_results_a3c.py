"""Results §4 (benchmarks/results_a3c.py) on fabricated run folders and job outputs: no training."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path

import pytest
import results_a3c
import results_common
from results_common import Done, Job
from results_fixtures import even_episodes, fake_run


@pytest.fixture
def outputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """docs/results, docs/images/results and runs/results under tmp_path."""
    monkeypatch.setattr(results_common, "REPO", tmp_path)
    monkeypatch.setattr(results_common, "RESULTS", tmp_path / "docs" / "results")
    monkeypatch.setattr(results_common, "IMAGES", tmp_path / "docs" / "images" / "results")
    monkeypatch.setattr(results_common, "RUNS", tmp_path / "runs" / "results")
    return tmp_path


def option(command: Sequence[str], name: str, default: str | None = None) -> str | None:
    command = list(command)
    return command[command.index(name) + 1] if name in command else default


def logger_table(values: dict[str, float | int]) -> str:
    """A table as SB3's logger prints it with ``--verbose 1``."""
    from stable_baselines3.common.logger import HumanOutputFormat

    out = io.StringIO()
    HumanOutputFormat(out).write(values, {key: None for key in values})
    return out.getvalue()


def results_table(seconds: float, steps_per_second: float) -> str:
    """The table ``pgplug train`` prints at the end, as rich renders it into a pipe."""
    from rich.console import Console

    from pgplug.cli.output import results_table as table

    out = io.StringIO()
    rows = [("timesteps", "20,000"), ("wall time", f"{seconds:.1f} s"), ("steps/s", f"{steps_per_second:,.0f}")]
    Console(file=out, width=80).print(table("a3c on CartPole-v1", rows))
    return out.getvalue()


def job_output(workers: int, lags: Sequence[float]) -> str:
    """What a job printed: a logger table per 100 updates (A3C's with its policy lag), evaluation lines, and the
    results table; 20 seconds per run at 1,000 steps/s."""
    parts = ["Using cpu device", "ent_coef: 0.0"]
    for k, lag in enumerate(lags, start=1):
        values: dict[str, float | int] = {"time/total_timesteps": 2000 * k, "train/n_updates": 100 * k}
        if workers:
            values |= {"a3c/policy_lag": lag, "a3c/policy_lag_mean": lag, "a3c/worker_0_steps/s": 500}
        parts.append(logger_table(values))
        parts.append(f"Eval num_timesteps={2000 * k}, episode_reward=9.00 +/- 0.00")
        parts.append(logger_table({"eval/mean_reward": 9.0, "time/total_timesteps": 2000 * k}))
    parts.append(results_table(20.0, 1000.0))
    return "\n".join(parts)


#: Steps at which the fabricated runs first evaluate at 500, per setting (None: never); seed 1 takes 2,000 more.
SOLVES_AT = {0: 12_000, 1: 12_000, 2: 6_000, 4: None}
#: Steps per second of the fabricated runs' training episodes, per setting.
RATE = {0: 1000.0, 1: 500.0, 2: 1000.0, 4: 1500.0}


def fake_jobs(jobs: Sequence[Job], parallel: int = 2, log: Path | None = None) -> list[Done]:
    """What ``pgplug train`` leaves in each job's folder, and what it printed."""
    assert parallel == 1, "A3C's jobs must run one at a time"
    done = []
    for job in jobs:
        command = job.command
        algo, seed = option(command, "--algo"), int(option(command, "--seed"))
        workers = int(option(command, "--n-workers", "0"))
        steps, every = int(option(command, "-n")), int(option(command, "--eval-freq"))
        at = SOLVES_AT[workers]
        at = None if at is None else at + 2000 * (seed == 1)
        evaluations = [
            (k, [500.0 if at is not None and k >= at else 100.0] * 2) for k in range(every, steps + 1, every)
        ]
        monitor = "workers.monitor.csv" if algo == "a3c" else "0.monitor.csv"
        episodes = even_episodes(steps, steps / RATE[workers], n=20)
        fake_run(
            Path(option(command, "-f")),
            algo,
            "CartPole-v1",
            evaluations=evaluations,
            episodes=episodes,
            monitor=monitor,
        )
        lags = [workers - 1 + 0.1, workers - 1 - 0.1, workers - 1 + 0.3] if workers else []
        done.append(Done(job.label, 1.0, 0, job_output(workers, lags)))
    return done


def test_the_policy_lag_is_read_from_the_logger_tables_weighted_by_updates() -> None:
    output = job_output(2, [1.0, 2.0])
    tables = results_a3c.logger_tables(output)
    assert len(tables) == 4 and tables[0]["a3c/policy_lag_mean"] == "1" and tables[1]["eval/mean_reward"] == "9"
    assert results_a3c.policy_lag(output) == {"mean": 1.5, "max_window": 2.0, "windows": 2}
    uneven = output.replace("| 200 ", "| 400 ")  # the second table's window has 300 updates, the first's 100
    assert results_a3c.policy_lag(uneven)["mean"] == pytest.approx(1.75)
    assert results_a3c.policy_lag(job_output(0, [])) is None


def test_the_run_s_wall_time_and_rate_are_read_from_the_results_table() -> None:
    assert results_a3c.learn_figures(job_output(2, [1.0])) == (20.0, 1000.0)
    assert results_a3c.learn_figures("nothing") == (None, None)


def test_one_job_per_setting_and_seed_in_a_rotating_order(tmp_path: Path) -> None:
    settings = results_a3c.settings_for([1, 2, 4])
    planned = results_a3c.plan(settings, [0, 1, 2, 3, 4], 100_000, 5_000, 5, tmp_path)
    assert len(planned) == 20
    assert [p.setting.label for p in planned[:5]] == [
        "A2C",
        "A3C 1 worker",
        "A3C 2 workers",
        "A3C 4 workers",
        "A3C 1 worker",
    ]
    a2c = next(p.job.command for p in planned if p.setting.workers == 0)
    assert option(a2c, "--algo") == "a2c" and "--n-workers" not in a2c and option(a2c, "--verbose") == "1"
    four = next(p.job.command for p in planned if p.setting.workers == 4)
    assert option(four, "--algo") == "a3c" and option(four, "--n-workers") == "4" and option(four, "-n") == "100000"
    assert len({p.folder for p in planned}) == 20
    assert 3 < results_a3c.estimate_minutes(planned, 100_000, 5_000) <= 12


def test_the_section_from_fabricated_runs(outputs: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setattr(results_a3c, "run_jobs", fake_jobs)
    results_a3c.main(["--seeds", "0", "1", "2", "--steps", "20000", "--eval-freq", "2000"])
    printed = capsys.readouterr().out
    result = json.loads((outputs / "docs" / "results" / "a3c.json").read_text())
    summary = {s["setting"]: s for s in result["summary"]}
    assert list(summary) == ["A2C", "A3C 1 worker", "A3C 2 workers", "A3C 4 workers"]
    a2c, one, two, four = summary.values()
    assert a2c["seconds_to_solve"]["median"] == pytest.approx(12.0)  # 12,000 steps at 1,000 steps/s
    assert one["seconds_to_solve"]["median"] == pytest.approx(24.0)
    assert two["seconds_to_solve"]["median"] == pytest.approx(6.0) and two["steps_to_solve"]["max"] == 8_000
    assert two["speedup_over_a2c"] == pytest.approx(2.0) and two["speedup_over_a2c_per_seed"]["1"] == pytest.approx(
        14 / 8
    )
    assert four["solved"] == 0 and four["speedup_over_a2c"] is None
    assert a2c["policy_lag"]["n"] == 0 and two["policy_lag"]["median"] == pytest.approx(1.1, abs=0.01)
    assert four["policy_lag"]["median"] == pytest.approx(3.1, abs=0.01) and four["steps_per_second"]["median"] == 1000.0
    assert result["settings"]["steps"] == 20_000 and result["settings"]["a3c_workers"] == [1, 2, 4]

    with (outputs / "docs" / "results" / "a3c.csv").open(newline="") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 12
    assert (rows[0]["setting"], rows[0]["seed"], rows[0]["solved_seconds"], rows[0]["policy_lag"]) == (
        "A2C",
        "0",
        "12.0",
        "",
    )
    assert rows[-1]["run"].startswith("runs/results/a3c/a3c_4/seed_2/a3c/CartPole-v1_")

    picture = outputs / "docs" / "images" / "results" / results_a3c.PICTURE
    assert picture.stat().st_size > 10_000
    line = next(li for li in printed.splitlines() if li.startswith("A3C 2 workers"))
    assert "3/3 in 20k" in line and "6.0 [6.0–8.0]" in line and "1.10" in line and "2.00×" in line
    assert "0 (synchronous)" in next(li for li in printed.splitlines() if li.startswith("A2C"))
    assert "0/3" in next(li for li in printed.splitlines() if li.startswith("A3C 4 workers"))

    picture.unlink()
    results_a3c.main(["--plot-only"])
    assert picture.stat().st_size > 10_000
    assert "2.00×" in capsys.readouterr().out


def test_plot_only_without_results_says_so(outputs: Path) -> None:
    with pytest.raises(SystemExit, match="run without --plot-only"):
        results_a3c.main(["--plot-only"])
