"""The precision ``pgplug train`` runs a new model in when neither ``--precision`` nor the config names one.

``bf16`` for a convolutional policy (SB3's own feed-forward ``ActorCriticPolicy`` code, the speed paths on) on a
CPU that computes bfloat16 natively (AVX-512 BF16 or AMX), else ``fp32``. On the 2-core development machine
(AVX-512 BF16) ``benchmarks/precision.py`` measured A2C on Pong 1.24 times and A3C 2 × 8 about 1.3 times as
many steps per second in bf16 as in fp32; the bf16 gradient of a rollout agrees with the fp32 one far inside the
noise between two rollouts' gradients, and the Pong learning curves matched over the first million frames (its
``gradients`` and ``parity`` parts; ``docs/results.md`` §7 trained A3C to +18 in bf16). A CPU without those
instructions would emulate bfloat16, slower than float32; an MLP's small matrices gain nothing. The Python API
keeps ``precision="fp32"`` as its default, so that ``pgplug.A2C`` computes what SB3's ``A2C`` computes.
"""

from __future__ import annotations

import torch as th
from torch import nn

from pgplug.runtime.fast_runners import runs_sb3_actor_critic
from pgplug.runtime.recurrent import is_recurrent
from pgplug.runtime.threads import is_convolutional


def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 matrix products in hardware (AVX-512 BF16 or AMX tiles)."""
    cpu = getattr(th, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    try:
        return any(getattr(cpu, name, lambda: False)() for name in checks)
    except (RuntimeError, AttributeError):  # a torch build without these probes
        return False


def choose_precision(policy: nn.Module, *, fast: bool) -> tuple[str, str]:
    """The precision for a new model of ``policy`` and why (the header line's words)."""
    if not is_convolutional(policy):
        return "fp32", "not a CNN policy"
    if not fast:
        return "fp32", "the speed paths are off"
    if is_recurrent(policy) or not runs_sb3_actor_critic(policy):
        return "fp32", f"{type(policy).__name__} runs its own forward passes"
    if not native_bf16():
        return "fp32", "this CPU has no bfloat16 instructions (AVX-512 BF16, AMX)"
    return "bf16", "CNN policy on a CPU with bfloat16 instructions"
