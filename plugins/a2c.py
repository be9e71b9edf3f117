"""A2C: synchronous advantage actor-critic (Mnih et al. 2016, https://arxiv.org/abs/1602.01783).

``n_steps`` per env per update over any SB3 ``VecEnv``, one gradient step per rollout. With the
default estimator ``nstep(n=None)`` (≡ ``gae(gae_lambda=1)``) it matches ``stable_baselines3.A2C``
update for update.
"""

from __future__ import annotations

from typing import Any

import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.type_aliases import GymEnv, Schedule

from pgplug.contracts.estimator import Estimator
from pgplug.contracts.objective import Objective
from pgplug.contracts.rollout import Rollout
from pgplug.plugin.hookspecs import hookimpl
from pgplug.runtime.algorithm import PolicyGradientAlgorithm
from pgplug.validation import check_positive_int


class A2C(PolicyGradientAlgorithm):
    """Synchronous advantage actor-critic: n-step rollouts from a vec env, one update each.

    :param policy: the policy model (``MlpPolicy``, ``CnnPolicy``, ``MultiInputPolicy`` or a class)
    :param env: the environment (a gymnasium id, an env or an SB3 ``VecEnv``)
    :param learning_rate: learning rate, or a schedule of the remaining progress (1 → 0)
    :param n_steps: steps per env per update
    :param gamma: discount factor
    :param ent_coef: entropy coefficient
    :param vf_coef: value-loss coefficient
    :param max_grad_norm: gradient-norm clipping threshold
    :param rms_prop_eps: RMSprop epsilon (SB3's default; the paper's shared RMSprop used 0.1)
    :param use_rms_prop: RMSprop (α=0.99, as SB3) rather than Adam
    :param normalize_advantage: standardise Ψ in each update
    :param estimator: ``nstep`` (default, n=None), ``td``, ``gae`` or any estimator that does not
        need complete episodes
    :param estimator_kwargs: the estimator's arguments, e.g. ``{"gae_lambda": 0.95}``
    :param objective: the objective the update minimises (default ``policy_gradient``)
    :param objective_kwargs: the objective's arguments besides this algorithm's own settings
    :param fast_paths: pgplug's speed paths (True), SB3's own code (False), or ``PGPLUG_FAST_PATHS`` (None)
    """

    name = "a2c"
    default_estimator = "nstep"
    accepts_episode_estimators = False
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
        ent_coef: float = 0.0,
        vf_coef: float = 0.5,
        max_grad_norm: float | None = 0.5,
        rms_prop_eps: float = 1e-5,
        use_rms_prop: bool = True,
        use_sde: bool = False,
        sde_sample_freq: int = -1,
        normalize_advantage: bool = False,
        estimator: str | Estimator = "nstep",
        estimator_kwargs: dict[str, Any] | None = None,
        objective: str | Objective | None = None,
        objective_kwargs: dict[str, Any] | None = None,
        fast_paths: bool | None = None,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ) -> None:
        super().__init__(
            policy,
            env,
            learning_rate,
            gamma=gamma,
            ent_coef=ent_coef,
            vf_coef=vf_coef,
            max_grad_norm=max_grad_norm,
            normalize_advantage=normalize_advantage,
            estimator=estimator,
            estimator_kwargs=estimator_kwargs,
            objective=objective,
            objective_kwargs=objective_kwargs,
            fast_paths=fast_paths,
            use_sde=use_sde,
            sde_sample_freq=sde_sample_freq,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            seed=seed,
            device=device,
        )
        self.n_steps = check_positive_int("n_steps", n_steps)
        if use_rms_prop and "optimizer_class" not in self.policy_kwargs:
            self.policy_kwargs["optimizer_class"] = th.optim.RMSprop
            self.policy_kwargs["optimizer_kwargs"] = dict(alpha=0.99, eps=rms_prop_eps, weight_decay=0)
        if _init_setup_model:
            self._setup_model()

    @classmethod
    def estimator_for_sb3_data(cls, data: dict[str, Any]) -> Estimator:
        """SB3's A2C computes GAE(``gae_lambda``); λ = 1 is the n-step forward view, our default."""
        gae_lambda = float(data.get("gae_lambda", 1.0))
        if gae_lambda == 1.0:
            return cls.resolve_estimator("nstep", {"n": None})
        return cls.resolve_estimator("gae", {"gae_lambda": gae_lambda})

    def collect_rollout(self, callback: BaseCallback) -> Rollout | None:
        return self._collect(callback, self.n_steps)


@hookimpl
def pgplug_register_algorithms(register) -> None:
    register(A2C)
