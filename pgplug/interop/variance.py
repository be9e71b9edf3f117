"""The variance lab: how noisy and how biased each estimator's policy gradient is, at fixed policy weights.

At the weights of a policy (a new model's initial ones, or a saved model's), :func:`measure`

1. fits the critic to the Monte-Carlo reward-to-go of the fixed policy on batches of their own (if an estimator
   or the reference has a critic), since a baseline is only as good as its V(s);
2. collects K fresh batches of complete episodes and computes every estimator's ĝ on the *same* batches
   (a paired comparison, :func:`pgplug.runtime.policy_gradients.policy_gradients`);
3. computes a high-sample reference gradient, the mean of the reference estimator's ĝ over many other batches;
4. reports per estimator tr Cov(ĝ), its ratio to ``full_return``'s, the cosine of the mean ĝ with the reference
   and the signal-to-noise ratio, each with a bootstrap interval over the K batches
   (:mod:`pgplug.interop.gradient_statistics`).

Complete episodes for all, critic estimators included, so that every estimator sees the same data; at a time-limit
truncation a critic estimator's reward carries γ·V(terminal observation), as in training
(:mod:`pgplug.runtime.episodes`). See docs/variance.md.
"""

from __future__ import annotations

import copy
import difflib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.preprocessing import is_image_space
from stable_baselines3.common.utils import set_random_seed
from stable_baselines3.common.vec_env import VecEnv

from pgplug.contracts.estimator import Estimator
from pgplug.contracts.registries import get_host, make_estimator
from pgplug.errors import PgplugError
from pgplug.files.atomic import atomic_write
from pgplug.interop import compat
from pgplug.interop.config import constructor_keys, parse_assignments
from pgplug.interop.gradient_statistics import GradientSample, bootstrap_counts, percentile_interval
from pgplug.runtime.envs import EnvSpec
from pgplug.runtime.episodes import EpisodeBatch, EpisodeSampler
from pgplug.runtime.policy_gradients import fit_critic, policy_gradients

#: The estimator whose variance every other one is divided by (the lecture's starting point).
RATIO_BASE = "full_return"
#: The critic's regression target: the Monte-Carlo reward-to-go (``baseline``'s target).
CRITIC_TARGET = "reward_to_go"
#: The default reference: unbiased for pgplug's gradient, and the least noisy estimator that is.
DEFAULT_REFERENCE = "baseline"
#: The statistics reported per estimator, with a bootstrap interval each.
STATISTICS = ("trace_cov", "ratio_to_full_return", "cosine_to_reference", "snr")


# -- which estimators ----------------------------------------------------------------------------


@dataclass(frozen=True)
class EstimatorSpec:
    """An estimator to measure: its registered name and arguments, and the label it is reported under."""

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """``gae`` or ``gae:gae_lambda=0.9``: the name, with the arguments when there are any."""
        if not self.kwargs:
            return self.name
        return f"{self.name}:" + ",".join(f"{key}={value}" for key, value in self.kwargs.items())

    def build(self) -> Estimator:
        return make_estimator(self.name, self.kwargs)


def check_estimator_name(name: str) -> str:
    """``name`` if an estimator is registered under it; else one line with the closest names and all valid ones."""
    names = get_host().estimators.names()
    if name in names:
        return name
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
    raise PgplugError(f"unknown estimator {name!r}{hint}; valid estimators: {', '.join(names)}")


def parse_estimator(text: str) -> EstimatorSpec:
    """``NAME`` or ``NAME:KEY=VALUE[,KEY=VALUE...]`` (YAML values), e.g. ``gae:gae_lambda=0.9``, ``nstep:n=5``.

    The estimator is built once here, so a bad argument is refused before anything runs.
    """
    name, _, arguments = text.partition(":")
    check_estimator_name(name.strip())
    kwargs = parse_assignments([a for a in arguments.split(",") if a.strip()], f"argument of estimator {name!r}")
    spec = EstimatorSpec(name.strip(), kwargs)
    spec.build()
    return spec


