"""Optimizer steps for small policies: torch's own update functions, without ``Optimizer.step``'s wrappers.

For CartPole's MLP an RMSprop step costs ~145 µs through ``optimizer.step()`` and ~100 µs through
the functional ``torch.optim.rmsprop.rmsprop`` it calls: the difference is the profiler, hook and
dynamo wrappers, and the per-step regrouping of the state. The first ``step()`` of a fresh process
also imports ``torch._dynamo`` (about a second), which every A3C worker would pay. The functional
call gets the same arguments as ``step()`` passes, so the update is bitwise the same; anything
unusual (hooks, state not created yet, fused/capturable/differentiable modes, other optimizer
classes) goes through ``optimizer.step()`` as usual.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch as th
from torch.optim.adam import adam
from torch.optim.rmsprop import rmsprop

from pgplug.fast.flat_update import FlatUpdate
from pgplug.fast.torch_internals import foreach_norms, foreach_scale_, has_step_hooks


def foreach(group: dict[str, Any]) -> bool:
    """The foreach (multi-tensor) kernels where the optimizer was left to choose (``foreach=None``).

    torch picks the per-parameter Python loop on CPU by default; the foreach kernels compute the same
    values (bitwise for RMSprop and Adam) with one call for all parameters. The choice is made per call,
    never written into the optimizer's ``param_groups`` (which are saved, and which ``step()`` reads).
    """
    return True if group["foreach"] is None else group["foreach"]


def _rmsprop_group(group: dict[str, Any], params: list[th.Tensor], grads: list[th.Tensor], state: Any) -> None:
    states = [state[p] for p in params]
    rmsprop(
        params,
        grads,
        [s["square_avg"] for s in states],
        [s["grad_avg"] for s in states] if group["centered"] else [],
        [s["momentum_buffer"] for s in states] if group["momentum"] > 0 else [],
        [s["step"] for s in states],
        lr=group["lr"],
        alpha=group["alpha"],
        eps=group["eps"],
        weight_decay=group["weight_decay"],
        momentum=group["momentum"],
        centered=group["centered"],
        foreach=foreach(group),
        maximize=group["maximize"],
    )


def _adam_group(group: dict[str, Any], params: list[th.Tensor], grads: list[th.Tensor], state: Any) -> None:
    states = [state[p] for p in params]
    beta1, beta2 = group["betas"]
    adam(
        params,
        grads,
        [s["exp_avg"] for s in states],
        [s["exp_avg_sq"] for s in states],
        [s["max_exp_avg_sq"] for s in states] if group["amsgrad"] else [],
        [s["step"] for s in states],
        amsgrad=group["amsgrad"],
        beta1=beta1,
        beta2=beta2,
        lr=group["lr"],
        weight_decay=group["weight_decay"],
        eps=group["eps"],
        maximize=group["maximize"],
        foreach=foreach(group),
        decoupled_weight_decay=group.get("decoupled_weight_decay", False),
    )


# Exact types: a subclass may change the update.
_FUNCTIONAL: dict[type, Callable[[dict[str, Any], list[th.Tensor], list[th.Tensor], Any], None]] = {
    th.optim.RMSprop: _rmsprop_group,
    th.optim.Adam: _adam_group,
    th.optim.AdamW: _adam_group,
}
_PLAIN_MODES = ("differentiable", "capturable", "fused")


def _functional_update(optimizer: th.optim.Optimizer) -> Callable[..., None] | None:
    update = _FUNCTIONAL.get(type(optimizer))
    if update is None or has_step_hooks(optimizer):
        return None
    if "step" in optimizer.__dict__:  # step() wrapped on the instance (an LR scheduler's counter, a user's wrapper)
        return None
    if any(group.get(mode) for group in optimizer.param_groups for mode in _PLAIN_MODES):
        return None
    return update


def optimizer_step(
    optimizer: th.optim.Optimizer, grads: Sequence[th.Tensor | None] | None = None, flat: FlatUpdate | None = None
) -> None:
    """``optimizer.step()``; ``grads`` (one per parameter, in ``param_groups`` order) replace the ``.grad``s.

    Passing ``grads`` lets an A3C worker step the global parameters with its local gradients
    without attaching them first. Given ``flat``, a plain RMSprop stepping the ``.grad``s runs on its flat buffers
    (:mod:`pgplug.fast.flat_update`).
    """
    update = _functional_update(optimizer)
    if grads is None and update is not None and flat is not None and flat.step(optimizer):
        return
    groups = optimizer.param_groups
    if grads is None:
        grads = [p.grad for group in groups for p in group["params"]]
    elif len(grads) != sum(len(group["params"]) for group in groups):
        raise ValueError(
            f"optimizer_step got {len(grads)} gradients for {sum(len(g['params']) for g in groups)} parameters"
        )
    state = optimizer.state
    batches = []
    index = 0
    for group in groups:
        pairs = [(p, g) for p, g in zip(group["params"], grads[index:]) if g is not None]
        index += len(group["params"])
        if update is not None and any(not state.get(p) or g.is_sparse or p.is_complex() for p, g in pairs):
            update = None  # state is created by the first step(); the rest is step()'s to handle
        batches.append(pairs)
    if update is None:
        for p, g in zip((p for group in groups for p in group["params"]), grads):
            p.grad = g
        optimizer.step()
        return
    with th.no_grad():
        for group, pairs in zip(groups, batches):
            if pairs:
                update(group, [p for p, _ in pairs], [g for _, g in pairs], state)


def clip_grad_norm(params: list[th.nn.Parameter], max_norm: float, flat: FlatUpdate | None = None) -> None:
    """``th.nn.utils.clip_grad_norm_(params, max_norm)``, op for op, so the result is bitwise the same.

    When every gradient shares one device and dtype (the usual case) it skips torch's per-call
    regrouping and wrappers, which cost more than the clipping itself for a small policy, and scales them in
    one kernel once gathered into ``flat``'s buffer (:mod:`pgplug.fast.flat_update`).
    """
    gathered = flat.gathered(params) if flat is not None else None
    grads = gathered.views if gathered is not None else [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    if len({(g.device, g.dtype) for g in grads}) > 1 or grads[0].device.type not in ("cpu", "cuda"):
        th.nn.utils.clip_grad_norm_(params, max_norm)
        return
    with th.no_grad():
        total_norm = th.linalg.vector_norm(th.stack(foreach_norms(grads)), 2.0)
        coefficient = th.clamp(max_norm / (total_norm + 1e-6), max=1.0)
        if gathered is not None:
            gathered.buffer.mul_(coefficient)  # every gradient at once: they are views of the buffer
        else:
            foreach_scale_(grads, coefficient)
