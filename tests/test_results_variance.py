"""Results §1 (benchmarks/results_variance.py) on fabricated inputs: ``pgplug train`` and ``pgplug variance`` are
replaced by a stand-in that writes what they would (a run folder with a model, a report in pgplug's own JSON
schema, made with pgplug.interop.variance's classes); nothing trains or measures."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import results_variance
from results_common import Done, Job

from pgplug.interop.variance import EstimatorResult, VarianceReport, VarianceSettings, parse_estimator

#: tr Cov per estimator of a run where the lecture's ordering holds (λ's sweep dips between td and baseline).
TRACES = {
    "full_return": 10.0,
    "reward_to_go": 2.0,
    "reward_to_go:gamma_t=true": 1.5,
    "baseline": 0.5,
    "baseline:gamma_t=true": 0.4,
    "td": 0.3,
    "gae:gae_lambda=0": 0.3,
    "gae:gae_lambda=0.5": 0.25,
    "gae:gae_lambda=0.9": 0.28,
    "gae:gae_lambda=0.95": 0.35,
    "gae:gae_lambda=0.99": 0.45,
    "gae:gae_lambda=1": 0.5,
}


def report(env: str, weights: str | None, traces: dict[str, float]) -> dict:
    """What ``pgplug variance --json`` writes for these tr Cov values (intervals ±20%, ratios paired)."""
    results = {}
    for text, trace in traces.items():
        spec = parse_estimator(text)
        ratio = trace / traces["full_return"]
        results[spec.label] = EstimatorResult(
            spec=spec, trace_cov=trace, ratio_to_full_return=ratio, cosine_to_reference=0.9, snr=1 / trace,
            mean_sq_norm=1.0,
            ci={"trace_cov": (0.8 * trace, 1.2 * trace), "cosine_to_reference": (0.8, 0.95), "snr": (0.5, 2.0),
                "ratio_to_full_return": (1.0, 1.0) if text == "full_return" else (0.8 * ratio, 1.2 * ratio)},
        )  # fmt: skip
    made = VarianceReport(
        env=env, settings=VarianceSettings(batches=3, bootstrap=10), gamma=0.99, n_envs=4, estimators=results,
        reference_batches=5, critic_batches=3, critic_explained_variance=0.5,
        mean_episode_length=23.0 if weights is None else 480.0, episodes_per_batch=4.0, algo="a2c", weights=weights,
    )  # fmt: skip
    return made.to_json()


def option(command: list[str], name: str) -> str | None:
    return command[command.index(name) + 1] if name in command else None


@pytest.fixture
def commands(results_folders: Path, monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Stands in for run_jobs: each ``pgplug train`` leaves a run folder with a model and evaluations, each
    ``pgplug variance`` a report (Acrobot's trained one with td above baseline: the ordering fails there)."""
    seen: list[list[str]] = []

    def fake_run_jobs(jobs: list[Job], parallel: int = 2, log: Path | None = None) -> list[Done]:
        for job in jobs:
            command = job.command
            seen.append(command)
            env = option(command, "--env")
            if command[3] == "train":
                run = Path(option(command, "-f")) / "a2c" / f"{env}_1"
                run.mkdir(parents=True)
                (run / f"{env}.zip").write_bytes(b"model")
                results = np.array([[20.0, 30.0], [490.0, 500.0]])
                np.savez(run / "evaluations.npz", timesteps=np.array([500, 1000]), results=results, ep_lengths=results)
            else:
                traces = dict(TRACES)
                if env == "Acrobot-v1" and "--weights" in command:
                    traces["td"] = 0.7
                Path(option(command, "--json")).write_text(
                    json.dumps(report(env, option(command, "--weights"), traces))
                )
        return [Done(job.label, 1.0, 0, "") for job in jobs]

    monkeypatch.setattr(results_variance, "run_jobs", fake_run_jobs)
    return seen


def test_the_ordering_and_its_factors_are_read_from_a_report() -> None:
    check = results_variance.ordering(report("CartPole-v1", None, TRACES))
    assert check["held"] and check["order"] == ["full_return", "reward_to_go", "baseline", "td"]
    assert [s["factor"] for s in check["steps"]] == pytest.approx([5.0, 4.0, 0.5 / 0.3])
    assert [s["intervals_apart"] for s in check["steps"]] == [True, True, True]
    close = results_variance.ordering(report("CartPole-v1", None, {**TRACES, "td": 0.45}))
    assert close["held"] and not close["steps"][-1]["intervals_apart"]  # 0.045·1.2 ≥ 0.05·0.8
    broken = results_variance.ordering(report("CartPole-v1", None, {**TRACES, "baseline": 3.0}))
    assert not broken["held"] and [s["held"] for s in broken["steps"]] == [True, False, True]


