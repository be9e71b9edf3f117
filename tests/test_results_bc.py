"""Results §5 (benchmarks/results_bc.py) on fabricated run folders: no training, nothing written into docs/."""

from __future__ import annotations

import argparse
import csv
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import results_bc
import results_common
import yaml
from results_common import Done, Job

T_START = 1_700_000_000.0


def write_run(run: Path, evaluations: dict[int, list[float]], episodes: list[tuple[float, int, float]] = (),
              checkpoints: dict[int, float] | None = None, monitor: str = "0.monitor.csv") -> Path:  # fmt: skip
    """A run folder as ``pgplug train`` leaves it: ``evaluations.npz`` (steps → the episodes' returns), a Monitor
    file (rows ``(r, l, t)``) and checkpoints ``rl_model_<steps>_steps.zip`` written ``seconds`` after ``t_start``."""
    run.mkdir(parents=True, exist_ok=True)
    steps = np.array(sorted(evaluations))
    results = np.array([evaluations[s] for s in steps], dtype=float)
    np.savez(run / "evaluations.npz", timesteps=steps, results=results, ep_lengths=results.astype(int))
    lines = [f'#{{"t_start": {T_START}, "env_id": "CartPole-v1"}}', "r,l,t", *(f"{r},{n},{t}" for r, n, t in episodes)]
    (run / monitor).write_text("\n".join(lines) + "\n")
    for step, seconds in (checkpoints or {}).items():
        path = run / f"rl_model_{step}_steps.zip"
        path.write_bytes(b"")
        os.utime(path, (T_START + seconds, T_START + seconds))
    return run


def write_clone(folder: Path, score: float, agreement: float, expert: float = 500.0) -> Path:
    """What ``pgplug bc -f folder`` leaves: ``a2c/CartPole-v1_bc_1/bc.yml`` (and the model, here empty)."""
    run = folder / "a2c" / "CartPole-v1_bc_1"
    run.mkdir(parents=True)
    record = {"expert_steps": 1000, "action_agreement": agreement, "expert_return": {"mean": expert, "std": 0.0},
              "bc_return": {"mean": score, "std": 1.0}}  # fmt: skip
    (run / "bc.yml").write_text(yaml.safe_dump(record))
    (run / "CartPole-v1.zip").write_bytes(b"")
    return run


@pytest.fixture
def outputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """results_common's folders moved under tmp_path (REPO too: write_csv and write_json print paths relative to it)."""
    monkeypatch.setattr(results_common, "REPO", tmp_path)
    for name in ("RESULTS", "IMAGES", "RUNS"):
        monkeypatch.setattr(results_common, name, tmp_path / name.lower())
    return tmp_path


def test_the_commands_are_pgplug_bc_and_pgplug_train_with_a_warm_start(tmp_path: Path) -> None:
    clone = results_bc.clone_job(Path("e.zip"), 2_500, 1, tmp_path).command
    assert clone[clone.index("bc") :][:3] == ["bc", "--expert", "e.zip"]
    assert clone[clone.index("-n") + 1] == "2500" and clone[clone.index("--seed") + 1] == "1"
    args = argparse.Namespace(rl_steps=4_000, eval_freq=1_000, eval_episodes=5)
    warm = results_bc.a2c_job(Path("e.zip"), 1_000, 2, tmp_path, args).command
    assert warm[warm.index("--bc-warmstart") + 1 :][:3] == ["e.zip", "--bc-steps", "1000"]
    assert warm[warm.index("--save-freq") + 1] == "1000" and warm[warm.index("--eval-freq") + 1] == "1000"
    scratch = results_bc.a2c_job(None, 0, 2, tmp_path, args).command
    assert "--bc-warmstart" not in scratch and scratch[scratch.index("-n") + 1] == "4000"


