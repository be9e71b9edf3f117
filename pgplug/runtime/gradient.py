"""The one gradient step every learner takes: evaluate, objective, finite check, backward, clip, optimizer step.

A2C, REINFORCE, each A3C worker and behavioural cloning all go through :func:`compute_gradients`; the
synchronous learners and cloning then step their optimizer (:func:`gradient_step`), an A3C worker
pushes the gradients to its parameter store, which steps the shared optimizer with the same runner.
"""

from __future__ import annotations

import torch as th

from pgplug.contracts.objective import LossTerms, Objective
from pgplug.contracts.rollout import Rollout
from pgplug.errors import DivergedError
from pgplug.runtime.policy_runner import PolicyRunner


def compute_gradients(
    runner: PolicyRunner,
    objective: Objective,
    rollout: Rollout,
    params: list[th.nn.Parameter],
    max_grad_norm: float | None,
) -> LossTerms:
    """The objective's loss on ``rollout``, fresh gradients in ``params``, clipped to ``max_grad_norm``.

    A loss that is not finite stops training with one line: the fast runners sample without
    ``torch.multinomial``'s checks, so this is where a diverged policy is caught.
    """
    runner.set_training_mode(True)
    batch = runner.evaluate_rollout(rollout, objective.differentiates_entropy)
    terms = objective.loss(batch)
    if not th.isfinite(terms.loss):
        raise DivergedError(
            f"the loss is {terms.loss.item()}: training diverged (lower learning_rate or max_grad_norm, "
            "or check the observations and rewards for NaN/inf)"
        )
    # What optimizer.zero_grad() does (set_to_none), minus its per-call profiler and dynamo wrappers.
    for param in params:
        param.grad = None
    terms.loss.backward()
    if max_grad_norm is not None:
        runner.clip_grad_norm(params, max_grad_norm)
    return terms


def gradient_step(
    runner: PolicyRunner,
    objective: Objective,
    rollout: Rollout,
    optimizer: th.optim.Optimizer,
    params: list[th.nn.Parameter],
    max_grad_norm: float | None,
) -> LossTerms:
    """:func:`compute_gradients`, then one step of ``optimizer`` over ``params``."""
    terms = compute_gradients(runner, objective, rollout, params, max_grad_norm)
    runner.optimizer_step(optimizer)
    return terms
