"""A small policy's gradients and RMSprop averages in one flat buffer each: the update's per-parameter kernels as one.

SB3's CartPole MLP has 12 parameters, so every elementwise step of the update (scaling the gradients to the clip
norm, and RMSprop's decay, accumulation, square root and epsilon) is 12 tiny kernels, each costing more in dispatch
than in arithmetic: about a fifth of an A2C update. Here the gradients are copied into one buffer after backward
(one multi-tensor copy; each ``.grad`` becomes a view of it, so what a user reads is what the step used) and RMSprop's
``square_avg`` states are views of another, so those steps are one kernel each. The parameters stay where they are:
the last step, ``param += -lr · grad / avg``, is one multi-tensor kernel over views of the flat buffers.

Every kernel is elementwise with the same scalars in the same order as torch's multi-tensor RMSprop and
``clip_grad_norm_`` (which :func:`pgplug.fast.optim.clip_grad_norm` applies to the gathered buffer: the norm
taken per parameter, then over the norms), so the result is bitwise theirs
(``tests/test_flat_update.py``). It engages only for a plain ``torch.optim.RMSprop`` (exact class) without
momentum, centering, weight decay or special modes, over one group of dense float parameters on one device, each
with a gradient; anything else goes through :mod:`pgplug.fast.optim` as before.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch as th

from pgplug.fast.torch_internals import foreach_addcdiv_, foreach_copy_, foreach_increment_


def _views(buffer: th.Tensor, like: list[th.Tensor]) -> list[th.Tensor]:
    return [part.view_as(t) for part, t in zip(buffer.split([t.numel() for t in like]), like)]


#: The size up to which copying the gradients into one buffer costs less than the kernels it saves (CartPole's MLP:
#: 9,155 elements; NatureCNN's 1.7M would pay a copy of megabytes per update for nothing).
MAX_ELEMENTS = 131_072


def _plain(params: list[th.Tensor]) -> bool:
    first = params[0]
    return sum(p.numel() for p in params) <= MAX_ELEMENTS and all(
        p.layout is th.strided and p.dtype == first.dtype and p.device == first.device and p.dtype.is_floating_point
        for p in params
    )


class FlatGradients:
    """One buffer holding the gradients of a parameter list, each ``.grad`` a view of it once gathered."""

    def __init__(self, params: list[th.Tensor]) -> None:
        self.params = list(params)
        self.buffer = th.zeros(sum(p.numel() for p in params), dtype=params[0].dtype, device=params[0].device)
        self.views = _views(self.buffer, self.params)

    def holds(self, params: list[th.Tensor]) -> bool:
        """Whether this buffer is for exactly ``params``, in that order."""
        return len(params) == len(self.params) and all(a is b for a, b in zip(self.params, params))

    def gathered(self) -> bool:
        """Whether every ``.grad`` is still this buffer's view (nothing has replaced one since :meth:`gather`)."""
        return all(p.grad is v for p, v in zip(self.params, self.views))

    def gather(self) -> bool:
        """Copy the gradients into the buffer and make each ``.grad`` its view; False (nothing done) if a parameter
        has no gradient or a gradient of another kind, which the per-parameter path then handles as torch does."""
        if self.gathered():
            return True
        grads = [p.grad for p in self.params]
        if any(g is None or g.layout is not th.strided or g.dtype != self.buffer.dtype for g in grads):
            return False
        foreach_copy_(self.views, grads)
        for p, view in zip(self.params, self.views):
            p.grad = view
        return True


class FlatRMSprop:
    """RMSprop's step on flat buffers: ``square_avg`` states viewed into one buffer, the gradients gathered."""

    def __init__(self, optimizer: th.optim.RMSprop, grads: FlatGradients) -> None:
        self.optimizer = weakref.ref(optimizer)
        self.grads = grads
        params = grads.params
        states = [optimizer.state[p] for p in params]
        self.square_avg = th.cat([s["square_avg"].reshape(-1) for s in states])
        self.square_avgs = _views(self.square_avg, params)
        for state, view in zip(states, self.square_avgs):
            state["square_avg"] = view
        self.avg = th.empty_like(self.square_avg)
        self.avgs = _views(self.avg, params)
        self.steps = [s["step"] for s in states]

    @staticmethod
    def applies(optimizer: th.optim.Optimizer) -> bool:
        """Whether ``optimizer`` is a plain RMSprop whose step is the few kernels of :meth:`step` (its hooks and
        special modes are ruled out before, by :func:`pgplug.fast.optim.optimizer_step`'s functional check)."""
        if type(optimizer) is not th.optim.RMSprop or len(optimizer.param_groups) != 1:
            return False
        group = optimizer.param_groups[0]
        return not (group["momentum"] or group["centered"] or group["weight_decay"] or group["maximize"])

    def fits(self, optimizer: th.optim.Optimizer, params: list[th.Tensor]) -> bool:
        """Whether the parameters and their states are still the ones viewed (``load_state_dict`` replaces states)."""
        if self.optimizer() is not optimizer or not self.grads.holds(params):
            return False
        state = optimizer.state
        return all(
            (s := state.get(p)) is not None and s.get("square_avg") is v and s.get("step") is step
            for p, v, step in zip(params, self.square_avgs, self.steps)
        )

    def step(self, group: dict[str, Any]) -> bool:
        """One RMSprop step as torch's multi-tensor ``rmsprop`` takes it; False if the gradients could not be
        gathered (the caller then steps as usual)."""
        grads = self.grads
        if not grads.gather():
            return False
        alpha, lr = group["alpha"], group["lr"]
        with th.no_grad():
            foreach_increment_(self.steps)
            self.square_avg.mul_(alpha)
            self.square_avg.addcmul_(grads.buffer, grads.buffer, value=1 - alpha)
            th.sqrt(self.square_avg, out=self.avg)
            self.avg.add_(group["eps"])
            foreach_addcdiv_(grads.params, grads.views, self.avgs, -lr)
        return True


class FlatUpdate:
    """The flat buffers of one learner's update (held by its runner, so they live and die with the policy)."""

    def __init__(self) -> None:
        self.gradients: FlatGradients | None = None
        self.rmsprop: FlatRMSprop | None = None

    def _gradients(self, params: list[th.Tensor]) -> FlatGradients | None:
        if self.gradients is None or not self.gradients.holds(params):
            self.gradients = FlatGradients(params) if len(params) > 1 and _plain(params) else None
        return self.gradients

    def gathered(self, params: list[th.Tensor]) -> FlatGradients | None:
        """The gradients of ``params`` gathered into one buffer (each ``.grad`` its view), for clipping in one
        kernel; None where they are not: too large or mixed parameters, or a parameter without a gradient."""
        flat = self._gradients(params)
        return flat if flat is not None and flat.gather() else None

    def step(self, optimizer: th.optim.Optimizer) -> bool:
        """``optimizer.step()`` on flat buffers; False (nothing done) where it does not apply: not a plain RMSprop,
        its state not created yet (the first ``step()`` creates it), or a parameter without a gradient."""
        if not FlatRMSprop.applies(optimizer):
            return False
        params = optimizer.param_groups[0]["params"]
        rmsprop = self.rmsprop
        if rmsprop is None or not rmsprop.fits(optimizer, params):
            grads, state = self._gradients(params), optimizer.state
            if grads is None or not all(state.get(p) for p in params):
                return False
            rmsprop = self.rmsprop = FlatRMSprop(optimizer, grads)
        return rmsprop.step(optimizer.param_groups[0])