def test_a_runs_evaluations_are_timed_by_its_checkpoints(tmp_path: Path) -> None:
    run = write_run(tmp_path / "a2c" / "CartPole-v1_1", {1000: [100, 200], 2000: [500, 500]},
                    episodes=[(500.0, 500, 3.0)], checkpoints={1000: 4.5, 2000: 9.25})  # fmt: skip
    assert results_bc.checkpoint_seconds(run) == {1000: 4.5, 2000: 9.25}
    output = "behavioural cloning: 1,000 steps of e.zip (ppo), action agreement 97.5%, loss 0.6 → 0.1\n"
    rows = results_bc.a2c_rows(run, 1_000, 3, output)
    assert [(r["rl_steps"], r["seconds"], r["score"]) for r in rows] == [(1000, 4.5, 150.0), (2000, 9.25, 500.0)]
    assert {(r["part"], r["bc_steps"], r["seed"], r["agreement_train"]) for r in rows} == {
        ("warmstart", 1000, 3, 0.975)
    }
    assert results_bc.a2c_rows(run, 0, 3, output)[0]["agreement_train"] is None  # from scratch: no clone


def test_a_clone_is_read_from_bc_yml(tmp_path: Path) -> None:
    write_clone(tmp_path, score=420.0, agreement=0.95, expert=499.0)
    run = results_bc.clone_run(tmp_path)
    assert results_bc.read_clone(run) == {"score": 420.0, "expert": 499.0, "agreement_train": 0.95}


def test_agreement_counts_the_expert_actions_the_model_picks() -> None:
    class Model:
        def predict(self, observations: np.ndarray, deterministic: bool) -> tuple[np.ndarray, None]:
            assert deterministic
            return (observations[:, 0] > 0).astype(int), None

    observations = np.array([[1.0], [-1.0], [2.0], [-3.0]])
    assert results_bc.agreement(Model(), observations, np.array([1, 0, 0, 0])) == 0.75


def rows() -> list[dict[str, Any]]:
    """Two seeds: clones of 1,000 steps (one reaching 475), A2C from scratch (one seed solves at 3,000 steps) and
    from the 1,000-step clones (both solve at 1,000)."""
    row = results_bc.row
    return [
        row("clone", 1000, 0, rl_steps=0, score=480.0, agreement_train=0.9, agreement_heldout=0.85),
        row("clone", 1000, 1, rl_steps=0, score=300.0, agreement_train=0.8, agreement_heldout=0.7),
        *(row("warmstart", 0, 0, rl_steps=s, seconds=s / 1000, score=y) for s, y in ((1000, 20), (2000, 100),
                                                                                     (3000, 490))),
        *(row("warmstart", 0, 1, rl_steps=s, seconds=s / 1000, score=y) for s, y in ((1000, 30), (2000, 50),
                                                                                     (3000, 60))),
        *(row("warmstart", 1000, s, rl_steps=n, seconds=n / 500, score=500.0, agreement_train=a)
          for s, a in ((0, 0.9), (1, 0.8)) for n in (1000, 2000, 3000)),
    ]  # fmt: skip


def test_the_summary_gives_spreads_over_seeds_and_when_each_setting_solved() -> None:
    result = results_bc.summary(rows(), expert_score=500.0)
    (clone,) = result["clones"]
    assert clone["score"]["median"] == 390.0 and clone["reached_threshold"] == 1
    assert clone["agreement_heldout"]["min"] == 0.7 and clone["agreement_train"]["max"] == 0.9
    scratch, warm = result["warmstart"]
    assert (scratch["setting"], scratch["solved"], scratch["seeds"]) == ("A2C from scratch", 1, 2)
    assert scratch["rl_steps_to_solve"]["median"] == 3000 and scratch["rl_steps_to_solve"]["missing"] == 1
    assert scratch["seconds_to_solve"]["median"] == 3.0 and scratch["last_evaluation"]["max"] == 490.0
    assert scratch["starts_from_part_a_clone"] is None
    assert (warm["setting"], warm["solved"]) == ("BC 1,000 + A2C", 2)
    assert warm["rl_steps_to_solve"]["median"] == 1000 and warm["env_steps_to_solve"]["median"] == 2000
    assert warm["seconds_to_solve"]["median"] == 2.0 and warm["starts_from_part_a_clone"] is True
    changed = [dict(r, agreement_train=0.5) if r["part"] == "warmstart" else r for r in rows()]
    assert results_bc.summary(changed, 500.0)["warmstart"][1]["starts_from_part_a_clone"] is False


