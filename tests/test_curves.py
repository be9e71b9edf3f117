"""Learning curves: reading Monitor files and evaluations.npz, smoothing, seeds summarised on a common grid,
drawing PNG/SVG (pgplug.interop.curves, pgplug.interop.plotting), ``pgplug plot``, and A3C's Monitor file."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from pgplug.cli import main
from pgplug.cli.worker_monitor import WORKERS_MONITOR, WorkerEpisodesMonitor
from pgplug.errors import PgplugError
from pgplug.interop.curves import (
    Curve,
    group_runs,
    read_episodes,
    read_evaluations,
    read_run,
    rolling_mean,
    summarise,
)
from pgplug.interop.plotting import plot_runs, save_run_curve


def write_monitor(path: Path, t_start: float, rows: list[tuple[float, int, float]]) -> None:
    """A Monitor file as SB3 writes it: a JSON header line, ``r,l,t``, one row per episode."""
    lines = ["#" + json.dumps({"t_start": t_start, "env_id": "CartPole-v1"}), "r,l,t"]
    lines += [f"{r},{length},{t}" for r, length, t in rows]
    path.write_text("\n".join(lines) + "\n")


def make_run(folder: Path, offset: float = 0.0, monitor: bool = True, evaluations: bool = True) -> Path:
    """A run with two envs' Monitor files and three evaluations of two episodes; ``offset`` shifts the returns."""
    folder.mkdir(parents=True)
    if monitor:
        write_monitor(folder / "0.monitor.csv", 100.0, [(10 + offset, 10, 1.0), (30 + offset, 30, 4.0)])
        write_monitor(folder / "1.monitor.csv", 101.0, [(20 + offset, 20, 1.5), (40 + offset, 40, 5.0)])
    if evaluations:
        np.savez(
            folder / "evaluations.npz",
            timesteps=np.array([20, 40, 60]),
            results=np.array([[1.0, 3.0], [5.0, 7.0], [9.0, 11.0]]) + offset,
            ep_lengths=np.ones((3, 2), dtype=int),
        )
    return folder


def test_monitor_files_merge_on_wall_clock_time_and_count_timesteps(tmp_path: Path) -> None:
    run = make_run(tmp_path / "a2c" / "CartPole-v1_1")
    episodes = read_episodes(run)
    # t relative to the earliest t_start: 1.0, 2.5 (=1.5+1), 4.0, 6.0
    assert episodes.y.tolist() == [10, 20, 30, 40]
    assert episodes.seconds.tolist() == [1.0, 2.5, 4.0, 6.0]
    assert episodes.steps.tolist() == [10, 30, 60, 100]
    evaluations, per_evaluation = read_evaluations(run, episodes)
    assert evaluations.y.tolist() == [2.0, 6.0, 10.0] and per_evaluation == 2
    assert evaluations.seconds == pytest.approx([1.75, 3.0, 4.0])  # read off the episodes' clock


def test_rolling_mean_and_seeds_on_a_common_grid() -> None:
    assert rolling_mean(np.array([1.0, 3.0, 5.0, 7.0]), 2).tolist() == [1.0, 2.0, 4.0, 6.0]
    same = [Curve(np.array([1.0, 2.0]), np.array([0.0, 4.0])), Curve(np.array([1.0, 2.0]), np.array([2.0, 8.0]))]
    band = summarise(same, band="minmax")
    assert band.x.tolist() == [1.0, 2.0] and band.mean.tolist() == [1.0, 6.0]
    assert band.lower.tolist() == [0.0, 4.0] and band.upper.tolist() == [2.0, 8.0]
    assert summarise(same, band="std").upper.tolist() == [2.0, 8.0]  # mean ± population std of two values
    shifted = [Curve(np.array([0.0, 10.0]), np.array([0.0, 10.0])), Curve(np.array([2.0, 8.0]), np.array([2.0, 8.0]))]
    band = summarise(shifted, points=4)
    assert band.x.tolist() == [2.0, 4.0, 6.0, 8.0]  # only where every seed has data
    assert band.mean == pytest.approx(band.x)
    with pytest.raises(PgplugError, match="unknown band 'wide'; valid: minmax, std, none"):
        summarise(same, band="wide")


