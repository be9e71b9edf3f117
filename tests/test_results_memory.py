"""Results §6 (benchmarks/results_memory.py) on fabricated run folders: no training, nothing written into docs/."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import results_common
import results_memory
from results_common import Done, Job


def write_run(run: Path, evaluations: dict[int, list[float]], episodes: list[tuple[float, int, float]],
              monitor: str = "0.monitor.csv", env_id: str = "CartPole-v1") -> Path:  # fmt: skip
    """A run folder as ``pgplug train`` leaves it: ``evaluations.npz`` (steps → the episodes' returns) and one
    Monitor file with rows ``(r, l, t)`` (A3C's: ``workers.monitor.csv``)."""
    run.mkdir(parents=True, exist_ok=True)
    steps = np.array(sorted(evaluations))
    results = np.array([evaluations[s] for s in steps], dtype=float)
    np.savez(run / "evaluations.npz", timesteps=steps, results=results, ep_lengths=results.astype(int))
    lines = [f'#{{"t_start": 1700000000.0, "env_id": "{env_id}"}}', "r,l,t", *(f"{r},{n},{t}" for r, n, t in episodes)]
    (run / monitor).write_text("\n".join(lines) + "\n")
    return run


@pytest.fixture
def outputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """results_common's folders moved under tmp_path (REPO too: write_csv and write_json print paths relative to it)."""
    monkeypatch.setattr(results_common, "REPO", tmp_path)
    for name in ("RESULTS", "IMAGES", "RUNS"):
        monkeypatch.setattr(results_common, name, tmp_path / name.lower())
    return tmp_path


def test_cue_runs_take_recurrent_py_settings_and_pong_runs_one_frame_per_step() -> None:
    a2c = results_memory.cue_hyperparams("a2c", "MlpLstmPolicy")
    assert {"policy=MlpLstmPolicy", "n_envs=8", "n_steps=6", "learning_rate=0.001", "ent_coef=0.01"} <= set(a2c)
    assert "policy_kwargs={lstm_hidden_size: 32}" in a2c
    a3c = results_memory.cue_hyperparams("a3c", "MlpPolicy")
    assert {"policy=MlpPolicy", "n_workers=2", "n_envs_per_worker=4", "t_max=6"} <= set(a3c)
    assert not any(v.startswith("policy_kwargs") for v in a3c)
    assert results_memory.pong_hyperparams("CnnPolicy") == ["policy=CnnPolicy", "frame_stack=1"]
    assert results_memory.pong_hyperparams("CnnLstmPolicy") == ["policy=CnnLstmPolicy"]  # its config entry: 1 frame
    args = type("Args", (), {"pong_steps": 1000, "pong_eval_freq": 500})()
    command = results_memory.pong_job("CnnPolicy", Path("f"), args).command
    assert command[command.index("--algo") + 1 :][:3] == ["a3c", "--env", "PongNoFrameskip-v4"]
    assert command[command.index("-params") + 1 :] == ["policy=CnnPolicy", "frame_stack=1"]


def test_pong_episodes_are_counted_in_steps_of_four_frames_and_timed(tmp_path: Path) -> None:
    """Monitor sits under AtariWrapper: its lengths are frames. 4 episodes of 800 frames, 10 s apart."""
    run = write_run(tmp_path / "run", {400: [-21, -21], 800: [-20, -19]},
                    [(-21, 800, 10.0), (-21, 800, 20.0), (-20, 800, 30.0), (-19, 800, 40.0)])  # fmt: skip
    rows = results_memory.run_rows(run, "pong", "a3c", "CnnPolicy", 0, frame_skip=4, with_episodes=True)
    episodes = [r for r in rows if r["kind"] == "episode"]
    assert [(r["steps"], r["seconds"], r["score"]) for r in episodes][:2] == [(200, 10.0, -21.0), (400, 20.0, -21.0)]
    evaluations = [r for r in rows if r["kind"] == "evaluation"]
    assert [(r["steps"], r["seconds"], r["score"]) for r in evaluations] == [(400, 20.0, -21.0), (800, 40.0, -19.5)]
    steps, seconds, _ = results_memory.episodes(run, frame_skip=4)
    assert results_memory.steady_rate(steps, seconds) == pytest.approx(20.0)  # 200 steps per 10 s
    assert results_memory.steady_rate(np.array([5.0]), np.array([1.0])) is None


def cue_rows() -> list[dict[str, Any]]:
    """Two seeds of each learner: feed-forward around 0; LSTM solving (A2C at 2,000 steps, A3C on one seed)."""
    rows = []
    curves = {
        ("a2c", "MlpPolicy"): ([0.1, -0.1, 0.0], [0.0, 0.2, -0.2]),
        ("a2c", "MlpLstmPolicy"): ([0.2, 0.95, 1.0], [0.5, 1.0, 1.0]),
        ("a3c", "MlpPolicy"): ([0.0, 0.1, 0.1], [-0.1, 0.0, 0.0]),
        ("a3c", "MlpLstmPolicy"): ([0.1, 0.3, 0.92], [0.0, 0.1, 0.4]),
    }
    for (algo, policy), per_seed in curves.items():
        for seed, scores in enumerate(per_seed):
            rows += [
                {"task": "cue", "algo": algo, "policy": policy, "seed": seed, "kind": "evaluation",
                 "steps": 1000 * (i + 1), "seconds": float(i + 1), "score": y}
                for i, y in enumerate(scores)
            ]  # fmt: skip
    return rows


def test_the_cue_summary_says_which_learners_solved_and_when() -> None:
    summary = {s["learner"]: s for s in results_memory.cue_summary(cue_rows())}
    assert list(summary) == ["A2C feed-forward", "A2C LSTM", "A3C feed-forward", "A3C LSTM"]
    assert summary["A2C feed-forward"]["solved"] == 0 and summary["A2C feed-forward"]["best_evaluation"]["max"] == 0.2
    assert summary["A2C LSTM"]["solved"] == 2 and summary["A2C LSTM"]["steps_to_solve"]["median"] == 2000
    assert summary["A3C LSTM"]["solved"] == 1 and summary["A3C LSTM"]["steps_to_solve"]["missing"] == 1
    assert summary["A3C LSTM"]["last_evaluation"]["median"] == pytest.approx(0.66)


def test_the_pong_summary_compares_the_lstms_speed_with_the_feed_forward_policys() -> None:
    rows = []
    for policy, seconds_per_100 in (("CnnPolicy", 1.0), ("CnnLstmPolicy", 2.0)):
        rows += [
            {"task": "pong", "algo": "a3c", "policy": policy, "seed": 0, "kind": "episode", "steps": 100 * i,
             "seconds": seconds_per_100 * i, "score": -21.0 + (i == 10)}
            for i in range(1, 11)
        ]  # fmt: skip
    rows.append({"task": "pong", "algo": "a3c", "policy": "CnnPolicy", "seed": 0, "kind": "evaluation",
                 "steps": 1000, "seconds": 10.0, "score": -20.5})  # fmt: skip
    ff, lstm = results_memory.pong_summary(rows, window=2)
    assert (ff["policy"], ff["steps_per_second"], ff["logged_steps"], ff["training_episodes"]) == ("CnnPolicy", 100.0,
                                                                                                  1000, 10)  # fmt: skip
    assert ff["mean_of_last_2_episodes"] == -20.5 and ff["evaluations"] == [{"steps": 1000, "score": -20.5}]
    assert lstm["steps_per_second"] == 50.0 and lstm["speed_vs_feed_forward"] == 0.5


def fake_jobs(jobs: list[Job], parallel: int = 2, log: Path | None = None) -> list[Done]:
    """``run_jobs`` without training: each job leaves the run folder its command would have made (CueMemory: the
    LSTM solves, the feed-forward policy stays at chance; Pong: −21 throughout, the LSTM half as fast)."""
    assert parallel == (1 if any("a3c" in job.command for job in jobs) else 2)  # A3C uses both cores
    for job in jobs:
        command = job.command
        folder, algo = Path(command[command.index("-f") + 1]), command[command.index("--algo") + 1]
        env, params = command[command.index("--env") + 1], command[command.index("-params") + 1 :]
        recurrent = any("Lstm" in p for p in params)
        monitor = "workers.monitor.csv" if algo == "a3c" else "0.monitor.csv"
        if env == "PongNoFrameskip-v4":
            pace = 2.0 if recurrent else 1.0
            episodes = [(-21.0, 800, pace * i) for i in range(1, 9)]
            write_run(folder / "a3c" / f"{env}_1", {1000: [-21.0, -21.0]}, episodes, monitor, env)
        else:
            scores = {1000: [0.0] * 4, 2000: [1.0 if recurrent else 0.0] * 4}
            write_run(folder / algo / "pgplug-CueMemory-v0_1", scores, [(1.0, 6, i / 10) for i in range(1, 400)],
                      monitor)  # fmt: skip
    return [Done(job.label, 1.0, 0, "") for job in jobs]


def test_a_whole_run_writes_the_table_the_summary_and_both_pictures_then_replots(
    outputs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(results_common, "run_jobs", fake_jobs)
    results_memory.main(["--seeds", "0", "1", "--cue-steps", "2000", "--pong-steps", "2000"])

    result = json.loads((outputs / "results" / "memory.json").read_text())
    assert result["settings"]["seeds"] == [0, 1] and len(result["commands"]) == 4 + 2
    cue = {c["learner"]: c for c in result["cue"]}
    assert cue["A2C LSTM"]["solved"] == 2 and cue["A3C feed-forward"]["solved"] == 0
    assert cue["A2C LSTM"]["steps_per_second_with_evaluations"] == pytest.approx(60.0)  # 6 steps per 0.1 s
    ff, lstm = result["pong"]
    assert (ff["steps_per_second"], lstm["speed_vs_feed_forward"]) == (200.0, 0.5)
    assert ff["logged_steps"] == 1600  # 8 episodes of 800 frames
    table = results_memory.read_rows(outputs / "results" / "memory.csv")
    assert len([r for r in table if r["task"] == "cue"]) == 4 * 2 * 2  # learners × seeds × evaluations
    assert len([r for r in table if r["kind"] == "episode"]) == 2 * 8
    pictures = [outputs / "images" / name for name in ("memory-cue.png", "memory-pong.png")]
    assert all(p.stat().st_size > 10_000 for p in pictures)

    for picture in pictures:
        picture.unlink()
    monkeypatch.setattr(results_common, "run_jobs", None)  # --plot-only trains nothing
    results_memory.main(["--plot-only"])
    assert all(p.stat().st_size > 10_000 for p in pictures)


def test_plot_only_without_results_says_so(outputs: Path) -> None:
    with pytest.raises(SystemExit, match="run without --plot-only"):
        results_memory.main(["--plot-only"])
