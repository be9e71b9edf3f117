"""A2C: synchronous advantage actor-critic (Mnih et al. 2016, https://arxiv.org/abs/1602.01783).

``n_steps`` per env per update over any SB3 ``VecEnv``, one gradient step per rollout: a drop-in for
``stable_baselines3.A2C``. Every constructor argument of SB3's A2C is accepted in SB3's order and with
SB3's meaning (``gae_lambda`` selects the ``gae`` estimator with that λ; 1, SB3's default, is the n-step
forward view ``nstep(n=None)``), and with the same seed and settings it matches SB3's A2C update for
update. pgplug's own arguments (``estimator``, ``objective``, ``fast_paths``, ...) come after SB3's.
"""

from __future__ import annotations

from typing import Any

import torch as th
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.type_aliases import GymEnv, Schedule

from pgplug.contracts.estimator import Estimator
from pgplug.contracts.objective import Objective
from pgplug.contracts.rollout import Rollout
from pgplug.errors import PgplugError
from pgplug.plugin.hookspecs import hookimpl
from pgplug.plugins.search_spaces import A2C_SPACE
from pgplug.runtime.on_policy import OnPolicyLearner
from pgplug.validation import check_bool, check_non_negative, check_positive_int, check_unit_interval


def estimator_of_gae_lambda(
    gae_lambda: float, estimator: str | Estimator | None, estimator_kwargs: dict[str, Any] | None
) -> tuple[str | Estimator, dict[str, Any] | None]:
    """The estimator SB3's ``gae_lambda`` asks for, reconciled with pgplug's ``estimator`` arguments.

    Without an estimator: ``nstep(n=None)`` for λ = 1 (what SB3 computes then), ``gae(λ)`` otherwise. With one,
    ``gae_lambda`` other than 1 must agree with it.
    """
    gae_lambda = check_unit_interval("gae_lambda", gae_lambda)
    if estimator is None:
        if gae_lambda == 1.0:
            return "nstep", estimator_kwargs
        return "gae", {"gae_lambda": gae_lambda, **(estimator_kwargs or {})}
    if gae_lambda == 1.0:  # SB3's default: nothing asked
        return estimator, estimator_kwargs
    kwargs = dict(estimator_kwargs or {})
    if estimator == "gae" and kwargs.setdefault("gae_lambda", gae_lambda) == gae_lambda:
        return estimator, kwargs
    asked = repr(estimator if isinstance(estimator, str) else estimator.name)
    if estimator == "gae":
        asked += f" with gae_lambda={kwargs['gae_lambda']}"
    raise PgplugError(
        f"gae_lambda={gae_lambda} selects the 'gae' estimator with that lambda, but estimator {asked} was asked for: "
        "give one of them"
    )


