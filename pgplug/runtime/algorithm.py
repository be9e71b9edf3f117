"""The base every pgplug algorithm shares: estimator plumbing, the learn loop and the gradient step.

An algorithm plugin subclasses :class:`PolicyGradientAlgorithm`, sets ``name`` and says how it
collects a rollout; the estimator, the loss and the SB3 machinery (policies, vec envs, logger,
callbacks, save/load) are shared here.
"""

from __future__ import annotations

import json
from abc import abstractmethod
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
from stable_baselines3.common.callbacks import BaseCallback, ConvertCallback
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.policies import (
    ActorCriticCnnPolicy,
    ActorCriticPolicy,
    BasePolicy,
    MultiInputActorCriticPolicy,
)
from stable_baselines3.common.preprocessing import is_image_space
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule

from pgplug.contracts.algorithm import Algorithm
from pgplug.contracts.estimator import Estimator
from pgplug.contracts.registries import call_hook, get_host, make_estimator
from pgplug.contracts.rollout import Rollout
from pgplug.errors import DivergedError, IncompatibleEstimatorError, PgplugError, one_line
from pgplug.fast.optim import optimizer_step, prefer_foreach
from pgplug.fast.torch_internals import set_training_mode, unchecked_distributions
from pgplug.runtime.collector import RolloutCollector
from pgplug.runtime.loss import LossTerms, policy_gradient_loss
from pgplug.runtime.recurrent import collector_for
from pgplug.validation import check_gamma, check_learning_rate

SelfAlgorithm = TypeVar("SelfAlgorithm", bound="PolicyGradientAlgorithm")

SUPPORTED_ACTION_SPACES = (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)


def explained_variance(values: th.Tensor, returns: th.Tensor) -> float:
    """1 − Var[returns − values] / Var[returns], as SB3 logs it (NaN when the returns are constant)."""
    var_returns = th.var(returns, correction=0)
    if var_returns == 0:
        return float("nan")
    return float(1.0 - th.var(returns - values, correction=0) / var_returns)


