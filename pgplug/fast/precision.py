"""bfloat16 forward passes: the policy's body under autocast, its heads and distributions in float32.

``precision="bf16"`` runs the features extractor and the MLP extractor (for ``CnnPolicy``, NatureCNN's
three convolutions and its 3136→512 layer: nearly all of the arithmetic) under
``torch.autocast(dtype=torch.bfloat16)``, which CPUs with AMX or AVX-512 BF16 run on their matrix units
(others emulate it, correctly but slowly). The latent codes come back as float32, so the heads, the
log-softmax, the log-probs, the entropy and the value loss are float32 arithmetic: CPU autocast would
run ``log_softmax`` and ``softmax`` in bfloat16 (about three significant digits) if they were inside it.
The weights and the optimizer's state stay float32 (autocast casts a bfloat16 copy of each weight per
forward, and the gradients reach the float32 weights through that cast).

Image observations go in as channels-last (NHWC) tensors: oneDNN's bfloat16 convolutions run on that
layout, and converting the small uint8 batch once is cheaper than letting each convolution reorder it
(measured by ``benchmarks/precision.py``; the weights' layout made no measurable difference and stays
torch's default, so saved models, shared-memory A3C weights and optimizer state are untouched).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch as th
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy

from pgplug.contracts.rollout import Observation
from pgplug.fast.direct_forward import latents

#: The methods whose SB3 code :func:`bf16_latents` and the heads together compute.
_SB3_METHODS = ("forward", "evaluate_actions", "predict_values", "extract_features", "_get_action_dist_from_latent")


def runs_sb3_actor_critic(policy: BasePolicy) -> bool:
    """True when ``policy``'s forward passes are SB3's own ``ActorCriticPolicy`` code, which
    :func:`bf16_latents` splits into the body (bfloat16) and the heads (float32)."""
    cls = type(policy)
    return isinstance(policy, ActorCriticPolicy) and all(
        getattr(cls, method) is getattr(ActorCriticPolicy, method) and method not in policy.__dict__
        for method in _SB3_METHODS
    )


def channels_last(obs: Observation) -> Observation:
    """``obs`` with each batch of images (a 4-d tensor) in channels-last memory order: the same values."""
    if isinstance(obs, Mapping):
        return {key: channels_last(value) for key, value in obs.items()}
    if isinstance(obs, th.Tensor) and obs.dim() == 4:
        return obs.contiguous(memory_format=th.channels_last)
    return obs


def bf16_latents(policy: ActorCriticPolicy, obs: Observation) -> tuple[th.Tensor, th.Tensor]:
    """The actor's and the critic's latent codes computed under bfloat16 autocast, returned as float32."""
    with th.autocast(policy.device.type, dtype=th.bfloat16):
        latent_pi, latent_vf = latents(policy, channels_last(obs))
    return latent_pi.float(), latent_vf.float()