class A2C(OnPolicyLearner):
    """Synchronous advantage actor-critic: n-step rollouts from a vec env, one update each (SB3's A2C).

    :param policy: the policy model (``MlpPolicy``, ``CnnPolicy``, ``MultiInputPolicy``, the LSTM ones, or a class)
    :param env: the environment (a gymnasium id, an env or an SB3 ``VecEnv``)
    :param learning_rate: learning rate, or a schedule of the remaining progress (1 → 0)
    :param n_steps: steps per env per update
    :param gamma: discount factor
    :param gae_lambda: SB3's GAE λ: 1 (the default) is the n-step forward view (estimator ``nstep``), any
        other value selects estimator ``gae`` with it
    :param ent_coef: entropy coefficient
    :param vf_coef: value-loss coefficient
    :param max_grad_norm: gradient-norm clipping threshold (None: no clipping)
    :param rms_prop_eps: RMSprop epsilon (SB3's default; the paper's shared RMSprop used 0.1)
    :param use_rms_prop: RMSprop (α=0.99, as SB3) rather than Adam
    :param use_sde: generalized state-dependent exploration (continuous actions)
    :param sde_sample_freq: resample gSDE's noise every so many steps (-1: once per rollout)
    :param rollout_buffer_class: as in SB3: None, ``RolloutBuffer`` or ``DictRolloutBuffer``
    :param rollout_buffer_kwargs: keyword arguments of the buffer class
    :param normalize_advantage: standardise Ψ in each update
    :param stats_window_size: episodes averaged in the logged episode statistics
    :param tensorboard_log: TensorBoard log folder (None: no TensorBoard)
    :param policy_kwargs: keyword arguments of the policy
    :param verbose: 0 quiet, 1 training logs, 2 debug
    :param seed: random seed
    :param device: torch device (``auto``, ``cpu``, ``cuda``)
    :param estimator: pgplug's estimator of Ψ: any that does not need complete episodes (default: from
        ``gae_lambda``)
    :param estimator_kwargs: the estimator's arguments, e.g. ``{"n": 3}``
    :param objective: the objective the update minimises (default ``policy_gradient``)
    :param objective_kwargs: the objective's arguments besides this algorithm's own settings
    :param fast_paths: pgplug's speed paths (True), SB3's own code (False), or ``PGPLUG_FAST_PATHS`` (None)
    :param allow_negative_ent_coef: accept a negative ``ent_coef`` (which punishes exploration; refused otherwise)
    :param precision: ``fp32``, or ``bf16`` for the policy's body under bfloat16 autocast (a speed path for CPUs
        with bf16 matrix units; see :class:`~pgplug.runtime.algorithm.PolicyGradientAlgorithm`)
    """

    name = "a2c"
    setting_rules = {
        **OnPolicyLearner.setting_rules,
        "n_steps": check_positive_int,
        "gae_lambda": check_unit_interval,
        "rms_prop_eps": check_non_negative,
        "use_rms_prop": check_bool,
    }
    default_estimator = "nstep"
    accepts_episode_estimators = False
    search_space = A2C_SPACE
    default_log_interval = 100
    sb3_counterpart = "sb3_a2c"
    reuse_rollout_graph = True  # one update per rollout, on the weights that collected it

    def __init__(
        self,
        policy: str | type[ActorCriticPolicy],
        env: GymEnv | str | None,
        learning_rate: float | Schedule = 7e-4,
        n_steps: int = 5,
        gamma: float = 0.99,
        gae_lambda: float = 1.0,
        ent_coef: float = 0.0,
        vf_coef: float = 0.5,
        max_grad_norm: float | None = 0.5,
        rms_prop_eps: float = 1e-5,
        use_rms_prop: bool = True,
        use_sde: bool = False,
        sde_sample_freq: int = -1,
        rollout_buffer_class: type[RolloutBuffer] | None = None,
        rollout_buffer_kwargs: dict[str, Any] | None = None,
        normalize_advantage: bool = False,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        *,
        estimator: str | Estimator | None = None,
        estimator_kwargs: dict[str, Any] | None = None,
        objective: str | Objective | None = None,
        objective_kwargs: dict[str, Any] | None = None,
        fast_paths: bool | None = None,
        allow_negative_ent_coef: bool = False,
        precision: str = "fp32",
        _init_setup_model: bool = True,
    ) -> None:
        checked = self.check_settings(locals())  # before anything is built
        chosen = estimator is not None or estimator_kwargs is not None
        estimator_spec, estimator_kwargs = estimator_of_gae_lambda(gae_lambda, estimator, estimator_kwargs)
        super().__init__(
            policy,
            env,
            learning_rate,
            gamma=gamma,
            ent_coef=ent_coef,
            vf_coef=vf_coef,
            max_grad_norm=max_grad_norm,
            normalize_advantage=normalize_advantage,
            estimator=estimator_spec,
            estimator_kwargs=estimator_kwargs,
            objective=objective,
            objective_kwargs=objective_kwargs,
            fast_paths=fast_paths,
            allow_negative_ent_coef=allow_negative_ent_coef,
            precision=precision,
            use_sde=use_sde,
            sde_sample_freq=sde_sample_freq,
            rollout_buffer_class=rollout_buffer_class,
            rollout_buffer_kwargs=rollout_buffer_kwargs,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            seed=seed,
            device=device,
        )
        self.n_steps = checked["n_steps"]
        # The estimator follows gae_lambda (SB3's meaning) unless one was asked for. Saved, so that
        # A2C.load(path, gae_lambda=0.9) gets GAE(0.9); SB3.load's own construction (no estimator, no setup)
        # leaves it unset, for _setup_model to tell SB3's zips from pgplug's older ones.
        if chosen or _init_setup_model:
            self._estimator_follows_gae_lambda = not chosen
        if checked["use_rms_prop"]:
            self.prefer_rms_prop(alpha=0.99, eps=checked["rms_prop_eps"])
        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        follows = self.__dict__.get("_estimator_follows_gae_lambda")
        if follows is None:  # loaded from a file without it: SB3's (no estimator, a gae_lambda) or an older pgplug's
            follows = self._estimator_follows_gae_lambda = not isinstance(self.estimator, dict)
        if follows and self.gae_lambda is not None:
            self.estimator = self.resolve_estimator(*estimator_of_gae_lambda(self.gae_lambda, None, None))
        super()._setup_model()

    def collect_rollout(self, callback: BaseCallback, n_steps: int) -> Rollout | None:
        return self._collect(callback, n_steps)


@hookimpl
def pgplug_register_algorithms(register) -> None:
    register(A2C)