def test_the_csv_reads_back_as_written(outputs: Path) -> None:
    path = results_common.write_csv("bc", rows())
    assert path == outputs / "results" / "bc.csv"
    with path.open(newline="") as file:
        assert tuple(next(csv.reader(file))) == results_bc.COLUMNS
    assert results_bc.read_rows(path) == rows()


def fake_jobs(jobs: list[Job], parallel: int = 2, log: Path | None = None) -> list[Done]:
    """``run_jobs`` without training: each job leaves the run folder its command would have made."""
    done = []
    for job in jobs:
        command = job.command
        if "--save-expert" in command:
            folder = Path(command[command.index("--save-expert") + 1])
            folder.mkdir(parents=True)
            (folder / "ppo_cartpole.zip").write_bytes(b"")
            output = ""
        else:
            folder, seed = Path(command[command.index("-f") + 1]), int(command[command.index("--seed") + 1])
            if "bc" in command:
                steps = int(command[command.index("-n") + 1])
                write_clone(folder, score=min(500.0, steps / 10), agreement=0.9 + seed / 100)
                output = ""
            else:
                warm = int(command[command.index("--bc-steps") + 1]) if "--bc-steps" in command else 0
                scores = {1000: [200.0] * 5, 2000: [480.0] * 5} if warm else {1000: [20.0] * 5, 2000: [60.0] * 5}
                write_run(folder / "a2c" / "CartPole-v1_1", scores, [(20.0, 20, 1.0)], {1000: 2.0, 2000: 4.0})
                output = f"behavioural cloning: ... action agreement {90 + seed}.0%, loss 0.6 → 0.1" if warm else ""
        done.append(Done(job.label, 1.0, 0, output))
    return done


def test_a_whole_run_writes_the_table_the_summary_and_both_pictures_then_replots(
    outputs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pgplug

    class Clone:
        def predict(self, observations: np.ndarray, deterministic: bool) -> tuple[np.ndarray, None]:
            return np.zeros(len(observations), dtype=int), None

    monkeypatch.setattr(results_common, "run_jobs", fake_jobs)
    monkeypatch.setattr(results_bc, "heldout_states", lambda expert, steps: (np.zeros((4, 4)), np.array([0, 0, 0, 1])))
    monkeypatch.setattr(pgplug, "load", lambda path, device: Clone())
    results_bc.main(["--seeds", "0", "1", "--clone-steps", "1000", "5000", "--warm-steps", "1000",
                     "--rl-steps", "2000", "--eval-freq", "1000"])  # fmt: skip

    result = json.loads((outputs / "results" / "bc.json").read_text())
    assert result["settings"]["clone_steps"] == [1000, 5000] and result["expert_score"] == 500.0
    clone, scratch, warm = result["commands"]
    assert " bc " in clone and " train " in scratch and "--bc-warmstart" not in scratch and "--bc-warmstart" in warm
    assert [c["score"]["median"] for c in result["clones"]] == [100.0, 500.0]
    assert result["clones"][0]["agreement_heldout"]["median"] == 0.75
    scratch, warm = result["warmstart"]
    assert (scratch["solved"], warm["solved"], warm["rl_steps_to_solve"]["median"]) == (0, 2, 2000)
    assert warm["seconds_to_solve"]["median"] == 4.0 and warm["starts_from_part_a_clone"] is True
    table = results_bc.read_rows(outputs / "results" / "bc.csv")
    assert len(table) == 2 * 2 + 2 * 2 * 2  # 4 clones; 2 settings × 2 seeds × 2 evaluations
    pictures = [outputs / "images" / name for name in ("bc-clone.png", "bc-warmstart.png")]
    assert all(p.stat().st_size > 10_000 for p in pictures)

    for picture in pictures:
        picture.unlink()
    monkeypatch.setattr(results_common, "run_jobs", None)  # --plot-only trains nothing
    results_bc.main(["--plot-only"])
    assert all(p.stat().st_size > 10_000 for p in pictures)


def test_plot_only_without_results_says_so(outputs: Path) -> None:
    with pytest.raises(SystemExit, match="run without --plot-only"):
        results_bc.main(["--plot-only"])
