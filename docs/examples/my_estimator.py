"""A one-file pgplug estimator plugin: ``pgplug train --plugin docs/examples/my_estimator.py --estimator clipped_gae``.

The same estimator as the ``pgplug-clipped-gae`` package, written by subclassing the built-in GAE.
"""

from pgplug import Estimate, PgplugError, hookimpl
from pgplug.plugins.estimators import GAE


class ClippedGAE(GAE):
    """GAE with every advantage clipped to ±clip; the critic targets stay unclipped."""

    name = "clipped_gae"

    def __init__(self, clip: float = 1.0, gae_lambda: float = 0.95) -> None:
        super().__init__(gae_lambda)
        if isinstance(clip, bool) or not isinstance(clip, (int, float)) or not 0 < clip < float("inf"):
            raise PgplugError(f"clipped_gae's clip must be a positive number, got {clip!r}")
        self.clip = float(clip)

    def estimate(self, **rollout) -> Estimate:
        estimate = super().estimate(**rollout)
        return Estimate(estimate.advantages.clamp(-self.clip, self.clip), estimate.returns)


@hookimpl
def pgplug_register_estimators(register):
    register(ClippedGAE)
