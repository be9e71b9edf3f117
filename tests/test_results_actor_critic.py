"""Results §3 (benchmarks/results_actor_critic.py) on fabricated run folders: no training."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

import pytest
import results_actor_critic as ac
import results_common
from results_common import Done, Job
from results_fixtures import even_episodes, fake_run


@pytest.fixture
def outputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """docs/results, docs/images/results and runs/results under tmp_path."""
    for module in (results_common, ac):
        monkeypatch.setattr(module, "REPO", tmp_path)
        monkeypatch.setattr(module, "RESULTS", tmp_path / "docs" / "results", raising=False)
    monkeypatch.setattr(results_common, "IMAGES", tmp_path / "docs" / "images" / "results")
    monkeypatch.setattr(results_common, "RUNS", tmp_path / "runs" / "results")
    return tmp_path


def option(command: Sequence[str], name: str) -> str:
    return command[list(command).index(name) + 1]


#: Steps to solve of the fabricated runs, per env and estimator (None: never), the same for every seed but seed 1,
#: which takes one evaluation longer.
SOLVES_AT = {("CartPole-v1", "td"): 20_000, ("CartPole-v1", "nstep"): 10_000, ("CartPole-v1", "gae"): None}


def fake_jobs(jobs: Sequence[Job], parallel: int = 2, log: Path | None = None) -> list[Done]:
    """What ``pgplug train`` would leave in each job's folder: evaluations every --eval-freq steps, rising to the
    env's threshold at SOLVES_AT, and 10 training episodes over 10 seconds per 10,000 steps."""
    done = []
    for job in jobs:
        command = job.command
        env, seed = option(command, "--env"), int(option(command, "--seed"))
        steps, every = int(option(command, "-n")), int(option(command, "--eval-freq"))
        threshold = ac.ENV_BY_ID[env].threshold
        at = SOLVES_AT.get((env, option(command, "--estimator")))
        at = None if at is None else at + every * (seed == 1)
        evaluations = []
        for k in range(every, steps + 1, every):
            score = threshold if at is not None and k >= at else threshold - 100 + k / steps
            evaluations.append((k, [score - 1, score + 1]))
        fake_run(
            Path(option(command, "-f")),
            "a2c",
            env,
            evaluations=evaluations,
            episodes=even_episodes(steps, steps / 1000),
        )
        done.append(Done(job.label, 1.0, 0, ""))
    return done


def test_estimator_settings_that_coincide_on_the_rollouts_are_run_once() -> None:
    kept, skipped = ac.distinct(ac.SETTINGS, n_steps=5)
    assert [s.label for s in kept] == ["td", "nstep n=None", "gae λ=0.95"]
    assert {s["estimator"]: s["same_as"] for s in skipped} == {"nstep n=1": "td", "nstep n=5": "nstep n=None"}
    kept, skipped = ac.distinct(ac.SETTINGS, n_steps=20)
    assert [s.label for s in kept] == ["td", "nstep n=5", "nstep n=None", "gae λ=0.95"]
    assert [s["estimator"] for s in skipped] == ["nstep n=1"]
    gae = [ac.Setting("gae λ=0", "gae", ("gae_lambda=0",)), ac.Setting("gae λ=1", "gae", ("gae_lambda=1",))]
    assert [ac.equivalent(s, 5)[0] for s in gae] == ["td", "nstep n=None"]


def test_the_zoo_references_and_budgets_are_those_of_configs_a2c_yml() -> None:
    for env in ac.ENVS:
        entry = ac.config_entry(env.id)
        assert int(float(entry["n_timesteps"])) == env.zoo_steps, env.id
        assert ac.config_n_steps(env.id) == 5
        assert env.steps <= env.zoo_steps and env.steps % env.eval_freq == 0
    assert {e.id for e in ac.ENVS if ac.config_entry(e.id).get("normalize")} == {"Acrobot-v1", "MountainCar-v0"}


def test_a2c_default_rollout_length_is_the_one_assumed() -> None:
    import inspect

    from pgplug import A2C

    assert inspect.signature(A2C).parameters["n_steps"].default == ac.A2C_DEFAULT_N_STEPS


