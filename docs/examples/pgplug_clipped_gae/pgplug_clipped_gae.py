"""pgplug-clipped-gae: generalised advantage estimation with every advantage clipped to ±clip.

A worked example of a third-party pgplug estimator plugin. Installed, it is found through the
``pgplug`` entry point declared in ``pyproject.toml``; uninstalled, ``--plugin`` loads this file.
"""

from __future__ import annotations

import math

from pgplug import Estimate, Estimator, PgplugError, hookimpl
from pgplug.contracts.estimator import episode_ends
from pgplug.plugins.estimator_math import gae_advantage


class ClippedGAE(Estimator):
    """Ψ_t = clip(A_t, −c, c) with A_t = Σ_l (γλ)^l δ_{t+l}; the critic targets the unclipped A_t + V(s_t).

    Clipping bounds how far one surprising transition can push the policy; the critic's targets
    are left unclipped so that V still estimates the λ-return.

    :param clip: c > 0, the largest |Ψ_t| allowed
    :param gae_lambda: λ in [0, 1], the bias-variance trade-off of GAE
    """

    name = "clipped_gae"
    needs_critic = True

    def __init__(self, clip: float = 1.0, gae_lambda: float = 0.95) -> None:
        if isinstance(clip, bool) or not isinstance(clip, (int, float)) or not 0 < clip < math.inf:
            raise PgplugError(f"clipped_gae's clip must be a positive number, got {clip!r}")
        if isinstance(gae_lambda, bool) or not isinstance(gae_lambda, (int, float)) or not 0 <= gae_lambda <= 1:
            raise PgplugError(f"clipped_gae's gae_lambda must be a number in [0, 1], got {gae_lambda!r}")
        self.clip = float(clip)
        self.gae_lambda = float(gae_lambda)

    def estimate(self, *, rewards, values, episode_starts, last_values, last_dones, gamma) -> Estimate:
        dones = episode_ends(episode_starts, last_dones)
        advantages = gae_advantage(rewards, values, dones, last_values, gamma, self.gae_lambda)
        return Estimate(advantages.clamp(-self.clip, self.clip), advantages + values)


@hookimpl
def pgplug_register_estimators(register) -> None:
    register(ClippedGAE)