def clip_grad_norm(params: list[th.nn.Parameter], max_norm: float) -> None:
    """``th.nn.utils.clip_grad_norm_(params, max_norm)``, op for op, so the result is bitwise the same.

    When every gradient shares one device and dtype (the usual case) it skips torch's per-call
    regrouping and wrappers, which cost more than the clipping itself for a small policy.
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    if len({(g.device, g.dtype) for g in grads}) > 1 or grads[0].device.type not in ("cpu", "cuda"):
        th.nn.utils.clip_grad_norm_(params, max_norm)
        return
    with th.no_grad():
        total_norm = th.linalg.vector_norm(th.stack(th._foreach_norm(grads, 2.0)), 2.0)
        th._foreach_mul_(grads, th.clamp(max_norm / (total_norm + 1e-6), max=1.0))


def compute_gradients(
    policy: ActorCriticPolicy,
    params: list[th.nn.Parameter],
    rollout: Rollout,
    *,
    ent_coef: float,
    vf_coef: float,
    normalize_advantage: bool,
    max_grad_norm: float | None,
) -> LossTerms:
    """Everything of a gradient step before the optimizer: the loss, fresh gradients in ``params``, clipping.

    Shared by every learner (``PolicyGradientAlgorithm.train`` and each A3C worker), so they step
    on the same gradients. A loss that is not finite stops training with one line: the rollout's
    sampler skips ``torch.multinomial``'s checks, so this is where a diverged policy is caught.
    """
    set_training_mode(policy, True)
    with unchecked_distributions():
        terms = policy_gradient_loss(policy, rollout, ent_coef, vf_coef, normalize_advantage)
    if not th.isfinite(terms.loss):
        raise DivergedError(
            f"the loss is {terms.loss.item()}: training diverged (lower learning_rate or max_grad_norm, "
            "or check the observations and rewards for NaN/inf)"
        )
    # What optimizer.zero_grad() does (set_to_none), minus its per-call profiler and dynamo wrappers.
    for param in params:
        param.grad = None
    terms.loss.backward()
    if max_grad_norm is not None:
        clip_grad_norm(params, max_grad_norm)
    return terms


def _mode_already_set(mode: bool) -> None:
    """Stands in for ``policy.set_training_mode`` inside ``predict`` once the flags are set."""


def check_policy_fits(policy_class: type, observation_space: spaces.Space, policy_kwargs: dict[str, Any]) -> None:
    """Refuse, in one line, a CNN policy for observations that are not images."""
    if not issubclass(policy_class, ActorCriticCnnPolicy):
        return
    normalized = not policy_kwargs.get("normalize_images", True)
    if not is_image_space(observation_space, check_channels=False, normalized_image=normalized):
        shape = getattr(observation_space, "shape", None)
        raise PgplugError(
            f"CnnPolicy needs image observations (a uint8 Box shaped [H, W, C] or [C, H, W]), not "
            f"{type(observation_space).__name__} of shape {shape}; use MlpPolicy (MultiInputPolicy for dicts)"
        )


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


class PolicyGradientAlgorithm(Algorithm, BaseAlgorithm):
    """Shared base of pgplug's on-policy algorithms (an SB3 ``BaseAlgorithm``).

    :param policy: the policy model (``MlpPolicy``, ``CnnPolicy``, ``MultiInputPolicy`` or a class)
    :param env: the environment (a gymnasium id, an env or an SB3 ``VecEnv``)
    :param estimator: a registered estimator name or an :class:`~pgplug.contracts.estimator.Estimator`
    :param estimator_kwargs: keyword arguments of the named estimator (e.g. ``{"gae_lambda": 0.95}``)
    :param ent_coef: entropy coefficient in the loss
    :param vf_coef: value-loss coefficient (used when the estimator trains a critic)
    :param max_grad_norm: gradient-norm clipping threshold (None: no clipping)
    :param normalize_advantage: standardise Ψ in each update
    """

    default_log_interval: ClassVar[int] = 1
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
        super().__init__(
            policy=policy,
            env=env,
            learning_rate=check_learning_rate(learning_rate),
            policy_kwargs=policy_kwargs,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            verbose=verbose,
            device=device,
            support_multi_env=support_multi_env,
            monitor_wrapper=monitor_wrapper,
            seed=seed,
            use_sde=use_sde,
            sde_sample_freq=sde_sample_freq,
            supported_action_spaces=SUPPORTED_ACTION_SPACES,
        )
        self.gamma = check_gamma(gamma)
        self.ent_coef = float(ent_coef)
        self.vf_coef = float(vf_coef)
        self.max_grad_norm = max_grad_norm
        self.normalize_advantage = normalize_advantage
        self.estimator = self.resolve_estimator(estimator or self.default_estimator, estimator_kwargs)
        self._collector: RolloutCollector | None = None

    # -- estimator ----------------------------------------------------------------------------

    @classmethod
    def compatible_estimators(cls) -> list[str]:
        """Names of the registered estimators this algorithm can use."""
        return [
            e.name for e in get_host().estimators if cls.accepts_episode_estimators or not e.cls.needs_complete_episodes
        ]

    @classmethod
    def resolve_estimator(cls, spec: str | Estimator, kwargs: dict[str, Any] | None = None) -> Estimator:
        estimator = make_estimator(spec, kwargs)
        if estimator.needs_complete_episodes and not cls.accepts_episode_estimators:
            raise IncompatibleEstimatorError(
                f"estimator {estimator.name!r} needs complete episodes, which {cls.name} cuts into "
                f"rollouts; estimators that fit {cls.name}: {', '.join(cls.compatible_estimators())}"
            )
        return estimator

    @classmethod
    def estimator_for_sb3_data(cls, data: dict[str, Any]) -> Estimator:
        """The estimator that computes what the SB3 counterpart computed, from its saved ``data``."""
        raise NotImplementedError(f"{cls.name} has no SB3 counterpart")

    # -- model --------------------------------------------------------------------------------

    def _setup_model(self) -> None:
        if isinstance(self.estimator, dict):  # written as JSON by save(); load() put it back as is
            self.estimator = self.resolve_estimator(self.estimator["name"], self.estimator.get("kwargs"))
        self._setup_lr_schedule()
        self.set_random_seed(self.seed)
        check_policy_fits(self.policy_class, self.observation_space, self.policy_kwargs)
        try:
            self.policy = self.policy_class(  # type: ignore[assignment]
                self.observation_space, self.action_space, self.lr_schedule, use_sde=self.use_sde, **self.policy_kwargs
            )
        except (AssertionError, ValueError) as exc:  # SB3 checks spaces with asserts several calls deep
            raise PgplugError(f"cannot build {self.policy_class.__name__}: {one_line(exc)}") from exc
        self.policy = self.policy.to(self.device)

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "_collector", "_parameter_cache"]

    def save(self, path: Any, exclude: Any = None, include: Any = None) -> None:
        """SB3's ``save``, with the algorithm's name and a registered estimator written as plain JSON.

        JSON rather than a pickle keeps the zip loadable where pgplug is not installed
        (``stable_baselines3.A2C.load``) and lets ``pgplug.load`` name the algorithm without unpickling.
        """
        self.pgplug_algorithm = self.name
        replacements = self._json_attributes()
        originals = {key: getattr(self, key) for key in replacements}
        self.__dict__.update(replacements)
        try:
            super().save(path, exclude, include)
        finally:
            self.__dict__.update(originals)

    def _json_attributes(self) -> dict[str, Any]:
        """Attributes to write as plain JSON instead of pickles; ``_setup_model`` turns them back on load."""
        return {"estimator": estimator_json(self.estimator)}

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        return ["policy", "policy.optimizer"], []

    # -- rollouts -----------------------------------------------------------------------------

    def _step_hook(self, callback: BaseCallback):
        """The per-step work SB3 does in ``collect_rollouts`` before the episode stats: count, callbacks."""
        n_envs = self.n_envs

        def on_step(step_locals: dict[str, Any]) -> bool:
            self.num_timesteps += n_envs
            callback.update_locals(step_locals)
            return callback.on_step()

        return on_step

    def _collect(self, callback: BaseCallback, n_steps: int | None, **kwargs: Any) -> Rollout | None:
        """Collect a rollout with the shared lean loop, keeping SB3's ``_last_obs`` bookkeeping."""
        assert self.env is not None
        if self._collector is None or self._collector.env is not self.env or self._collector.policy is not self.policy:
            self._collector = collector_for(
                self.policy,
                self.env,
                self.gamma,
                bootstrap_truncation=self.estimator.needs_critic,
                sde_sample_freq=self.sde_sample_freq,
                keep_graph=self.reuse_rollout_graph,
            )
        collector = self._collector
        collector.last_obs = self._last_obs  # type: ignore[assignment]
        collector.last_episode_starts = self._last_episode_starts  # type: ignore[assignment]
        # learn() without callbacks wraps None in a ConvertCallback of its own that calls nothing and that
        # nothing else holds: its calls (several per step) are skipped, as no one could see them.
        silent = type(callback) is ConvertCallback and callback.callback is None
        if not silent:
            callback.on_rollout_start()
        try:
            rollout = collector.collect(
                n_steps,
                on_step=None if silent else self._step_hook(callback),
                on_episodes_end=self._update_info_buffer,
                **kwargs,
            )
        finally:  # also when interrupted: the steps taken are counted and the env's state is kept
            if silent:  # (on_step counts them otherwise)
                self.num_timesteps += collector.env_steps_taken * self.n_envs
            self._last_obs = collector.last_obs  # type: ignore[assignment]
            self._last_episode_starts = collector.last_episode_starts
        if rollout is None:
            return None
        if not silent:
            callback.update_locals({"rollout": rollout})
            callback.on_rollout_end()
        return rollout

    @abstractmethod
    def collect_rollout(self, callback: BaseCallback) -> Rollout | None:
        """Collect fresh on-policy data; None when a callback asked to stop."""

    def estimate(self, rollout: Rollout) -> Rollout:
        """Fill ``rollout.advantages`` and ``rollout.returns`` with the estimator."""
        return rollout.fill_estimate(self.estimator, self.gamma)

    # -- update -------------------------------------------------------------------------------

    def train(self, rollout: Rollout) -> dict[str, float]:
        """One gradient step on the whole rollout: SB3's A2C step, with less per-call overhead."""
        policy, optimizer = self.policy, self.policy.optimizer
        self._update_learning_rate(optimizer)
        prefer_foreach(optimizer)
        terms = compute_gradients(
            policy,
            self._parameters(),
            rollout,
            ent_coef=self.ent_coef,
            vf_coef=self.vf_coef,
            normalize_advantage=self.normalize_advantage,
            max_grad_norm=self.max_grad_norm,
        )
        optimizer_step(optimizer)
        self._n_updates += 1
        metrics = {
            "train/entropy_loss": terms.entropy_loss.item(),
            "train/policy_loss": terms.policy_loss.item(),
        }
        if terms.value_loss is not None and rollout.returns is not None:
            metrics["train/value_loss"] = terms.value_loss.item()
            metrics["train/explained_variance"] = explained_variance(
                rollout.flat(rollout.values), rollout.flat(rollout.returns)
            )
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        for key, value in metrics.items():
            self.logger.record(key, value)
        if hasattr(policy, "log_std"):
            self.logger.record("train/std", th.exp(policy.log_std).mean().item())
        call_hook("pgplug_after_update", algorithm=self, metrics=metrics)
        return metrics

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
        """SB3's ``predict``, ~40% faster for a small policy: the same actions and the same random draws.

        ``BasePolicy.predict`` runs as it is, with two per-call costs removed, which dominate
        evaluations (``EvalCallback``, ``evaluate_policy``) of a small policy: torch.distributions'
        argument checks, and the recursive ``nn.Module.train(False)`` (the flags are set directly
        when no module overrides ``train``). Recurrent policies keep their own ``predict``.
        """
        policy = self.policy
        with unchecked_distributions():
            if (
                type(policy).predict is not BasePolicy.predict
                or type(policy).set_training_mode is not BasePolicy.set_training_mode
                or "set_training_mode" in policy.__dict__  # the user's own, or another thread's stand-in
            ):
                return policy.predict(observation, state, episode_start, deterministic)
            set_training_mode(policy, False)
            policy.__dict__["set_training_mode"] = _mode_already_set  # predict's own switch: already done
            try:
                return policy.predict(observation, state, episode_start, deterministic)
            finally:
                policy.__dict__.pop("set_training_mode", None)

    # -- learn --------------------------------------------------------------------------------

    def learn(
        self: SelfAlgorithm,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int | None = None,
        tb_log_name: str | None = None,
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfAlgorithm:
        """Train for ``total_timesteps`` env steps; the same signature and behaviour as SB3's ``learn``."""
        if log_interval is None:
            log_interval = self.default_log_interval
        iteration = 0
        total_timesteps, callback = self._setup_learn(
            total_timesteps, callback, reset_num_timesteps, tb_log_name or self.name.upper(), progress_bar
        )
        callback.on_training_start(locals(), globals())
        while self.num_timesteps < total_timesteps:
            rollout = self.collect_rollout(callback)
            if rollout is None:
                break
            iteration += 1
            self._update_current_progress_remaining(self.num_timesteps, total_timesteps)
            if log_interval and iteration % log_interval == 0:
                self.dump_logs(iteration)
            self.estimate(rollout)
            call_hook("pgplug_after_rollout", algorithm=self, rollout=rollout)
            self.train(rollout)
        callback.on_training_end()
        return self

    # SB3's on-policy log format (time/fps, rollout/ep_rew_mean, ...), reused as is.
    dump_logs = OnPolicyAlgorithm.dump_logs
