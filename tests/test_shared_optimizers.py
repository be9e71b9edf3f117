"""Shared optimizer state for Hogwild A3C: shared memory, bit-exact updates, cross-process visibility."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch as th
import torch.multiprocessing as mp
from shared_optimizer_child import step_shared_optimizer
from stable_baselines3.common.sb2_compat.rmsprop_tf_like import RMSpropTFLike

from pgplug.errors import PgplugError
from pgplug.plugins.a3c.shared_optimizers import share_optimizer_state

OptimizerFactory = Callable[[list[th.nn.Parameter]], th.optim.Optimizer]

OPTIMIZERS: dict[str, OptimizerFactory] = {
    "rmsprop": lambda ps: th.optim.RMSprop(ps, lr=1e-2, alpha=0.99, eps=1e-5),
    "rmsprop-momentum-centered": lambda ps: th.optim.RMSprop(ps, lr=1e-2, momentum=0.9, centered=True),
    "adam": lambda ps: th.optim.Adam(ps, lr=1e-2),
    "adam-amsgrad": lambda ps: th.optim.Adam(ps, lr=1e-2, amsgrad=True),
    "adamw": lambda ps: th.optim.AdamW(ps, lr=1e-2, weight_decay=0.1),
    "rmsprop-tf-like": lambda ps: RMSpropTFLike(ps, lr=1e-2, alpha=0.99, eps=1e-5),
    "rmsprop-tf-like-momentum-centered": lambda ps: RMSpropTFLike(ps, lr=1e-2, momentum=0.9, centered=True),
}


def make_params(seed: int = 0) -> list[th.nn.Parameter]:
    generator = th.Generator().manual_seed(seed)
    return [th.nn.Parameter(th.randn(shape, generator=generator)) for shape in ((4, 3), (3,), (2, 2, 2))]


def set_grads(params: list[th.nn.Parameter], step: int) -> None:
    generator = th.Generator().manual_seed(100 + step)
    for p in params:
        p.grad = th.randn(p.shape, generator=generator)


def as_tensor(value: Any) -> th.Tensor:
    """RMSpropTFLike keeps an int step when it creates the state itself, a tensor when pre-created."""
    return value if isinstance(value, th.Tensor) else th.tensor(float(value))


def assert_same_state(shared: th.optim.Optimizer, reference: th.optim.Optimizer) -> None:
    for p_shared, p_ref in zip(shared.param_groups[0]["params"], reference.param_groups[0]["params"]):
        assert th.equal(p_shared, p_ref)
        state, ref_state = shared.state[p_shared], reference.state[p_ref]
        assert state.keys() == ref_state.keys()
        for key in state:
            assert th.equal(as_tensor(state[key]).float(), as_tensor(ref_state[key]).float()), key


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_state_tensor_is_in_shared_memory(name: str) -> None:
    params = make_params()
    optimizer = share_optimizer_state(OPTIMIZERS[name](params))
    states = [optimizer.state[p] for p in params]
    assert all(states), "the state is created before the first step"
    for state in states:
        for key, value in state.items():
            assert isinstance(value, th.Tensor) and value.is_shared(), key
    # Steps update the state in place, so it stays shared.
    set_grads(params, 0)
    optimizer.step()
    for state in (optimizer.state[p] for p in params):
        assert all(value.is_shared() for value in state.values())


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_shared_steps_equal_unshared_steps_bit_for_bit(name: str) -> None:
    shared_params, reference_params = make_params(), make_params()
    shared = share_optimizer_state(OPTIMIZERS[name](shared_params))
    reference = OPTIMIZERS[name](reference_params)
    for step in range(3):
        set_grads(shared_params, step)
        set_grads(reference_params, step)
        shared.step()
        reference.step()
        assert_same_state(shared, reference)


@pytest.mark.parametrize("name", ["rmsprop", "adam", "rmsprop-tf-like"])
def test_sharing_an_optimizer_that_already_stepped_keeps_its_state(name: str) -> None:
    shared_params, reference_params = make_params(), make_params()
    shared, reference = OPTIMIZERS[name](shared_params), OPTIMIZERS[name](reference_params)
    for step in range(3):
        set_grads(shared_params, step)
        set_grads(reference_params, step)
        if step == 1:
            share_optimizer_state(shared)
        shared.step()
        reference.step()
    assert_same_state(shared, reference)
    assert all(v.is_shared() for p in shared_params for v in shared.state[p].values() if isinstance(v, th.Tensor))


class MyRMSprop(th.optim.RMSprop):
    """A subclass may lay out its state differently, so it is refused too."""


@pytest.mark.parametrize("cls", [th.optim.SGD, th.optim.Adagrad, MyRMSprop])
def test_unsupported_optimizer_is_refused_with_the_valid_names(cls: type[th.optim.Optimizer]) -> None:
    with pytest.raises(PgplugError) as info:
        share_optimizer_state(cls(make_params(), lr=0.1))
    message = str(info.value)
    assert "\n" not in message
    assert cls.__name__ in message
    for valid in ("Adam", "AdamW", "RMSprop", "RMSpropTFLike"):
        assert valid in message


def test_two_processes_step_the_same_shared_rmsprop() -> None:
    """Each child steps the shared RMSprop once; the second sees the first's ``square_avg``, the parent both."""
    param = th.nn.Parameter(th.ones(3))
    param.share_memory_()
    optimizer = share_optimizer_state(th.optim.RMSprop([param], lr=0.1, alpha=0.9, eps=1e-5))
    reference_param = th.nn.Parameter(th.ones(3))
    reference = th.optim.RMSprop([reference_param], lr=0.1, alpha=0.9, eps=1e-5)

    ctx = mp.get_context("spawn")
    results = ctx.SimpleQueue()
    turns = [ctx.Event() for _ in range(3)]
    # Both children start together (one spawn start-up), then step one after the other (exact values).
    children = [
        ctx.Process(target=step_shared_optimizer, args=(param, optimizer, grad, turns[i], turns[i + 1], results))
        for i, grad in enumerate((1.0, 2.0))
    ]
    for child in children:
        child.start()
    turns[0].set()
    seen = [results.get() for _ in children]
    for child in children:
        child.join(timeout=60)
        assert child.exitcode == 0
    results.close()

    # square_avg after g=1: 0.1·1 = 0.1; after g=2: 0.9·0.1 + 0.1·4 = 0.49.
    (before_1, after_1, _), (before_2, after_2, param_2) = seen
    assert before_1 == [0.0] * 3
    assert after_1 == pytest.approx([0.1] * 3, rel=1e-6)
    assert before_2 == after_1  # the second process saw the first one's statistics
    assert after_2 == pytest.approx([0.49] * 3, rel=1e-6)
    for grad in (1.0, 2.0):
        reference_param.grad = th.full((3,), grad)
        reference.step()
    state = optimizer.state[param]
    assert th.equal(state["square_avg"], reference.state[reference_param]["square_avg"])
    assert state["step"].item() == 2
    assert th.equal(param.detach(), reference_param.detach())
    assert param.tolist() == param_2