def test_gae_sweep_and_names_come_from_the_reports_kwargs() -> None:
    made = report("CartPole-v1", None, TRACES)
    assert [lam for lam, _ in results_variance.gae_sweep(made)] == [0, 0.5, 0.9, 0.95, 0.99, 1]
    names = [results_variance.short_name(e) for e in made["estimators"].values()]
    assert names[:6] == ["full return", "reward-to-go", "reward-to-go γᵗ", "baseline", "baseline γᵗ", "TD"]
    assert names[6:8] == ["GAE λ=0", "GAE λ=0.5"]


def test_a_run_trains_measures_and_writes_the_json_csv_and_pictures(
    commands: list[list[str]], results_folders: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results_variance.main(["--batches", "3", "--reference-batches", "5", "--bootstrap", "10"])
    trains = [c for c in commands if c[3] == "train"]
    measures = [c for c in commands if c[3] == "variance"]
    assert [(option(c, "--env"), option(c, "-n")) for c in trains] == [
        ("CartPole-v1", "50000"),
        ("Acrobot-v1", "100000"),
    ]
    # The trainings and the initial weights' measurements first (Acrobot's, the long one, first), then the trained.
    assert commands[:2] == trains and [(option(c, "--env"), "--weights" in c) for c in measures] == [
        ("Acrobot-v1", False), ("CartPole-v1", False), ("CartPole-v1", True), ("Acrobot-v1", True)
    ]  # fmt: skip
    for command in measures:
        listed = command[command.index("--estimators") + 1 : command.index("--batches")]
        assert listed == list(results_variance.ESTIMATORS)
        assert option(command, "--batches") == "3" and option(command, "--reference-batches") == "5"
        assert option(command, "--bootstrap") == "10" and option(command, "--critic-batches") is None
        assert (option(command, "--algo") == "a2c") != (option(command, "--weights") is not None)
    weights = [option(c, "--weights") for c in measures if "--weights" in c]
    assert [Path(w).name for w in weights] == ["CartPole-v1.zip", "Acrobot-v1.zip"]

    result = json.loads((results_folders / "docs" / "results" / "variance.json").read_text())
    assert [(r["env"], r["weights"]) for r in result["runs"]] == [
        ("CartPole-v1", "initial"), ("CartPole-v1", "trained"), ("Acrobot-v1", "initial"), ("Acrobot-v1", "trained")
    ]  # fmt: skip
    assert [o["held"] for o in result["ordering"]] == [True, True, True, False]
    trained = result["runs"][1]
    assert trained["training"]["reached_at_steps"] == 1000 and trained["training"]["last_evaluation"] == 495.0
    assert trained["report"]["estimators"]["reward_to_go:gamma_t=True"]["trace_cov"] == 1.5
    assert result["runs"][0]["training"] is None and result["runs"][0]["model"] is None

    with (results_folders / "docs" / "results" / "variance.csv").open(newline="") as file:
        table = list(csv.DictReader(file))
    assert len(table) == 4 * len(results_variance.ESTIMATORS)
    row = next(r for r in table if r["env"] == "Acrobot-v1" and r["weights"] == "trained" and r["estimator"] == "td")
    assert float(row["trace_cov"]) == 0.7 and float(row["ratio_to_full_return"]) == pytest.approx(0.07)
    assert float(row["ratio_to_full_return_low"]) == pytest.approx(0.056)
    assert {r["gae_lambda"] for r in table} == {"", "0", "0.5", "0.9", "0.95", "0.99", "1"}

    images = results_folders / "docs" / "images" / "results"
    pictures = ("variance-cartpole.png", "variance-acrobot.png", "variance-gae-lambda.png")
    assert all((images / name).stat().st_size > 10_000 for name in pictures)
    out = capsys.readouterr().out
    assert "CartPole-v1 trained weights (episodes 480 steps): full_return > reward_to_go > baseline > td HELD" in out
    assert "Acrobot-v1 trained weights (episodes 480 steps): full_return > reward_to_go > baseline > td NOT HELD" in out
    assert "reward_to_go÷baseline 4" in out and "reward_to_go γᵗ÷plain 0.75" in out


def test_plot_only_redraws_from_the_json_without_running_anything(
    commands: list[list[str]], results_folders: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit, match=r"variance\.json does not exist"):
        results_variance.main(["--plot-only"])
    results_variance.main(["--envs", "CartPole-v1"])
    images = results_folders / "docs" / "images" / "results"
    for picture in images.iterdir():
        picture.unlink()
    ran = len(commands)
    results_variance.main(["--plot-only"])
    assert len(commands) == ran
    assert sorted(p.name for p in images.iterdir()) == ["variance-cartpole.png", "variance-gae-lambda.png"]
    assert "CartPole-v1 initial weights" in capsys.readouterr().out
