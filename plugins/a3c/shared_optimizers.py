"""Optimizers whose statistics live in shared memory, for Hogwild training (A3C).

The A3C paper shares RMSprop's running average of squared gradients across all actor-learners.
Rather than re-implementing the update rule, pgplug pre-creates the state of torch's own
``RMSprop`` / ``Adam`` (and SB3's ``RMSpropTFLike``) exactly as their first ``step()`` would, and
moves it to shared memory: every process then updates the same tensors in place, and the update
is bit-for-bit the one an unshared optimizer makes (the serial-mode parity test relies on it).
"""

from __future__ import annotations

from collections.abc import Callable

import torch as th
from stable_baselines3.common.sb2_compat.rmsprop_tf_like import RMSpropTFLike

from pgplug.errors import PgplugError


def _step() -> th.Tensor:
    return th.zeros((), dtype=th.float32)


def _zeros(p: th.Tensor) -> th.Tensor:
    return th.zeros_like(p, memory_format=th.preserve_format)


def _rmsprop_state(p: th.Tensor, group: dict) -> dict[str, th.Tensor]:
    state = {"step": _step(), "square_avg": _zeros(p)}
    if group.get("momentum", 0) > 0:
        state["momentum_buffer"] = _zeros(p)
    if group.get("centered", False):
        state["grad_avg"] = _zeros(p)
    return state


def _rmsprop_tf_like_state(p: th.Tensor, group: dict) -> dict[str, th.Tensor]:
    state = {"step": th.zeros(()), "square_avg": th.ones_like(p, memory_format=th.preserve_format)}
    if group.get("momentum", 0) > 0:
        state["momentum_buffer"] = _zeros(p)
    if group.get("centered", False):
        state["grad_avg"] = _zeros(p)
    return state


def _adam_state(p: th.Tensor, group: dict) -> dict[str, th.Tensor]:
    state = {"step": _step(), "exp_avg": _zeros(p), "exp_avg_sq": _zeros(p)}
    if group.get("amsgrad", False):
        state["max_exp_avg_sq"] = _zeros(p)
    return state


# Exact-type lookup: the state layout of a subclass may differ.
_INITIAL_STATE: dict[type, Callable[[th.Tensor, dict], dict[str, th.Tensor]]] = {
    th.optim.RMSprop: _rmsprop_state,
    RMSpropTFLike: _rmsprop_tf_like_state,
    th.optim.Adam: _adam_state,
    th.optim.AdamW: _adam_state,
}


def share_optimizer_state(optimizer: th.optim.Optimizer) -> th.optim.Optimizer:
    """Create any missing state as the optimizer's first step would, and move all of it to shared memory."""
    init = _INITIAL_STATE.get(type(optimizer))
    if init is None:
        valid = ", ".join(sorted(cls.__name__ for cls in _INITIAL_STATE))
        raise PgplugError(
            f"shared optimizer {type(optimizer).__name__!r} is not supported; valid optimizer classes: {valid}"
        )
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state[p]
            if not state:
                state.update(init(p, group))
            for value in state.values():
                if isinstance(value, th.Tensor):
                    value.share_memory_()
    return optimizer
