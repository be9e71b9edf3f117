"""One trial of ``pgplug train --optimize``: sample hyperparameters, train as ``pgplug train`` does, evaluate every
``n_timesteps / n_evaluations`` steps and let the study's pruner stop it early (the zoo's ``TrialEvalCallback``).

A trial whose hyperparameters the algorithm refuses, or whose training diverges (a loss that is not finite), is
pruned with the reason in its ``failure`` attribute, as the zoo prunes trials that raise: the study goes on.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stable_baselines3.common.callbacks import EvalCallback

from pgplug.cli.settings import Settings, env_spec, to_plain, uses_workers
from pgplug.cli.train import build_model, close_quietly
from pgplug.errors import PgplugError
from pgplug.interop import config as cfg
from pgplug.interop import search_space

#: The trials' user attributes: the sampled hyperparameters (config data), the estimator the model used, why a trial
#: was stopped without a result, and its timesteps.
HYPERPARAMS, ESTIMATOR, FAILURE, TIMESTEPS = "hyperparams", "estimator", "failure", "timesteps"


@dataclass(frozen=True)
class TrialPlan:
    """What every trial of a study shares.

    :param settings: the settled run (config entry and command-line overrides), the base each trial samples over
    :param seed: the study's seed; trial ``k`` trains with ``seed + k`` (None: unseeded, as the zoo's trials)
    :param n_evaluations: evaluations per trial, each reported to the pruner
    :param eval_episodes: episodes per evaluation
    :param log_path: ``--optimization-log-path``: each trial's evaluations and best model under ``trial_<k>/``
    """

    algo: str
    settings: Settings
    seed: int | None
    n_evaluations: int
    eval_episodes: int
    device: str = "auto"
    verbose: int = 0
    vec_env: str = "dummy"
    log_path: Path | None = None


class TrialEvalCallback(EvalCallback):
    """Evaluate every ``eval_freq`` calls, report the mean reward to the trial, stop when its pruner says so."""

    def __init__(self, eval_env: Any, trial: Any, **kwargs: Any) -> None:
        super().__init__(eval_env, **kwargs)
        self.trial = trial
        self.eval_idx = 0
        self.is_pruned = False

    def _on_step(self) -> bool:
        if self.eval_freq > 0 and self.n_calls % self.eval_freq == 0:
            super()._on_step()
            self.eval_idx += 1
            self.trial.report(self.last_mean_reward, self.eval_idx)
            if self.trial.should_prune():
                self.is_pruned = True
                return False
        return True


def trial_settings(settings: Settings, hyperparams: dict[str, Any], algo: str) -> Settings:
    """The settled run with the trial's hyperparameters, checked as a config entry is (``-n`` still applies)."""
    run_config = cfg.prepare(settings.cls, hyperparams, algo, settings.atari)
    run_config.n_timesteps = settings.run_config.n_timesteps
    return dataclasses.replace(settings, run_config=run_config)


def prune(trial: Any, reason: str) -> None:
    """Stop the trial without a result, saying why."""
    import optuna

    trial.set_user_attr(FAILURE, reason)
    raise optuna.TrialPruned(reason)


def run_trial(trial: Any, plan: TrialPlan) -> float:
    """Train one sampled configuration; the mean reward of its last evaluation."""
    settings = plan.settings
    hyperparams = search_space.sample(trial, settings.cls, settings.run_config.raw, settings.overrides)
    trial.set_user_attr(HYPERPARAMS, to_plain(hyperparams))
    try:
        settings = trial_settings(settings, hyperparams, plan.algo)
    except PgplugError as exc:
        prune(trial, f"refused: {exc}")
    seed = None if plan.seed is None else (plan.seed + trial.number) % 2**32
    spec = env_spec(settings, seed, plan.vec_env)
    owned: list[Any] = []
    model = None
    try:
        env = spec if uses_workers(settings.cls) else spec.make_vec_env()
        if env is not spec:
            owned.append(env)
        common = dict(seed=seed, verbose=plan.verbose if plan.verbose >= 2 else 0, device=plan.device)
        try:
            model = build_model(settings, env, common)
        except PgplugError as exc:
            prune(trial, f"refused: {exc}")
        estimator = getattr(model, "estimator", None)
        if estimator is not None:
            trial.set_user_attr(ESTIMATOR, {"name": estimator.name, "kwargs": to_plain(estimator.params())})
        eval_env = spec.make_vec_env(n_envs=1, start_index=spec.n_envs, training=False)
        owned.append(eval_env)
        n_timesteps = settings.run_config.n_timesteps
        n_envs = getattr(model, "n_envs_per_worker", None) or model.n_envs
        folder = None if plan.log_path is None else str(plan.log_path / f"trial_{trial.number}")
        callback = TrialEvalCallback(
            eval_env,
            trial,
            n_eval_episodes=plan.eval_episodes,
            eval_freq=max(int(n_timesteps / plan.n_evaluations) // n_envs, 1),
            deterministic=not settings.atari,
            best_model_save_path=folder,
            log_path=folder,
            verbose=0,
        )
        try:
            model.learn(n_timesteps, callback=callback)
        except (ValueError, AssertionError) as exc:  # a diverged loss (DivergedError), NaN logits in torch's checks
            prune(trial, f"failed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
        trial.set_user_attr(TIMESTEPS, int(model.num_timesteps))
        if callback.is_pruned:
            prune(trial, f"pruned at evaluation {callback.eval_idx} of {plan.n_evaluations}")
        if callback.eval_idx == 0:
            prune(trial, "training ended before its first evaluation")
        return float(callback.last_mean_reward)
    finally:
        for env in {id(e): e for e in [getattr(model, "env", None), *owned] if e is not None}.values():
            close_quietly(env)


def timed(trial: Any, plan: TrialPlan) -> float:
    """:func:`run_trial`, recording its wall time (a pruned trial's too)."""
    start = time.monotonic()
    try:
        return run_trial(trial, plan)
    finally:
        trial.set_user_attr("wall_time", round(time.monotonic() - start, 2))
