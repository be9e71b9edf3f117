"""Child-process target for the shared-optimizer test; imports only torch, so a spawned child starts fast."""

from __future__ import annotations

from typing import Any

import torch as th


def step_shared_optimizer(
    param: th.nn.Parameter, optimizer: th.optim.Optimizer, grad: float, turn: Any, next_turn: Any, results: Any
) -> None:
    """Wait for ``turn``, step the shared RMSprop once with a constant gradient, then hand over ``next_turn``.

    Puts the ``square_avg`` seen before and after the step, and the parameter, on ``results`` as lists
    (a tensor sent through a torch queue would keep the child's shared memory in play).
    """
    if not turn.wait(timeout=120):
        raise TimeoutError("never got a turn")
    square_avg = optimizer.state[param]["square_avg"]
    before = square_avg.tolist()
    param.grad = th.full_like(param, grad)
    optimizer.step()
    results.put((before, square_avg.tolist(), param.tolist()))
    next_turn.set()
