"""``pgplug.fast.flat_update``: clipping and RMSprop on flat buffers are bitwise torch's, and step aside otherwise.

Each test runs two identical nets with identical gradients: one through torch's ``clip_grad_norm_`` and
``RMSprop.step()``, the other through pgplug's ``clip_grad_norm``/``optimizer_step`` given a ``FlatUpdate``; the
parameters and optimizer states are compared with ``torch.equal``.
"""

from __future__ import annotations

import io
from typing import Any

import pytest
import torch as th
from torch import nn

from pgplug.fast import optim
from pgplug.fast.flat_update import MAX_ELEMENTS, FlatUpdate

N_STEPS = 6


def make_net(width: int = 16) -> nn.Sequential:
    th.manual_seed(0)
    return nn.Sequential(nn.Linear(4, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh(), nn.Linear(width, 3))


def attach(net: nn.Module, step: int, scale: float = 1.0, skip: int | None = None) -> None:
    """The same gradients for a given step on either copy (``skip``: that parameter gets none)."""
    generator = th.Generator().manual_seed(100 + step)
    for index, p in enumerate(net.parameters()):
        grad = th.randn(p.shape, generator=generator) * scale
        p.grad = None if index == skip else grad


def torch_step(net: nn.Module, opt: th.optim.Optimizer, max_norm: float | None) -> None:
    if max_norm is not None:
        nn.utils.clip_grad_norm_(list(net.parameters()), max_norm)
    opt.step()


def flat_step(net: nn.Module, opt: th.optim.Optimizer, max_norm: float | None, flat: FlatUpdate) -> None:
    if max_norm is not None:
        optim.clip_grad_norm(list(net.parameters()), max_norm, flat)
    optim.optimizer_step(opt, flat=flat)


def assert_same(a: nn.Module, b: nn.Module, opt_a: th.optim.Optimizer, opt_b: th.optim.Optimizer) -> None:
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert th.equal(pa, pb)
        assert (pa.grad is None) == (pb.grad is None)
        if pa.grad is not None:
            assert th.equal(pa.grad, pb.grad)  # the clipped gradient a user reads is the one the step used
    sa, sb = opt_a.state_dict()["state"], opt_b.state_dict()["state"]
    assert sa.keys() == sb.keys()
    for index in sa:
        for key in sa[index]:
            assert th.equal(sa[index][key], sb[index][key]), (index, key)


def run_side_by_side(
    kwargs: dict[str, Any], max_norm: float | None, width: int = 16, skip_at: dict[int, int] | None = None
) -> tuple[FlatUpdate, nn.Module]:
    net_a, net_b = make_net(width), make_net(width)
    opt_a, opt_b = th.optim.RMSprop(net_a.parameters(), **kwargs), th.optim.RMSprop(net_b.parameters(), **kwargs)
    flat = FlatUpdate()
    for step in range(N_STEPS):
        skip = (skip_at or {}).get(step)
        attach(net_a, step, skip=skip)
        attach(net_b, step, skip=skip)
        torch_step(net_a, opt_a, max_norm)
        flat_step(net_b, opt_b, max_norm, flat)
        assert_same(net_a, net_b, opt_a, opt_b)
    assert not th.equal(net_b[0].weight, make_net(width)[0].weight)
    return flat, net_b


@pytest.mark.parametrize("max_norm", [0.5, 1e6, None], ids=["clipped", "under-the-norm", "no-clipping"])
@pytest.mark.parametrize("kwargs", [{"lr": 7e-4, "alpha": 0.99, "eps": 1e-5}, {"lr": 0.01, "foreach": True}])
def test_flat_clipping_and_rmsprop_are_bitwise_torchs(max_norm: float | None, kwargs: dict[str, Any]) -> None:
    flat, net = run_side_by_side(kwargs, max_norm)
    assert flat.rmsprop is not None  # engaged from the second step (the first creates the state)
    buffer = flat.rmsprop.grads.buffer
    for p in net.parameters():  # every .grad is a view of the one buffer the step read
        assert p.grad is not None and p.grad.untyped_storage().data_ptr() == buffer.untyped_storage().data_ptr()


def test_a_parameter_without_a_gradient_is_left_alone_as_torch_leaves_it() -> None:
    """A step where one parameter has no gradient runs per parameter: its state is not decayed."""
    run_side_by_side({"lr": 0.01}, 0.5, skip_at={3: 1, 4: 4})


@pytest.mark.parametrize(
    "kwargs", [{"momentum": 0.9}, {"centered": True}, {"weight_decay": 0.1}, {"maximize": True}], ids=str
)
def test_other_rmsprop_settings_step_as_before(kwargs: dict[str, Any]) -> None:
    flat, _ = run_side_by_side({"lr": 0.01, **kwargs}, 0.5)
    assert flat.rmsprop is None


def test_a_large_policy_is_not_copied() -> None:
    """Above MAX_ELEMENTS the gradients stay where autograd put them (the copy would cost more than it saves)."""
    width = int(MAX_ELEMENTS**0.5) + 1
    flat, _ = run_side_by_side({"lr": 0.01}, 0.5, width=width)
    assert flat.gradients is None and flat.rmsprop is None


def test_adam_is_not_flattened() -> None:
    net = make_net()
    opt = th.optim.Adam(net.parameters(), lr=0.01)
    flat = FlatUpdate()
    for step in range(3):
        attach(net, step)
        optim.optimizer_step(opt, flat=flat)
    assert flat.rmsprop is None


def test_a_loaded_state_is_viewed_afresh_and_saved_state_round_trips() -> None:
    """``load_state_dict`` replaces the state tensors: the next step rebuilds its buffers from them; and a state
    saved while viewed into one buffer loads (weights-only) and steps on exactly as the original."""
    net_a, net_b = make_net(), make_net()
    opt_a, opt_b = th.optim.RMSprop(net_a.parameters(), lr=0.01), th.optim.RMSprop(net_b.parameters(), lr=0.01)
    flat = FlatUpdate()
    for step in range(3):
        attach(net_a, step)
        attach(net_b, step)
        torch_step(net_a, opt_a, 0.5)
        flat_step(net_b, opt_b, 0.5, flat)
    saved = io.BytesIO()
    th.save(opt_b.state_dict(), saved)
    saved.seek(0)
    opt_b.load_state_dict(th.load(saved, weights_only=True))
    first = flat.rmsprop
    for step in range(3, N_STEPS):
        attach(net_a, step)
        attach(net_b, step)
        torch_step(net_a, opt_a, 0.5)
        flat_step(net_b, opt_b, 0.5, flat)
        assert_same(net_a, net_b, opt_a, opt_b)
    assert flat.rmsprop is not first  # rebuilt on the loaded state


@pytest.mark.parametrize("missing", ["_foreach_copy_", "_foreach_add_", "_foreach_addcdiv_"])
def test_without_a_multi_tensor_kernel_the_step_is_the_same(monkeypatch: pytest.MonkeyPatch, missing: str) -> None:
    """The private multi-tensor kernels (``pgplug.fast.torch_internals``) have public fallbacks: a torch without one
    steps bitwise as torch's RMSprop still."""
    monkeypatch.delattr(th, missing)
    flat, _ = run_side_by_side({"lr": 0.01}, 0.5)
    assert flat.rmsprop is not None
