"""A valid plugin whose hook has no ``@hookimpl``: pgplug takes ``pgplug_*`` functions as hooks anyway."""

from pgplug import Estimate
from pgplug.plugins.estimators import TD


class ScaledTD(TD):
    """The TD advantage times ``scale``."""

    name = "scaled_td"

    def __init__(self, scale: float = 2.0) -> None:
        self.scale = scale

    def estimate(self, **rollout) -> Estimate:
        estimate = super().estimate(**rollout)
        return Estimate(self.scale * estimate.advantages, estimate.returns)


def pgplug_register_estimators(register):
    register(ScaledTD)
