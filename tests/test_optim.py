"""``pgplug.fast.optim``: the functional optimizer step is bitwise ``optimizer.step()``, and falls back to it.

``optimizer_step`` calls torch's functional ``rmsprop``/``adam`` directly once the optimizer's state
exists; every other case (first step, hooks, special modes, other classes) must go through
``optimizer.step()``. Each test steps two identical copies, one the torch way and one pgplug's, and
compares parameters and optimizer state with ``torch.equal`` (not merely close).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import torch as th
from stable_baselines3.common.sb2_compat.rmsprop_tf_like import RMSpropTFLike
from torch import nn
from torch.optim import optimizer as torch_optimizer

from pgplug.fast.optim import foreach, optimizer_step

N_STEPS = 5


def make_net() -> nn.Sequential:
    """The same small MLP on every call (fixed seed), so two copies start identical."""
    th.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 3))


def random_grads(net: nn.Module, step: int) -> list[th.Tensor]:
    """Gradients for every parameter, the same for a given step whichever copy asks."""
    generator = th.Generator().manual_seed(1000 + step)
    return [th.randn(p.shape, generator=generator) for p in net.parameters()]


def attach(net: nn.Module, grads: list[th.Tensor | None]) -> None:
    for p, g in zip(net.parameters(), grads):
        p.grad = None if g is None else g.clone()


@contextmanager
def counting_step_calls(optimizer: th.optim.Optimizer) -> Iterator[list[int]]:
    """Count ``step()`` calls on ``optimizer`` (patched on its class: an instance-level wrapper would itself
    make ``optimizer_step`` fall back, as for an LR scheduler's); yields the one-element call counter."""
    cls, calls = type(optimizer), [0]
    original = cls.step

    def counting_step(self: th.optim.Optimizer, *args: Any, **kwargs: Any) -> Any:
        if self is optimizer:
            calls[0] += 1
        return original(self, *args, **kwargs)

    cls.step = counting_step  # type: ignore[method-assign]
    try:
        yield calls
    finally:
        cls.step = original  # type: ignore[method-assign]


def assert_same(a: nn.Module, b: nn.Module, opt_a: th.optim.Optimizer, opt_b: th.optim.Optimizer) -> None:
    """Bitwise equal parameters and optimizer state (every state tensor, including ``step``)."""
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert th.equal(pa, pb)
    sa, sb = opt_a.state_dict()["state"], opt_b.state_dict()["state"]
    assert sa.keys() == sb.keys()
    for index in sa:
        assert sa[index].keys() == sb[index].keys(), index
        for key in sa[index]:
            assert th.equal(th.as_tensor(sa[index][key]), th.as_tensor(sb[index][key])), (index, key)


#: case -> (optimizer class, keyword arguments)
FUNCTIONAL_CASES: dict[str, tuple[type[th.optim.Optimizer], dict[str, Any]]] = {
    "rmsprop": (th.optim.RMSprop, {}),
    "rmsprop-foreach": (th.optim.RMSprop, {"foreach": True}),
    "rmsprop-momentum-centered": (th.optim.RMSprop, {"momentum": 0.9, "centered": True}),
    "rmsprop-all-options-foreach": (
        th.optim.RMSprop,
        {"momentum": 0.9, "centered": True, "weight_decay": 0.1, "maximize": True, "foreach": True},
    ),
    "adam": (th.optim.Adam, {}),
    "adam-amsgrad": (th.optim.Adam, {"amsgrad": True}),
    "adam-weight-decay": (th.optim.Adam, {"weight_decay": 0.1}),
    "adam-amsgrad-weight-decay-foreach": (th.optim.Adam, {"amsgrad": True, "weight_decay": 0.1, "foreach": True}),
    "adamw": (th.optim.AdamW, {}),
    "adamw-amsgrad-foreach": (th.optim.AdamW, {"amsgrad": True, "foreach": True}),
}


def step_both(
    net_a: nn.Sequential, opt_a: th.optim.Optimizer, net_b: nn.Sequential, opt_b: th.optim.Optimizer, step: int
) -> None:
    """One step with the same gradients: torch's ``step()`` on ``net_a``, ``optimizer_step`` on ``net_b``."""
    grads = random_grads(net_a, step)
    attach(net_a, grads)
    opt_a.step()
    attach(net_b, grads)
    optimizer_step(opt_b)


def step_side_by_side(cls: type[th.optim.Optimizer], kwargs: dict[str, Any]) -> Iterator[tuple[int, int]]:
    """Steps two identical nets with identical gradients, torch's ``step()`` vs ``optimizer_step``,
    checking they stay bitwise equal; yields (step, how often ``optimizer_step`` fell back to ``step()``)."""
    net_a, net_b = make_net(), make_net()
    opt_a, opt_b = cls(net_a.parameters(), lr=0.01, **kwargs), cls(net_b.parameters(), lr=0.01, **kwargs)
    with counting_step_calls(opt_b) as calls:
        for step in range(N_STEPS):
            step_both(net_a, opt_a, net_b, opt_b, step)
            assert_same(net_a, net_b, opt_a, opt_b)
            yield step, calls[0]
    assert not th.equal(net_a[0].weight, make_net()[0].weight)  # the steps did move the parameters


@pytest.mark.parametrize("case", FUNCTIONAL_CASES)
def test_functional_step_is_bitwise_optimizer_step(case: str) -> None:
    """Step after step, pgplug's step equals torch's; only the first (no state yet) goes through ``step()``."""
    for _, fallbacks in step_side_by_side(*FUNCTIONAL_CASES[case]):
        assert fallbacks == 1  # the first step created the state; the later ones were functional


def test_explicit_grads_equal_attached_grads_across_param_groups() -> None:
    """``grads=`` (in ``param_groups`` order, ``None`` = no gradient) steps as if they were the ``.grad``s.

    Two groups with different learning rates check that each gradient goes to its own parameter;
    the functional path leaves ``.grad`` untouched, as an A3C worker stepping global parameters needs.
    """
    net_a, net_b = make_net(), make_net()

    def groups(net: nn.Sequential) -> list[dict[str, Any]]:
        return [{"params": net[0].parameters()}, {"params": net[2].parameters(), "lr": 0.001}]

    opt_a, opt_b = th.optim.RMSprop(groups(net_a), lr=0.01), th.optim.RMSprop(groups(net_b), lr=0.01)
    for step in range(N_STEPS):
        grads: list[th.Tensor | None] = list(random_grads(net_a, step))
        if step == 3:
            grads[-1] = None  # the last bias has no gradient this step: it is not updated
        attach(net_a, grads)
        opt_a.step()
        for p in net_b.parameters():
            p.grad = None
        optimizer_step(opt_b, [None if g is None else g.clone() for g in grads])
        assert_same(net_a, net_b, opt_a, opt_b)
        if step > 0:  # functional: the gradients were used, not attached
            assert all(p.grad is None for p in net_b.parameters())
    assert opt_b.state[net_b[2].bias]["step"].item() == N_STEPS - 1


def instance_pre_hook(optimizer: th.optim.Optimizer, record: Callable[[], None]) -> Callable[[], None]:
    handle = optimizer.register_step_pre_hook(lambda opt, args, kwargs: record())
    return handle.remove


def instance_post_hook(optimizer: th.optim.Optimizer, record: Callable[[], None]) -> Callable[[], None]:
    handle = optimizer.register_step_post_hook(lambda opt, args, kwargs: record())
    return handle.remove


def global_pre_hook(optimizer: th.optim.Optimizer, record: Callable[[], None]) -> Callable[[], None]:
    def hook(opt: th.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if opt is optimizer:
            record()

    handle = torch_optimizer.register_optimizer_step_pre_hook(hook)
    return handle.remove


@pytest.mark.parametrize("register", [instance_pre_hook, instance_post_hook, global_pre_hook])
def test_step_hooks_make_it_fall_back_to_step(register: Callable[..., Callable[[], None]]) -> None:
    """With a step hook registered (also one registered once the state exists), every call runs ``step()``
    and so the hook; the result is still torch's."""
    net_a, net_b = make_net(), make_net()
    opt_a, opt_b = th.optim.RMSprop(net_a.parameters(), lr=0.01), th.optim.RMSprop(net_b.parameters(), lr=0.01)
    for opt, net in ((opt_a, net_a), (opt_b, net_b)):  # create the state: the functional path is open
        attach(net, random_grads(net, -1))
        opt.step()
    hook_calls = [0]
    remove = register(opt_b, lambda: hook_calls.__setitem__(0, hook_calls[0] + 1))
    try:
        for step in range(N_STEPS):
            step_both(net_a, opt_a, net_b, opt_b, step)
            assert hook_calls[0] == step + 1
            assert_same(net_a, net_b, opt_a, opt_b)
    finally:
        remove()


class SubclassedRMSprop(th.optim.RMSprop):
    """A subclass may change the update, so it is never stepped functionally."""


#: case -> (optimizer class, keyword arguments): every step must go through ``step()``
FALLBACK_CASES: dict[str, tuple[type[th.optim.Optimizer], dict[str, Any]]] = {
    "rmsprop-tf-like": (RMSpropTFLike, {}),
    "rmsprop-tf-like-momentum-centered": (RMSpropTFLike, {"momentum": 0.9, "centered": True}),
    "rmsprop-subclass": (SubclassedRMSprop, {}),
    "adam-fused": (th.optim.Adam, {"fused": True}),
    "sgd": (th.optim.SGD, {"momentum": 0.9}),
}


@pytest.mark.parametrize("case", FALLBACK_CASES)
def test_other_optimizers_and_modes_fall_back_to_step(case: str) -> None:
    """SB3's ``RMSpropTFLike``, subclasses, fused mode and other classes: ``step()`` every time, same result."""
    for step, fallbacks in step_side_by_side(*FALLBACK_CASES[case]):
        assert fallbacks == step + 1


def test_complex_parameters_fall_back_to_step() -> None:
    """A complex parameter goes through ``step()`` (which views it as real), bitwise as torch steps it."""
    params = [nn.Parameter(th.randn(3, generator=th.Generator().manual_seed(i), dtype=th.complex64)) for i in (0, 0)]
    opt_a, opt_b = th.optim.RMSprop([params[0]], lr=0.01), th.optim.RMSprop([params[1]], lr=0.01)
    with counting_step_calls(opt_b) as calls:
        for _ in range(N_STEPS):
            grad = th.randn(3, generator=th.Generator().manual_seed(100 + _), dtype=th.complex64)
            params[0].grad, params[1].grad = grad.clone(), grad.clone()
            opt_a.step()
            optimizer_step(opt_b)
            assert th.equal(params[0], params[1])
            assert th.equal(opt_a.state[params[0]]["square_avg"], opt_b.state[params[1]]["square_avg"])
    assert calls[0] == N_STEPS


def test_an_instance_wrapped_step_is_called() -> None:
    """``step`` wrapped on the instance (as torch's LR schedulers do) is honoured: the wrapper runs every time."""
    net = make_net()
    opt = th.optim.RMSprop(net.parameters(), lr=0.01)
    scheduler = th.optim.lr_scheduler.StepLR(opt, step_size=1)
    for step in range(3):
        attach(net, random_grads(net, step))
        opt._opt_called = False  # type: ignore[attr-defined]
        optimizer_step(opt)
        assert opt._opt_called  # type: ignore[attr-defined]  # set by the scheduler's wrapper
        scheduler.step()


def test_gradient_count_must_match() -> None:
    """Gradients are matched to parameters by position: a list of another length is refused."""
    net = make_net()
    opt = th.optim.Adam(net.parameters())
    with pytest.raises(ValueError, match="gradients for"):
        optimizer_step(opt, [p.grad for p in net.parameters()][:-1])


def test_foreach_is_chosen_per_call_and_never_written_into_the_groups() -> None:
    """Undecided groups step with the foreach kernels; explicit choices stay; ``param_groups`` are left as they were
    (they are saved with the model, and ``step()`` reads them when the fast paths are off)."""
    net = make_net()
    first, second = net[0], net[2]
    optimizer = th.optim.RMSprop(
        [
            {"params": [first.weight]},
            {"params": [first.bias], "foreach": False},
            {"params": [second.weight], "foreach": True},
        ],
        lr=0.01,
    )
    assert [foreach(group) for group in optimizer.param_groups] == [True, False, True]
    for step in range(3):
        attach(net, random_grads(net, step))
        optimizer_step(optimizer)
    assert [group["foreach"] for group in optimizer.param_groups] == [None, False, True]


@pytest.mark.parametrize("cls", [th.optim.RMSprop, th.optim.Adam])
def test_the_foreach_kernels_give_step_s_values_bitwise(cls: type[th.optim.Optimizer]) -> None:
    """The docstring's promise: the functional step's foreach kernels compute step()'s per-parameter loop exactly."""
    net_a, net_b = make_net(), make_net()
    opt_a, opt_b = cls(net_a.parameters(), lr=0.01), cls(net_b.parameters(), lr=0.01)
    for step in range(N_STEPS):
        grads = random_grads(net_a, step)
        attach(net_a, grads)
        opt_a.step()  # foreach=None: torch's per-parameter loop on CPU
        attach(net_b, grads)
        optimizer_step(opt_b)
        assert_same(net_a, net_b, opt_a, opt_b)
