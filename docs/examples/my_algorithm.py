"""A one-file pgplug algorithm plugin: ``pgplug train --plugin docs/examples/my_algorithm.py --algo vpg``."""

from typing import Any

from pgplug import hookimpl
from pgplug.runtime.on_policy import OnPolicyLearner
from pgplug.validation import check_positive_int


class VPG(OnPolicyLearner):
    """Vanilla policy gradient on fixed-length rollouts: ``n_steps`` per env, then one Adam step.

    :param policy: the policy model (``MlpPolicy``, ``CnnPolicy``, ``MultiInputPolicy`` or a class)
    :param env: the environment (a gymnasium id, an env or an SB3 ``VecEnv``)
    :param learning_rate: Adam's learning rate, or a schedule
    :param n_steps: steps per env per update
    :param kwargs: the shared arguments of :class:`OnPolicyLearner` (``gamma``, ``estimator``, ...)
    """

    name = "vpg"
    default_estimator = "gae"
    accepts_episode_estimators = False  # rollouts cut episodes, so no full_return / reward_to_go
    # The rule each own setting follows; the shared ones (gamma, ent_coef, ...) are the base's.
    setting_rules = {**OnPolicyLearner.setting_rules, "n_steps": check_positive_int}

    def __init__(self, policy, env, learning_rate=3e-4, n_steps: int = 32, _init_setup_model=True, **kwargs: Any):
        checked = self.check_settings(locals())  # before anything is built; configs are checked by the same rules
        super().__init__(policy, env, learning_rate, **kwargs)
        self.n_steps = checked["n_steps"]
        if _init_setup_model:
            self._setup_model()

    def collect_rollout(self, callback, n_steps):
        return self._collect(callback, n_steps)


@hookimpl
def pgplug_register_algorithms(register):
    register(VPG)