def all_estimators() -> list[EstimatorSpec]:
    """Every registered estimator with its default arguments, ``full_return`` (the ratios' denominator) first."""
    names = sorted(get_host().estimators.names(), key=lambda name: name != RATIO_BASE)
    return [EstimatorSpec(name) for name in names]


# -- the settings and the model ------------------------------------------------------------------


@dataclass(frozen=True)
class VarianceSettings:
    """How the lab measures.

    :param batches: K, the paired batches every estimator's ĝ is computed on (≥ 2)
    :param seed: seeds the sampling (python, numpy, torch)
    :param reference: the estimator whose mean ĝ over ``reference_batches`` batches is the reference gradient
    :param reference_batches: batches of the reference gradient (0: 10·K)
    :param critic_batches: batches the critic is fitted on (0: K)
    :param critic_iterations: full-batch Adam steps of the critic's fit
    :param episodes_per_env: complete episodes each env contributes to a batch
    :param max_steps: at most this many steps per env per batch
    :param bootstrap: bootstrap resamples of the K batches
    :param confidence: the confidence level of the intervals
    """

    batches: int = 30
    seed: int = 0
    reference: EstimatorSpec = EstimatorSpec(DEFAULT_REFERENCE)
    reference_batches: int = 0
    critic_batches: int = 0
    critic_iterations: int = 500
    episodes_per_env: int = 1
    max_steps: int = 10_000
    bootstrap: int = 1000
    confidence: float = 0.95

    def __post_init__(self) -> None:
        if self.batches < 2:
            raise PgplugError(f"batches must be at least 2 (a covariance needs two gradients), got {self.batches}")
        if not 0 < self.confidence < 1:
            raise PgplugError(f"confidence must be between 0 and 1, got {self.confidence}")


def default_policy(observation_space: spaces.Space) -> str:
    """SB3's policy alias for a space: ``MultiInputPolicy`` for dicts, ``CnnPolicy`` for images, else ``MlpPolicy``."""
    if isinstance(observation_space, spaces.Dict):
        return "MultiInputPolicy"
    return "CnnPolicy" if is_image_space(observation_space) else "MlpPolicy"


def initial_model(
    algo: str, env: VecEnv, seed: int, spec: EnvSpec | None = None, policy: str | None = None
) -> BaseAlgorithm:
    """A new ``algo`` model on ``env`` (any name :func:`pgplug.interop.compat.algorithm_names` lists), at its
    initial weights. A worker algorithm (A3C), which builds its envs in each worker, gets ``spec`` instead."""
    cls = compat.algorithm_class(algo)
    workers = "n_workers" in constructor_keys(cls)
    if workers and spec is None:
        raise PgplugError(f"{algo} builds its envs in its workers: pass the env's EnvSpec as spec")
    return cls(policy or default_policy(env.observation_space), spec if workers else env, seed=seed, device="cpu")


def measured_policy(model: BaseAlgorithm, env: VecEnv, env_id: str) -> ActorCriticPolicy:
    """A copy of ``model``'s policy to measure on ``env`` (the lab fits its critic; the model keeps its own)."""
    policy = getattr(model, "policy", None)
    if not isinstance(policy, ActorCriticPolicy) or hasattr(policy, "lstm_actor"):
        raise PgplugError(
            f"the lab measures feed-forward SB3 ActorCriticPolicy models; this {type(model).__name__} holds a "
            f"{type(policy).__name__}"
        )
    for kind in ("observation", "action"):
        expected, given = getattr(model, f"{kind}_space"), getattr(env, f"{kind}_space")
        if expected != given:
            raise PgplugError(
                f"the model expects {kind}s {_short(expected)}, but {env_id} gives {_short(given)}: is --env right?"
            )
    copied = copy.deepcopy(policy).to("cpu")
    copied.set_training_mode(False)
    return copied


def _short(space: spaces.Space) -> str:
    if isinstance(space, spaces.Box):
        return f"Box{space.shape} {space.dtype}"
    return " ".join(str(space).split())


