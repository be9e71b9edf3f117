"""``pgplug train --optimize``: the search spaces with the estimator in them (a plugin's estimator and its declared
arguments too), a small study on CartPole kept in SQLite and resumed, the report's best-estimator line and config
(read back and trained with), pruning and diverged trials, and the one-line errors."""

from __future__ import annotations

import csv
import re
import sys
from pathlib import Path

import optuna
import pytest
import yaml

from pgplug import A2C, A3C, REINFORCE
from pgplug.cli import main
from pgplug.cli.settings import RunRequest, settle
from pgplug.cli.trials import FAILURE, HYPERPARAMS, TIMESTEPS, TrialPlan, timed
from pgplug.contracts.search import Choice, check_search_space
from pgplug.errors import PgplugError
from pgplug.interop import config as cfg
from pgplug.interop import search_space
from pgplug.plugins.search_spaces import NETWORKS

FIXTURES = Path(__file__).resolve().parent / "plugin_fixtures"
SEARCHED = str(FIXTURES / "searched_estimators.py")
#: Small, fast trials: n_steps and n_envs fixed on the command line (so not searched), 2 evaluations of 2 episodes.
SMALL = ["-n", "1000", "-params", "n_steps=8", "n_envs=2", "--n-evaluations", "2", "--eval-episodes", "2"]

optuna.logging.set_verbosity(optuna.logging.WARNING)


def new_trial(**enqueued) -> optuna.Trial:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0), direction="maximize")
    if enqueued:
        study.enqueue_trial(enqueued)
    return study.ask()


# -- the search spaces ---------------------------------------------------------------------------


def test_the_estimator_is_a_categorical_over_the_estimators_that_fit_a_plugins_included(plugin_host):
    plugin_host.load_local(SEARCHED)
    for algorithm in (A2C, A3C):  # rollouts cut episodes: no estimator that needs complete ones
        assert {"td", "nstep", "gae", "searched_td", "nan_advantage"} <= set(search_space.estimator_choices(algorithm))
        assert {"full_return", "reward_to_go", "baseline"}.isdisjoint(search_space.estimator_choices(algorithm))
    assert {"full_return", "reward_to_go", "baseline", "searched_td"} <= set(search_space.estimator_choices(REINFORCE))

    trial = new_trial(estimator="searched_td")
    sampled = search_space.sample(trial, A2C, {"n_envs": 8, "gae_lambda": 0.9, "estimator": "nstep"})
    assert sampled["estimator"] == "searched_td"
    assert 0.5 <= sampled["estimator_kwargs"]["scale"] <= 2.0  # the plugin's own declared range
    assert "gae_lambda" not in sampled  # the config's estimator choice gives way to the searched one
    assert trial.params["estimator"] == "searched_td" and "searched_td:scale" in trial.params
    assert sampled["n_envs"] == 8 and sampled["n_steps"] in (5, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
    assert 0.97 <= sampled["gamma"] <= 0.9999 and "one_minus_gamma" in trial.params  # the zoo's way
    assert sampled["policy_kwargs"]["net_arch"] in NETWORKS.options.values()
    cfg.prepare(A2C, sampled, "a2c")  # config data the config reader takes


def test_built_in_estimators_search_their_arguments_and_the_command_line_fixes_what_it_sets(plugin_host):
    gae = search_space.sample(new_trial(estimator="gae"), A2C, {})
    assert 0.9 <= gae["estimator_kwargs"]["gae_lambda"] <= 0.9999
    nstep = search_space.sample(new_trial(estimator="nstep"), A2C, {})
    assert nstep["estimator_kwargs"]["n"] in (1, 2, 4, 8, 16, 32, None)
    base = {"estimator": "gae", "learning_rate": 1e-3, "policy_kwargs": {"net_arch": [32]}}
    trial = new_trial()
    fixed = search_space.sample(trial, A2C, base, fixed={**base, "estimator_kwargs": {}})
    assert (
        fixed["estimator"] == "gae" and "estimator" not in trial.params and "gae:one_minus_gae_lambda" in trial.params
    )
    assert fixed["learning_rate"] == 1e-3 and fixed["policy_kwargs"] == {"net_arch": [32]}
    assert not {"learning_rate", "net_arch", "activation_fn"} & set(trial.params)
    reinforce = search_space.sample(new_trial(), REINFORCE, {})
    assert reinforce["n_episodes"] in (1, 2, 4, 8, 16) and reinforce["estimator"] in search_space.estimator_choices(
        REINFORCE
    )
    with pytest.raises(PgplugError, match=r"algorithm 'no_space' declares no hyperparameter search space"):
        search_space.space_of(type("NoSpace", (A2C,), {"name": "no_space", "search_space": {}}))
    with pytest.raises(PgplugError, match="search_space must map argument names to Choice"):
        check_search_space("estimator 'x'", {"n": [1, 2]})
    with pytest.raises(PgplugError, match="Choice takes one or more"):
        Choice()


# -- a study -------------------------------------------------------------------------------------


def test_a_study_in_sqlite_resumes_and_its_best_config_trains(tmp_path, capsys, plugin_host):
    storage = f"sqlite:///{tmp_path / 'db' / 'study.db'}"
    study = ["train", "--algo", "a2c", "--env", "CartPole-v1", "-optimize", *SMALL, "-f", str(tmp_path / "logs")]
    study += ["--storage", storage, "--seed", "3", "--sampler", "random", "--pruner", "none"]
    assert main([*study, "--n-trials", "2", "--n-jobs", "2"]) == 0  # two trials side by side, in threads
    first = capsys.readouterr().out
    assert len(re.findall(r"^trial \d+: ", first, re.M)) == 2
    assert main([*study, "--max-total-trials", "3"]) == 0  # one more: the study then has three
    out = capsys.readouterr().out
    assert "(resumed: 2 trials)" in out and "study 'a2c_CartPole-v1': 3 trials (3 complete)" in out

    line = next(line for line in out.splitlines() if line.startswith("best estimator for CartPole-v1: "))
    best = max(float(x) for x in re.findall(r"^trial \d+: (-?[\d.]+) ", first + out, re.M))
    assert f"mean reward {best:.2f}" in line
    loaded = optuna.load_study(study_name="a2c_CartPole-v1", storage=storage)
    assert len(loaded.trials) == 3 and loaded.best_value == pytest.approx(best, abs=0.01)
    csv_path = Path(re.search(r"^all trials: (.+\.csv)$", out, re.M).group(1))
    with csv_path.open() as rows:
        assert [row["number"] for row in csv.DictReader(rows)] == ["0", "1", "2"]

    config_path = Path(re.search(r"-conf (\S+\.yml)\)", out).group(1))
    entry = cfg.load_config_file(config_path)["CartPole-v1"]
    best_trial = loaded.best_trial
    assert entry["estimator"] == best_trial.user_attrs["estimator"]["name"]
    assert entry["n_steps"] == 8 and entry["learning_rate"] == best_trial.params["learning_rate"]
    assert line.split(": ", 1)[1].startswith(entry["estimator"])
    assert f"{entry['gamma']:.4g}" in out  # the best-trials table
    train = ["train", "--algo", "a2c", "--env", "CartPole-v1", "-conf", str(config_path), "-n", "16"]
    assert main([*train, "-f", str(tmp_path / "run"), "--eval-freq", "-1", "--n-eval-episodes", "0"]) == 0
    saved = yaml.safe_load(next((tmp_path / "run").rglob("config.yml")).read_text())
    assert saved["estimator"] == entry["estimator"] and saved["n_timesteps"] == 16


def settled_plan(tmp_path: Path, n_evaluations: int = 3) -> TrialPlan:
    request = RunRequest(
        algo="a2c", env="CartPole-v1", hyperparams=["n_steps=8", "n_envs=2"], n_timesteps=1200, estimator="td"
    )
    return TrialPlan("a2c", settle(request), seed=0, n_evaluations=n_evaluations, eval_episodes=2)


def test_a_pruner_stops_a_bad_trial_at_its_first_evaluation(tmp_path):
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=1e9))
    study.optimize(lambda trial: timed(trial, settled_plan(tmp_path)), n_trials=1)
    (trial,) = study.trials
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert trial.user_attrs[FAILURE] == "pruned at evaluation 1 of 3" and list(trial.intermediate_values) == [1]
    assert trial.user_attrs[TIMESTEPS] <= 1200 // 3 + 16  # stopped after a third of its budget
    assert trial.user_attrs[HYPERPARAMS]["estimator"] == "td"  # --estimator fixed it