def test_one_pgplug_train_per_env_distinct_estimator_and_seed(tmp_path: Path) -> None:
    envs = [ac.ENV_BY_ID["CartPole-v1"], ac.ENV_BY_ID["LunarLander-v3"]]
    steps = {"CartPole-v1": 150_000, "LunarLander-v3": 200_000}
    planned, skipped = ac.plan(envs, ac.SETTINGS, [0, 1], steps, None, 5, tmp_path)
    assert len(planned) == 2 * 3 * 2 and planned[0].env.id == "LunarLander-v3"  # the longer runs first
    assert skipped["CartPole-v1"][0]["estimator"] == "nstep n=1"
    gae = next(p.job.command for p in planned if p.setting.estimator == "gae" and p.env.id == "CartPole-v1")
    assert option(gae, "--algo") == "a2c" and option(gae, "-n") == "150000" and option(gae, "--eval-freq") == "10000"
    assert option(gae, "--estimator-kwargs") == "gae_lambda=0.95" and "-params" not in gae
    assert len({p.folder for p in planned}) == len(planned)
    planned, _ = ac.plan(envs[:1], ac.SETTINGS, [0], steps, 20, 5, tmp_path)
    assert len(planned) == 4 and option(planned[0].job.command, "-params") == "n_steps=20"
    assert 0 < ac.estimate_minutes(planned) < 5


def test_steps_override_one_env_or_all() -> None:
    assert ac.parse_steps(["CartPole-v1=1e5"], ac.ENVS)["CartPole-v1"] == 100_000
    assert set(ac.parse_steps(["5000"], ac.ENVS).values()) == {5000}
    with pytest.raises(SystemExit, match="Pong"):
        ac.parse_steps(["Pong=5"], ac.ENVS)


def test_the_section_from_fabricated_runs(outputs: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setattr(ac, "run_jobs", fake_jobs)
    ac.main(["--envs", "CartPole-v1", "LunarLander-v3", "--seeds", "0", "1", "--steps", "40000"])
    printed = capsys.readouterr().out
    result = json.loads((outputs / "docs" / "results" / "actor_critic.json").read_text())
    summary = {(s["env"], s["estimator"]): s for s in result["summary"]}
    assert list(summary)[:3] == [("CartPole-v1", "td"), ("CartPole-v1", "nstep n=None"), ("CartPole-v1", "gae λ=0.95")]
    td = summary[("CartPole-v1", "td")]
    assert (td["solved"], td["runs"]) == (2, 2)
    assert (td["steps_to_solve"]["min"], td["steps_to_solve"]["max"]) == (20_000, 30_000)
    assert td["seconds_to_solve"]["min"] == pytest.approx(20.0)  # 10 s per 10,000 steps in the fake runs
    assert td["final"]["mean"] == pytest.approx(475.0) and td["zoo_mean"] == 500.0
    gae = summary[("CartPole-v1", "gae λ=0.95")]
    assert gae["solved"] == 0 and gae["steps_to_solve"]["missing"] == 2
    assert result["settings"]["budgets"]["LunarLander-v3"] == {
        "steps": 40_000,
        "zoo_steps": 200_000,
        "eval_freq": 20_000,
    }
    assert result["settings"]["references"]["LunarLander-v3"]["zoo_env"] == "LunarLander-v2"
    assert {s["estimator"] for s in result["skipped"]["CartPole-v1"]} == {"nstep n=1", "nstep n=5"}

    with (outputs / "docs" / "results" / "actor_critic.csv").open(newline="") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 2 * 3 * 2
    first = rows[0]
    assert (first["env"], first["estimator"], first["seed"], first["solved_steps"]) == (
        "CartPole-v1",
        "td",
        "0",
        "20000",
    )
    assert first["run"].startswith("runs/results/actor_critic/CartPole-v1/td/seed_0/a2c/CartPole-v1_")

    picture = outputs / "docs" / "images" / "results" / ac.PICTURE
    assert picture.stat().st_size > 10_000
    assert "LunarLander-v3: 40,000 steps here (20% of the zoo's 200,000)" in printed
    assert "nstep n=5 not run (every env), the same as nstep n=None" in printed
    line = next(li for li in printed.splitlines() if li.startswith("CartPole-v1") and "  td  " in li)
    assert "2/2 in 40k" in line and "25k [20k–30k]" in line and "500.0 ± 0.0 (500k)" in line

    picture.unlink()
    ac.main(["--plot-only"])
    assert picture.stat().st_size > 10_000
    assert "2/2 in 40k" in capsys.readouterr().out


def test_plot_only_without_results_says_so(outputs: Path) -> None:
    with pytest.raises(SystemExit, match="run without --plot-only"):
        ac.main(["--plot-only"])