# -- the measurement -----------------------------------------------------------------------------


@dataclass
class EstimatorResult:
    """One estimator's statistics and their bootstrap intervals (``ci``: statistic → (low, high))."""

    spec: EstimatorSpec
    trace_cov: float
    ratio_to_full_return: float | None
    cosine_to_reference: float
    snr: float
    mean_sq_norm: float
    ci: dict[str, tuple[float, float] | None]

    def to_json(self) -> dict[str, Any]:
        return _finite(
            {
                "estimator": self.spec.name,
                "kwargs": self.spec.kwargs,
                "trace_cov": self.trace_cov,
                "ratio_to_full_return": self.ratio_to_full_return,
                "cosine_to_reference": self.cosine_to_reference,
                "snr": self.snr,
                "mean_sq_norm": self.mean_sq_norm,
                "ci": {key: None if value is None else list(value) for key, value in self.ci.items()},
            }
        )


@dataclass
class VarianceReport:
    """What :func:`measure` found, by estimator label, and how."""

    env: str
    settings: VarianceSettings
    gamma: float
    n_envs: int
    estimators: dict[str, EstimatorResult]
    reference_batches: int
    critic_batches: int
    critic_explained_variance: float | None
    mean_episode_length: float
    episodes_per_batch: float
    algo: str | None = None
    weights: str | None = None
    vecnormalize: str | None = None

    def to_json(self) -> dict[str, Any]:
        s = self.settings
        return _finite(
            {
                "env": self.env,
                "algo": self.algo,
                "weights": self.weights,
                "vecnormalize": self.vecnormalize,
                "batches": s.batches,
                "seed": s.seed,
                "gamma": self.gamma,
                "n_envs": self.n_envs,
                "episodes_per_batch": self.episodes_per_batch,
                "mean_episode_length": self.mean_episode_length,
                "reference": {"estimator": s.reference.label, "batches": self.reference_batches},
                "critic": {"batches": self.critic_batches, "explained_variance": self.critic_explained_variance},
                "bootstrap": {"resamples": s.bootstrap, "confidence": s.confidence},
                "estimators": {label: result.to_json() for label, result in self.estimators.items()},
            }
        )

    def write_json(self, path: str | Path) -> Path:
        with atomic_write(path) as file:
            file.write((json.dumps(self.to_json(), indent=2) + "\n").encode())
        return Path(path)


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: those become None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def unique_labels(specs: Sequence[EstimatorSpec]) -> dict[str, EstimatorSpec]:
    """The specs by label; an estimator named twice (with the same arguments) is refused."""
    by_label: dict[str, EstimatorSpec] = {}
    for spec in specs:
        if spec.label in by_label:
            raise PgplugError(f"estimator {spec.label!r} is named twice; name each estimator (with its arguments) once")
        by_label[spec.label] = spec
    return by_label


def critic_targets(batches: Sequence[EpisodeBatch], gamma: float) -> list[th.Tensor]:
    """The Monte-Carlo reward-to-go of each batch, with the truncation bonus (what ``baseline``'s critic learns)."""
    target = make_estimator(CRITIC_TARGET)
    return [
        target(
            rewards=b.rollout.rewards + b.truncation_bonus,
            episode_starts=b.rollout.episode_starts,
            last_dones=b.rollout.last_dones,
            gamma=gamma,
        ).advantages
        for b in batches
    ]


def reference_gradient(
    policy: ActorCriticPolicy, sampler: EpisodeSampler, estimator: Estimator, gamma: float, n_batches: int
) -> th.Tensor:
    """The mean of ``estimator``'s ĝ over ``n_batches`` fresh batches, collected a few at a time."""
    total: th.Tensor | None = None
    done = 0
    while done < n_batches:
        chunk = sampler.batches(min(32, n_batches - done))
        summed = policy_gradients(policy, chunk, {"reference": estimator}, gamma)["reference"].sum(dim=0)
        total = summed if total is None else total + summed
        done += len(chunk)
    assert total is not None
    return total / n_batches


