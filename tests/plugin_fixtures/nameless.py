from pgplug import Estimator, hookimpl


class Nameless(Estimator):
    def estimate(self, **rollout):
        raise NotImplementedError


@hookimpl
def pgplug_register_estimators(register):
    register(Nameless)
