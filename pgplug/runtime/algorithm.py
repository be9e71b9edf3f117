"""The base every pgplug algorithm shares: the SB3 face with estimator, objective and policy-runner plumbing.

:class:`PolicyGradientAlgorithm` is an SB3 ``BaseAlgorithm`` with an estimator, an objective and a
policy runner: policies, vec envs, logger, callbacks, save/load and ``predict`` work as in SB3. How
data is collected and when the policy is updated is the subclass's: synchronous learners build on
:class:`pgplug.runtime.on_policy.OnPolicyLearner` (SB3's ``OnPolicyAlgorithm``), asynchronous ones
(A3C) run their own ``learn``.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
from collections.abc import Mapping
from itertools import repeat
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from sb3_contrib.common.recurrent.policies import (
    RecurrentActorCriticCnnPolicy,
    RecurrentActorCriticPolicy,
    RecurrentMultiInputActorCriticPolicy,
)
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.policies import (
    ActorCriticCnnPolicy,
    ActorCriticPolicy,
    BasePolicy,
    MultiInputActorCriticPolicy,
)
from stable_baselines3.common.preprocessing import is_image_space
from stable_baselines3.common.type_aliases import GymEnv, Schedule

from pgplug.contracts.algorithm import Algorithm
from pgplug.contracts.compatibility import check_fits, compatible_estimators, compatible_objectives
from pgplug.contracts.estimator import Estimator
from pgplug.contracts.objective import LossTerms, Objective
from pgplug.contracts.registries import get_host, make_estimator, make_objective
from pgplug.contracts.rollout import Rollout
from pgplug.errors import InvalidPolicyError, PgplugError, one_line
from pgplug.files.atomic import atomic_write, zip_path
from pgplug.files.model_zip import read_zip, rebuild_objects
from pgplug.runtime import random_state
from pgplug.runtime.policy_runner import PolicyRunner
from pgplug.runtime.runners import check_precision_runs, resolve_fast_paths, runner_for
from pgplug.validation import (
    Rule,
    check_bool,
    check_ent_coef,
    check_finite,
    check_keywords,
    check_learning_rate,
    check_max_grad_norm,
    check_model_device,
    check_net_arch,
    check_non_negative,
    check_precision,
    check_seed,
    check_settings,
    check_timesteps,
    check_unit_interval,
)

SelfAlgorithm = TypeVar("SelfAlgorithm", bound="PolicyGradientAlgorithm")

SUPPORTED_ACTION_SPACES = (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)


class ClassDefault:
    """``learn(log_interval=CLASS_DEFAULT)``: the class's ``default_log_interval`` (SB3's A2C defaults to 100, and
    ``None`` means "no logs" there, so it cannot stand for "the default")."""

    def __repr__(self) -> str:
        return "CLASS_DEFAULT"


CLASS_DEFAULT: Any = ClassDefault()


def explained_variance(values: th.Tensor, returns: th.Tensor) -> float:
    """1 − Var[returns − values] / Var[returns], as SB3 logs it (NaN when the returns are constant)."""
    var_returns = th.var(returns, correction=0)
    if var_returns == 0:
        return float("nan")
    return float(1.0 - th.var(returns - values, correction=0) / var_returns)


def check_policy_fits(policy_class: type, observation_space: spaces.Space, policy_kwargs: dict[str, Any]) -> None:
    """Refuse, in one line, a CNN policy for observations that are not images (as SB3 would, with an assert).

    With ``normalize_images=False`` (or the extractor's ``normalized_image=True``) any 3-d Box is an image, as in SB3.
    """
    if not issubclass(policy_class, ActorCriticCnnPolicy):
        return
    extractor_kwargs = policy_kwargs.get("features_extractor_kwargs") or {}
    normalized = not policy_kwargs.get("normalize_images", True) or bool(extractor_kwargs.get("normalized_image"))
    if not is_image_space(observation_space, check_channels=False, normalized_image=normalized):
        shape = getattr(observation_space, "shape", None)
        raise InvalidPolicyError(
            f"CnnPolicy needs image observations (a uint8 Box shaped [H, W, C] or [C, H, W]), not "
            f"{type(observation_space).__name__} of shape {shape}; use MlpPolicy (MultiInputPolicy for dicts)"
        )


#: The policy's arguments the algorithm passes itself, so never ``policy_kwargs``.
ALGORITHM_POLICY_ARGUMENTS = ("observation_space", "action_space", "lr_schedule", "use_sde")


def check_policy_kwargs(policy_class: type, policy_kwargs: Mapping[str, Any]) -> None:
    """Refuse, in one line, a ``policy_kwargs`` key ``policy_class`` does not take (naming those it takes) and a
    ``net_arch`` that is not layer sizes ≥ 1; before the policy is built (the config reader calls it too)."""
    check_keywords("policy_kwargs key", policy_class, policy_kwargs, reserved=ALGORITHM_POLICY_ARGUMENTS)
    if "net_arch" in policy_kwargs:
        check_net_arch("net_arch", policy_kwargs["net_arch"])


def estimator_json(estimator: Estimator) -> dict[str, Any] | Estimator:
    """``{"name", "kwargs"}`` for a registered estimator with JSON arguments; else the instance (pickled)."""
    registry = get_host().estimators
    kwargs = estimator.params()
    try:
        json.dumps(kwargs)
    except (TypeError, ValueError):
        return estimator
    if estimator.name in registry and registry.get(estimator.name) is type(estimator):
        return {"name": estimator.name, "kwargs": kwargs}
    return estimator


@functools.cache
def constructor_parameters(cls: type) -> tuple[str, ...]:
    """The keyword arguments ``cls(...)`` names (its ``__init__``'s parameters but ``self``), in order."""
    return tuple(p for p in inspect.signature(cls.__init__).parameters if p != "self")


#: A setting the algorithm does not have (the objective keeps its own default).
_UNSET: Any = object()


def _same_settings(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    """Whether an objective's settings are unchanged; ``==``, which is ``is`` first, and False where a value
    compares elementwise (an array setting replaced by an equal one builds the objective again)."""
    try:
        return bool(a == b)
    except (ValueError, TypeError, RuntimeError):
        return False


def loss_metrics(terms: LossTerms, rollout: Rollout) -> dict[str, float]:
    """What an update logs (as ``train/<name>``): the loss terms and, with a critic, the explained variance."""
    metrics = {"entropy_loss": terms.entropy_loss.item(), "policy_loss": terms.policy_loss.item()}
    if terms.value_loss is not None and rollout.returns is not None:
        metrics["value_loss"] = terms.value_loss.item()
        metrics["explained_variance"] = explained_variance(rollout.flat(rollout.values), rollout.flat(rollout.returns))
    metrics.update({name: float(value) for name, value in terms.metrics.items()})
    return metrics


class PolicyGradientAlgorithm(Algorithm, BaseAlgorithm):
    """Shared base of pgplug's on-policy algorithms (an SB3 ``BaseAlgorithm``).

    :param policy: the policy model (``MlpPolicy``, ``CnnPolicy``, ``MultiInputPolicy`` or a class)
    :param env: the environment (a gymnasium id, an env or an SB3 ``VecEnv``)
    :param estimator: a registered estimator name or an :class:`~pgplug.contracts.estimator.Estimator`
    :param estimator_kwargs: keyword arguments of the named estimator (e.g. ``{"gae_lambda": 0.95}``)
    :param ent_coef: entropy coefficient in the loss, a finite number ≥ 0
    :param vf_coef: value-loss coefficient (used when the estimator trains a critic), a finite number ≥ 0
    :param max_grad_norm: gradient-norm clipping threshold, a finite number > 0 (None: no clipping)
    :param normalize_advantage: standardise Ψ in each update (True or False, nothing else)
    :param objective: the loss the update minimises: a registered objective name (default: the class's
        ``default_objective``, ``policy_gradient``) or an :class:`~pgplug.contracts.objective.Objective`
    :param objective_kwargs: arguments of the named objective besides the algorithm's own settings, which
        it receives under their names (``ent_coef``, ``vf_coef``, ``normalize_advantage``) at every update
    :param fast_paths: take pgplug's speed paths (True), run SB3's own code (False), or let the
        ``PGPLUG_FAST_PATHS`` environment variable decide (None, the default: on unless it says 0)
    :param allow_negative_ent_coef: accept a negative ``ent_coef``, which punishes exploration (refused
        otherwise, as it is almost always a sign error)
    :param precision: ``fp32``, or ``bf16`` to run the policy's body (a CNN's convolutions) under bfloat16 autocast
        in the rollout and the update, its heads, log-probs, entropy and losses in float32, the weights and the
        optimizer's state float32 (:class:`~pgplug.runtime.fast_runners.Bf16Runner`; a speed path, so training in
        bf16 needs the fast paths on). Saved with the model; ``predict`` runs float32 either way.

    Every setting is checked before anything is built, by the rules of :attr:`setting_rules`.
    """

    #: The rule of :mod:`pgplug.validation` each setting (constructor argument) must pass, by name. The constructor
    #: applies it before anything is built, and so does the config reader to configs and the command line, so
    #: all three refuse the same values with the same words. A subclass adds its own settings' rules to these.
    setting_rules: ClassVar[dict[str, Rule]] = {
        "learning_rate": check_learning_rate,
        "gamma": check_unit_interval,
        "ent_coef": check_finite,  # and ≥ 0 unless allow_negative_ent_coef: check_settings
        "allow_negative_ent_coef": check_bool,
        "vf_coef": check_non_negative,
        "max_grad_norm": check_max_grad_norm,
        "normalize_advantage": check_bool,
        "use_sde": check_bool,
        "seed": check_seed,
        "device": check_model_device,
        "precision": check_precision,
    }

    @classmethod
    def check_settings(cls, settings: Mapping[str, Any]) -> dict[str, Any]:
        """The settings among ``settings`` that have a rule in :attr:`setting_rules`, checked (and converted);
        a bad one is a one-line :class:`~pgplug.errors.PgplugError` naming it and what is valid."""
        checked = check_settings(cls.setting_rules, settings)
        if "ent_coef" in checked:
            check_ent_coef("ent_coef", settings["ent_coef"], checked.get("allow_negative_ent_coef", False))
        return checked

    #: ``learn``'s ``log_interval`` when not given: updates between two log dumps.
    default_log_interval: ClassVar[int] = 1

    def log_interval(self, given: int | None) -> int | None:
        """``learn``'s ``log_interval``: as given (None: no logs, as in SB3), else the class's default."""
        return self.default_log_interval if given is CLASS_DEFAULT else given

    #: True for algorithms that make exactly one gradient step per rollout, with the weights that
    #: collected it: their update may then differentiate the rollout's own forward passes
    #: (:mod:`pgplug.fast.rollout_graph`). Leave False when ``train`` steps more than once per rollout.
    reuse_rollout_graph: ClassVar[bool] = False
    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": ActorCriticPolicy,
        "CnnPolicy": ActorCriticCnnPolicy,
        "MultiInputPolicy": MultiInputActorCriticPolicy,
        # sb3-contrib's recurrent policies (pgplug.runtime.recurrent carries their states)
        "MlpLstmPolicy": RecurrentActorCriticPolicy,
        "CnnLstmPolicy": RecurrentActorCriticCnnPolicy,
        "MultiInputLstmPolicy": RecurrentMultiInputActorCriticPolicy,
    }
    policy: ActorCriticPolicy

    def __init__(
        self,
        policy: str | type[ActorCriticPolicy],
        env: GymEnv | str | None,
        learning_rate: float | Schedule,
        *,
        gamma: float = 0.99,
        ent_coef: float = 0.0,
        vf_coef: float = 0.5,
        max_grad_norm: float | None = 0.5,
        normalize_advantage: bool = False,
        estimator: str | Estimator | None = None,
        estimator_kwargs: dict[str, Any] | None = None,
        objective: str | Objective | None = None,
        objective_kwargs: dict[str, Any] | None = None,
        fast_paths: bool | None = None,
        allow_negative_ent_coef: bool = False,
        precision: str = "fp32",
        use_sde: bool = False,
        sde_sample_freq: int = -1,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        monitor_wrapper: bool = True,
        support_multi_env: bool = True,
    ) -> None:
        checked = self.check_settings(locals())  # before anything is built
        # BaseAlgorithm's, named: a subclass that is also SB3's OnPolicyAlgorithm (OnPolicyLearner) must not run
        # OnPolicyAlgorithm.__init__, which would build SB3's rollout buffer and policy its own way.
        BaseAlgorithm.__init__(
            self,
            policy=policy,
            env=env,
            learning_rate=checked["learning_rate"],
            policy_kwargs=policy_kwargs,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            verbose=verbose,
            device=device,
            support_multi_env=support_multi_env,
            monitor_wrapper=monitor_wrapper,
            seed=checked["seed"],
            use_sde=False,  # checked against the action space below, in one line (SB3 raises its own error)
            sde_sample_freq=sde_sample_freq,
            supported_action_spaces=SUPPORTED_ACTION_SPACES,
        )
        if use_sde and self.env is not None and not isinstance(self.action_space, spaces.Box):
            raise PgplugError(
                f"use_sde=True needs continuous actions (a Box action space), but the env's are {self.action_space}: "
                "use_sde must be false"
            )
        self.use_sde = checked["use_sde"]
        self.gamma = checked["gamma"]
        self.ent_coef = checked["ent_coef"]
        self.allow_negative_ent_coef = checked["allow_negative_ent_coef"]
        self.vf_coef = checked["vf_coef"]
        self.max_grad_norm = checked["max_grad_norm"]
        self.normalize_advantage = checked["normalize_advantage"]
        # a bad value (or PGPLUG_FAST_PATHS), or bf16 with the speed paths off, is refused before anything runs
        self.precision = check_precision_runs(checked["precision"], fast=resolve_fast_paths(fast_paths))
        self.fast_paths = fast_paths
        self.objective = objective or self.default_objective
        self.objective_kwargs = dict(objective_kwargs or {})
        self.estimator = self.resolve_estimator(estimator or self.default_estimator, estimator_kwargs)
        check_fits(type(self), self.objective_for_update(), self.estimator)

    # -- estimator ----------------------------------------------------------------------------

    @classmethod
    def compatible_estimators(cls) -> list[str]:
        """Names of the registered estimators this algorithm can use."""
        return compatible_estimators(cls)

    @classmethod
    def compatible_objectives(cls) -> list[str]:
        """Names of the registered objectives this algorithm can minimise."""
        return compatible_objectives(cls)

    @classmethod
    def resolve_estimator(cls, spec: str | Estimator, kwargs: dict[str, Any] | None = None) -> Estimator:
        """The estimator ``spec`` names, refused in one line if it does not fit this algorithm."""
        estimator = make_estimator(spec, kwargs)
        check_fits(cls, make_objective(cls.default_objective), estimator)
        return estimator

    def prefer_rms_prop(self, alpha: float, eps: float) -> None:
        """Train with RMSprop (SB3's A2C and the A3C paper) unless ``policy_kwargs`` name an optimizer.

        :param alpha: the running average's decay
        :param eps: the denominator's epsilon
        """
        if "optimizer_class" not in self.policy_kwargs:
            self.policy_kwargs["optimizer_class"] = th.optim.RMSprop
            self.policy_kwargs["optimizer_kwargs"] = dict(alpha=alpha, eps=eps, weight_decay=0)

    # -- objective ----------------------------------------------------------------------------

    def objective_for_update(self) -> Objective:
        """The objective of the next update, built from the algorithm's current settings.

        SB3 reads ``ent_coef``, ``vf_coef`` and ``normalize_advantage`` at every update (a callback may
        change them): the objective receives every setting of the algorithm that its constructor names,
        plus ``objective_kwargs``, and is built again when one of them changed. An :class:`Objective`
        instance given as ``objective`` is used as it is.
        """
        spec = self.objective
        if isinstance(spec, Objective):
            return spec
        attributes, host = self.__dict__, get_host()
        cached = attributes.get("_objective_cache")
        if cached is not None and (cached[0] is not host or cached[1] != spec):
            cached = None
        cls = host.objectives.get(spec) if cached is None else cached[2]
        names = constructor_parameters(cls)
        settings = (tuple(map(attributes.get, names, repeat(_UNSET))), tuple(self.objective_kwargs.items()))
        if cached is not None and _same_settings(settings, cached[3]):
            return cached[4]
        own = {name: value for name, value in zip(names, settings[0]) if value is not _UNSET}
        clash = sorted(own.keys() & self.objective_kwargs.keys())
        if clash:
            raise PgplugError(
                f"objective_kwargs {clash} are {self.name}'s own settings: pass them to {type(self).__name__}(...)"
            )
        objective = make_objective(spec, {**own, **self.objective_kwargs})
        self._objective_cache = (host, spec, cls, settings, objective)
        return objective

    # -- model --------------------------------------------------------------------------------

    def _setup_model(self) -> None:
        if isinstance(self.estimator, dict):  # written as JSON by save(); load() put it back as is
            self.estimator = self.resolve_estimator(self.estimator["name"], self.estimator.get("kwargs"))
        self._setup_lr_schedule()
        self.set_random_seed(self.seed)
        check_policy_kwargs(self.policy_class, self.policy_kwargs)
        check_policy_fits(self.policy_class, self.observation_space, self.policy_kwargs)
        try:
            self.policy = self.policy_class(  # type: ignore[assignment]
                self.observation_space, self.action_space, self.lr_schedule, use_sde=self.use_sde, **self.policy_kwargs
            )
        except AssertionError as exc:  # SB3 checks spaces with asserts several calls deep
            raise InvalidPolicyError(f"cannot build {self.policy_class.__name__}: {one_line(exc)}") from exc
        except ValueError as exc:
            raise PgplugError(f"cannot build {self.policy_class.__name__}: {one_line(exc)}") from exc
        self.policy = self.policy.to(self.device)

    def _excluded_save_params(self) -> list[str]:
        # fast_paths is this process's choice (PGPLUG_FAST_PATHS), not the model's.
        own = ["_runner", "_runner_setting", "_objective_cache", "_parameter_cache", "fast_paths"]
        return [*super()._excluded_save_params(), *own]

    @property
    def runner(self) -> PolicyRunner:
        """What runs the policy (rollouts, updates, ``predict``): SB3's own code, or pgplug's fast paths.

        Made on first use, and again when the policy, ``fast_paths`` or ``precision`` changes (``PGPLUG_FAST_PATHS``
        is read then). With the speed paths off the runner is SB3's float32 code whatever ``precision`` says:
        ``learn`` refuses to train in bf16 then, and ``predict`` is float32 anyway, so a bf16 model still predicts.
        """
        setting = (self.__dict__.get("fast_paths"), self.__dict__.get("precision", "fp32"))
        runner = self.__dict__.get("_runner")
        if runner is None or runner.policy is not self.policy or self.__dict__.get("_runner_setting") != setting:
            fast = resolve_fast_paths(setting[0])
            precision = setting[1] if fast else "fp32"
            runner = runner_for(self.policy, fast=fast, keep_graph=self.reuse_rollout_graph, precision=precision)
            self._runner, self._runner_setting = runner, setting
        return runner

    def save(self, path: Any, exclude: Any = None, include: Any = None) -> None:
        """SB3's ``save``, with the algorithm's name, a registered estimator and the random generators' states
        (:mod:`pgplug.runtime.random_state`, which :meth:`load` restores) written as plain JSON.

        JSON rather than a pickle keeps the zip loadable where pgplug is not installed
        (``stable_baselines3.A2C.load``) and lets ``pgplug.load`` name the algorithm without unpickling.
        A path is written atomically (:func:`pgplug.files.atomic.atomic_write`): a failed save leaves the
        file that was there, never a truncated zip under its name.
        """
        self.pgplug_algorithm = self.name
        replacements = {**self._json_attributes(), random_state.KEY: random_state.capture()}
        originals = {key: self.__dict__[key] for key in replacements if key in self.__dict__}
        self.__dict__.update(replacements)
        try:
            if isinstance(path, (str, os.PathLike)):
                with atomic_write(zip_path(path)) as file:
                    super().save(file, exclude, include)
            else:
                super().save(path, exclude, include)
        finally:
            for key in replacements.keys() - originals.keys():
                del self.__dict__[key]
            self.__dict__.update(originals)

    @classmethod
    def load(  # type: ignore[override]
        cls: type[SelfAlgorithm],
        path: Any,
        env: GymEnv | None = None,
        device: th.device | str = "auto",
        custom_objects: dict[str, Any] | None = None,
        print_system_info: bool = False,
        force_reset: bool = True,
        trust: bool = False,
        **kwargs: Any,
    ) -> SelfAlgorithm:
        """SB3's ``load``, reading the zip's pickled entries through pgplug's allowlist
        (:func:`pgplug.files.model_zip.rebuild_objects`): opening a file runs no code from it. Then python's,
        numpy's and torch's generators as the model left them when it was saved.

        SB3 seeds the generators afresh (with ``seed``, which also seeds the env and the action space, as here);
        restoring them makes training on from the file draw the same actions as training on in memory would.
        Files without the states (SB3's, older pgplug's) keep SB3's seeding.

        :param trust: unpickle the entries as SB3 does, running what they name: only for files you trust
        """
        info = read_zip(path)
        objects = rebuild_objects(info, env, custom_objects, trust)
        model = super().load(info.source, env, device, objects, print_system_info, force_reset, **kwargs)
        state = model.__dict__.pop(random_state.KEY, None)
        if state is not None:
            random_state.restore(state, info.path)
        return model  # type: ignore[return-value]

    def _json_attributes(self) -> dict[str, Any]:
        """Attributes to write as plain JSON instead of pickles; ``_setup_model`` turns them back on load."""
        return {"estimator": estimator_json(self.estimator)}

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        return ["policy", "policy.optimizer"], []

    def _parameters(self) -> list[th.nn.Parameter]:
        """The policy's parameters, listed once per policy object (parameters() walks every submodule)."""
        cached = self.__dict__.get("_parameter_cache")
        if cached is None or cached[0] is not self.policy:
            cached = self._parameter_cache = (self.policy, list(self.policy.parameters()))
        return cached[1]

    # -- predict ------------------------------------------------------------------------------

    def predict(
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """SB3's ``predict``; with the fast paths, ~40% faster for a small policy, the same actions and random draws
        (:mod:`pgplug.fast.predict`)."""
        return self.runner.predict(observation, state, episode_start, deterministic)

    # -- learn --------------------------------------------------------------------------------

    def _setup_learn(self, total_timesteps: int, *args: Any, **kwargs: Any) -> tuple[int, Any]:
        """SB3's ``_setup_learn``, which every ``learn`` calls first, with ``total_timesteps`` checked
        (:func:`~pgplug.validation.check_timesteps`): a string, a fraction or an unbounded budget fails in one line."""
        # bf16 with the speed paths off (PGPLUG_FAST_PATHS=0 since the model was built or loaded) is refused here
        check_precision_runs(self.precision, fast=resolve_fast_paths(self.__dict__.get("fast_paths")))
        return super()._setup_learn(check_timesteps("total_timesteps", total_timesteps), *args, **kwargs)

    # SB3's on-policy log format (time/fps, rollout/ep_rew_mean, ...), reused as is.
    dump_logs = OnPolicyAlgorithm.dump_logs