def test_runs_group_by_algorithm_and_env_from_pgplug_and_zoo_folder_names(tmp_path: Path) -> None:
    runs = [
        read_run(make_run(tmp_path / "a2c" / "CartPole-v1_1")),
        read_run(make_run(tmp_path / "a3c" / "CartPole-v1_1")),
        read_run(make_run(tmp_path / "a2c" / "CartPole-v1_2")),
        read_run(make_run(tmp_path / "zoo" / "a2c" / "CartPole-v1_3_0b5d9ad4-8d2b-4f8e-9b3a-4c3f1b2a5e6d")),
    ]
    groups = group_runs(runs)
    assert [(g.setting, len(g.runs)) for g in groups] == [("a2c CartPole-v1", 3), ("a3c CartPole-v1", 1)]


def test_png_and_svg_of_several_settings(tmp_path: Path) -> None:
    runs = [make_run(tmp_path / "logs" / algo / "CartPole-v1_1", offset=1.0) for algo in ("a2c", "a3c")]
    runs += [make_run(tmp_path / "logs" / "a2c" / "CartPole-v1_2", offset=5.0)]
    png = plot_runs(runs, tmp_path / "curves.png", window=2)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = plot_runs(runs, tmp_path / "curves.svg", what="eval", x="time", band="std")
    text = svg.read_text()
    assert text.lstrip().startswith("<?xml") and "<svg" in text and "a2c CartPole-v1 (2 seeds" in text


def test_plot_command_and_its_one_line_errors(tmp_path: Path, capsys) -> None:
    run = make_run(tmp_path / "a2c" / "CartPole-v1_1")
    assert main(["plot", str(run), "-o", str(tmp_path / "out.png"), "--what", "episodes", "--x", "time"]) == 0
    assert (tmp_path / "out.png").is_file() and "a2c CartPole-v1 (1 run)" in capsys.readouterr().out
    assert main(["plot", str(run), "-o", str(tmp_path / "out.jpg")]) == 1
    assert capsys.readouterr().err == (
        f"pgplug: error: cannot write '{tmp_path / 'out.jpg'}': unknown suffix '.jpg'; valid: .png, .svg\n"
    )
    empty = tmp_path / "a2c" / "CartPole-v1_2"
    empty.mkdir()
    assert main(["plot", str(run), str(empty), "-o", str(tmp_path / "out.png")]) == 1
    assert capsys.readouterr().err == (
        f"pgplug: error: {empty} has no learning curve: neither *.monitor.csv files nor evaluations.npz with data\n"
    )
    eval_only = make_run(tmp_path / "a2c" / "CartPole-v1_3", monitor=False)
    assert main(["plot", str(eval_only), "-o", str(tmp_path / "out.svg"), "--what", "episodes"]) == 1
    assert "none of the runs has training episodes (*.monitor.csv)" in capsys.readouterr().err
    assert main(["plot", str(eval_only), "-o", str(tmp_path / "out.svg"), "--x", "time"]) == 1
    assert "no wall-clock times for the evaluations of a2c CartPole-v1" in capsys.readouterr().err
    assert main(["plot", str(tmp_path / "missing"), "-o", str(tmp_path / "out.svg")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_a_run_curve_never_fails_the_run(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert save_run_curve(tmp_path) is None  # nothing to draw yet (no episode ended): no picture, no warning
    with pytest.warns(UserWarning, match=r"^no learning curve for .*does not exist"):
        assert save_run_curve(tmp_path / "gone") is None
    run = make_run(tmp_path / "a2c" / "CartPole-v1_1", evaluations=False)
    assert save_run_curve(run) == run / "curve.png" and (run / "curve.png").stat().st_size > 0


def test_worker_episodes_are_written_as_a_monitor_file(tmp_path: Path) -> None:
    """A3C's workers report episodes to the driver; the callback writes what SB3's Monitor would."""
    callback = WorkerEpisodesMonitor(tmp_path, "CartPole-v1")
    callback._on_training_start()
    for report in (
        {"episodes": [{"r": 9.0, "l": 9, "t": 0.5}]},
        {"episodes": []},
        {"episodes": [{"r": 12.0, "l": 12, "t": 0.9}]},
    ):
        callback.update_locals({"worker": 0, "report": report})
        callback.on_rollout_end()
    callback._on_training_end()
    assert (tmp_path / WORKERS_MONITOR).is_file()
    episodes = read_episodes(tmp_path)
    assert episodes.y.tolist() == [9.0, 12.0] and episodes.steps.tolist() == [9, 21]
