"""The hyperparameter search spaces of the built-in algorithms (their ``search_space``): rl-baselines3-zoo's A2C space
(``sample_a2c_params`` in its ``hyperparams_opt.py``), with each algorithm's own rollout length.

A dotted key names an entry of a mapping (``policy_kwargs.net_arch``). The estimator is not listed here: the search
draws it from the estimators that fit, with the arguments each one's ``search_space`` declares.
"""

from __future__ import annotations

from pgplug.contracts.search import Choice, Distribution, FloatRange, Named, OneMinusLog

#: The zoo's actor and critic networks (``convert_onpolicy_params``) and activations.
NETWORKS = Named({"small": {"pi": [64, 64], "vf": [64, 64]}, "medium": {"pi": [256, 256], "vf": [256, 256]}})
ACTIVATIONS = Choice("tanh", "relu")

#: What every built-in algorithm searches: the zoo's A2C ranges.
COMMON: dict[str, Distribution] = {
    "gamma": OneMinusLog(0.0001, 0.03),
    "learning_rate": FloatRange(1e-5, 0.002, log=True),
    "max_grad_norm": FloatRange(0.3, 2.0),
    "ent_coef": FloatRange(1e-8, 0.1, log=True),
    "policy_kwargs.net_arch": NETWORKS,
    "policy_kwargs.activation_fn": ACTIVATIONS,
}

#: A2C's n_steps: the zoo's 32 to 2048, and A2C's own default 5 with 8 and 16.
A2C_SPACE: dict[str, Distribution] = {"n_steps": Choice(5, 8, 16, 32, 64, 128, 256, 512, 1024, 2048), **COMMON}
A3C_SPACE: dict[str, Distribution] = {"t_max": Choice(5, 10, 20, 40, 80), **COMMON}
REINFORCE_SPACE: dict[str, Distribution] = {
    **COMMON,
    "learning_rate": FloatRange(1e-4, 0.01, log=True),  # Monte-Carlo gradients, normalised: larger steps
    "n_episodes": Choice(1, 2, 4, 8, 16),
    "normalize_advantage": Choice(True, False),
}