def test_a_diverged_trial_is_pruned_and_the_study_goes_on(tmp_path, plugin_host):
    plugin_host.load_local(SEARCHED)
    plan = settled_plan(tmp_path, n_evaluations=1)
    plan.settings.overrides.pop("estimator")  # search the estimator: the NaN one first, then the TD one
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial({"estimator": "nan_advantage"})
    study.enqueue_trial({"estimator": "td"})
    study.optimize(lambda trial: timed(trial, plan), n_trials=2)
    diverged, finished = study.trials
    assert diverged.state == optuna.trial.TrialState.PRUNED
    assert diverged.user_attrs[FAILURE].startswith("failed: ") and "training diverged" in diverged.user_attrs[FAILURE]
    assert finished.state == optuna.trial.TrialState.COMPLETE and finished.value > 0


# -- one-line errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "code", "message"),
    [
        (
            ["--sampler", "skopt"],
            2,
            "argument --sampler: invalid choice: 'skopt' (choose from 'random', 'tpe', 'auto')",
        ),
        (
            ["--pruner", "hyperband"],
            2,
            "argument --pruner: invalid choice: 'hyperband' (choose from 'halving', 'median', 'none')",
        ),
        (["--n-trials", "0"], 2, "argument --n-trials: n_trials must be"),
        (["--storage", "nosuchdb://x"], 1, "--storage 'nosuchdb://x': Optuna cannot open it (NoSuchModuleError"),
        (["-i", "model.zip"], 1, "--optimize trains new models from sampled hyperparameters, so it cannot take -i"),
    ],
)
def test_bad_search_arguments_fail_in_one_line(tmp_path, capsys, extra, code, message):
    argv = ["train", "--algo", "a2c", "--env", "CartPole-v1", "--optimize", "-f", str(tmp_path), *extra]
    assert main(argv) == code
    err = capsys.readouterr().err
    assert err.startswith("pgplug: error: ") and message in err and err.count("\n") == 1


def test_an_algorithm_without_a_search_space_and_a_missing_optuna_fail_in_one_line(capsys, monkeypatch, plugin_host):
    example = str(Path(__file__).resolve().parents[1] / "docs" / "examples" / "my_algorithm.py")
    assert main(["train", "--plugin", example, "--algo", "vpg", "--env", "CartPole-v1", "--optimize"]) == 1
    assert capsys.readouterr().err == (
        "pgplug: error: algorithm 'vpg' declares no hyperparameter search space (search_space); algorithms with one: "
        "a2c, a3c, reinforce\n"
    )
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna raises ImportError
    assert main(["train", "--algo", "a2c", "--env", "CartPole-v1", "--optimize"]) == 1
    assert capsys.readouterr().err == "pgplug: error: --optimize needs Optuna: pip install 'pgplug[optimize]'\n"