def measure(
    policy: ActorCriticPolicy,
    env: VecEnv,
    gamma: float,
    estimators: Sequence[EstimatorSpec],
    settings: VarianceSettings,
    env_id: str = "",
) -> VarianceReport:
    """Measure ``estimators`` at ``policy``'s weights on ``env`` (see the module's docstring).

    ``policy`` is used as it is (its critic is fitted in place: pass a copy, :func:`measured_policy`).
    ``full_return`` is measured too when it is registered, as the ratios' denominator, and reported. Seeds
    python's, numpy's and torch's generators and ``env`` with ``settings.seed``.
    """
    specs = list(estimators)
    if RATIO_BASE in get_host().estimators and RATIO_BASE not in {s.label for s in specs}:
        specs.insert(0, EstimatorSpec(RATIO_BASE))
    by_label = unique_labels(specs)
    built = {label: spec.build() for label, spec in by_label.items()}
    reference = settings.reference.build()
    set_random_seed(settings.seed)
    env.seed(settings.seed)
    sampler = EpisodeSampler(policy, env, gamma, settings.episodes_per_env, settings.max_steps)
    critic_batches = settings.critic_batches or settings.batches
    fit = None
    if any(e.needs_critic for e in [*built.values(), reference]):
        fitting = sampler.batches(critic_batches)
        fit = fit_critic(policy, fitting, critic_targets(fitting, gamma), settings.critic_iterations)
    else:
        critic_batches = 0
    batches = sampler.batches(settings.batches)
    gradients = policy_gradients(policy, batches, built, gamma)
    n_reference = settings.reference_batches or 10 * settings.batches
    ref = reference_gradient(policy, sampler, reference, gamma, n_reference).numpy()
    results = summarise(gradients, ref, by_label, settings)
    episodes = sum(b.n_episodes for b in batches)
    return VarianceReport(
        env=env_id,
        settings=settings,
        gamma=gamma,
        n_envs=env.num_envs,
        estimators=results,
        reference_batches=n_reference,
        critic_batches=critic_batches,
        critic_explained_variance=fit,
        mean_episode_length=sum(b.n_steps for b in batches) / episodes,
        episodes_per_batch=episodes / len(batches),
    )


def summarise(
    gradients: dict[str, th.Tensor],
    reference: np.ndarray,
    specs: dict[str, EstimatorSpec],
    settings: VarianceSettings,
) -> dict[str, EstimatorResult]:
    """Per label, the statistics of its ``[K, n]`` gradients and their bootstrap intervals, the resamples shared."""
    samples = {label: GradientSample.of(g.double().numpy(), reference) for label, g in gradients.items()}
    k = next(iter(samples.values())).k
    counts = bootstrap_counts(k, settings.bootstrap, np.random.default_rng(settings.seed))
    point = {label: s.statistics() for label, s in samples.items()}
    resampled = {label: s.statistics(counts) for label, s in samples.items()}
    base = RATIO_BASE if RATIO_BASE in samples else None
    results = {}
    for label, stats in point.items():
        again = resampled[label]
        ci: dict[str, tuple[float, float] | None] = {
            "trace_cov": percentile_interval(again["trace_cov"], settings.confidence),
            "cosine_to_reference": percentile_interval(again["cosine"], settings.confidence),
            "snr": percentile_interval(again["snr"], settings.confidence),
            "ratio_to_full_return": None,
        }
        ratio = None
        if base is not None:
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = float(stats["trace_cov"][0] / point[base]["trace_cov"][0])
                ci["ratio_to_full_return"] = percentile_interval(
                    again["trace_cov"] / resampled[base]["trace_cov"], settings.confidence
                )
        results[label] = EstimatorResult(
            spec=specs[label],
            trace_cov=float(stats["trace_cov"][0]),
            ratio_to_full_return=ratio,
            cosine_to_reference=float(stats["cosine"][0]),
            snr=float(stats["snr"][0]),
            mean_sq_norm=float(stats["mean_sq_norm"][0]),
            ci=ci,
        )
    return results
