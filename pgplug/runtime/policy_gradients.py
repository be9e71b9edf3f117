"""Policy-gradient vectors at fixed weights, one per batch and estimator, and the critic fitted for them.

ĝ = ∇θ −mean_t(log π(a_t|s_t) Ψ_t) over a batch's steps: the gradient of the policy term of the loss pgplug
minimises, with Ψ from an estimator (not normalised). θ are the actor's parameters: those log π depends on
(:func:`split_parameters`); the critic's own parameters are those V depends on and log π does not, which
:func:`fit_critic` regresses without moving the policy, so a critic estimator is measured with a V(s) worth the name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch as th
from stable_baselines3.common.policies import ActorCriticPolicy

from pgplug.contracts.estimator import Estimator
from pgplug.errors import PgplugError
from pgplug.runtime.episodes import EpisodeBatch


def split_parameters(
    policy: ActorCriticPolicy, batch: EpisodeBatch
) -> tuple[list[th.nn.Parameter], list[th.nn.Parameter]]:
    """The actor's parameters (log π depends on them) and the critic's own (V depends on them, log π does not),
    read off autograd on ``batch``, so any architecture (shared or separate extractors) is split right."""
    rollout = batch.rollout
    params = [p for p in policy.parameters() if p.requires_grad]
    values, log_prob, _ = policy.evaluate_actions(rollout.flat(rollout.observations), rollout.flat(rollout.actions))
    actor = th.autograd.grad(log_prob.sum(), params, retain_graph=True, allow_unused=True)
    critic = th.autograd.grad(values.sum(), params, allow_unused=True)
    actor_params = [p for p, g in zip(params, actor) if g is not None]
    critic_params = [p for p, ga, gc in zip(params, actor, critic) if gc is not None and ga is None]
    return actor_params, critic_params


def fit_critic(
    policy: ActorCriticPolicy,
    batches: Sequence[EpisodeBatch],
    targets: Sequence[th.Tensor],
    iterations: int = 500,
    learning_rate: float = 3e-3,
) -> float:
    """Regress the critic's own parameters on ``targets`` (one ``[T, N]`` tensor per batch, e.g. the Monte-Carlo
    reward-to-go) over the batches' masked steps, full batch with Adam; returns the explained variance reached."""
    _, critic_params = split_parameters(policy, batches[0])
    if not critic_params:
        raise PgplugError("the policy's critic shares all its parameters with the actor: it cannot be fitted alone")
    observations = th.cat([b.rollout.flat(b.rollout.observations) for b in batches])
    wanted = th.cat([b.rollout.flat(t) for b, t in zip(batches, targets)]).detach()
    optimizer = th.optim.Adam(critic_params, lr=learning_rate)
    for _ in range(iterations):
        loss = th.nn.functional.mse_loss(policy.predict_values(observations).flatten(), wanted)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with th.no_grad():
        residual = wanted - policy.predict_values(observations).flatten()
    variance = float(wanted.var()) if len(wanted) > 1 else 0.0
    return float(1 - residual.var() / variance) if variance > 0 else float("nan")


def policy_gradients(
    policy: ActorCriticPolicy, batches: Sequence[EpisodeBatch], estimators: Mapping[str, Estimator], gamma: float
) -> dict[str, th.Tensor]:
    """ĝ of every estimator on every batch: ``{label: [n_batches, n_actor_parameters]}``, the batches shared.

    log π is evaluated once per batch and differentiated once per estimator (the batches are paired: every
    estimator sees the same episodes).
    """
    if not batches:
        return {label: th.empty(0) for label in estimators}
    actor_params, _ = split_parameters(policy, batches[0])
    rows: dict[str, list[th.Tensor]] = {label: [] for label in estimators}
    for batch in batches:
        rollout = batch.rollout
        _, log_prob, _ = policy.evaluate_actions(rollout.flat(rollout.observations), rollout.flat(rollout.actions))
        for index, (label, estimator) in enumerate(estimators.items()):
            psi = rollout.flat(batch.estimate(estimator, gamma)).detach()
            loss = -(psi * log_prob).mean()
            last = index == len(estimators) - 1
            grads = th.autograd.grad(loss, actor_params, retain_graph=not last)
            rows[label].append(th.cat([g.flatten() for g in grads]))
    return {label: th.stack(vectors) for label, vectors in rows.items()}
