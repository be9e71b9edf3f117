"""The one policy-gradient loss every algorithm minimises.

loss = −mean(log π(a|s) Ψ) − ent_coef·H(π) + vf_coef·MSE(V(s), returns)

Written op for op as SB3's A2C computes it, so pgplug's A2C matches SB3's update for update.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch as th
import torch.nn.functional as F
from stable_baselines3.common.policies import ActorCriticPolicy

from pgplug.contracts.rollout import Observation, Rollout
from pgplug.fast.categorical import categorical_entropy, categorical_log_prob, latents, runs_sb3_categorical
from pgplug.fast.rollout_graph import ROLLOUT_GRAPH
from pgplug.runtime.recurrent import LSTM_STATES


@dataclass
class LossTerms:
    loss: th.Tensor
    policy_loss: th.Tensor
    value_loss: th.Tensor | None
    entropy_loss: th.Tensor


def evaluate_actions(
    policy: ActorCriticPolicy, observations: Observation, actions: th.Tensor, entropy_grad: bool = True
) -> tuple[th.Tensor, th.Tensor, th.Tensor | None]:
    """``policy.evaluate_actions(observations, actions)``: values, log π(a|s) and the entropy.

    For SB3's policies over a categorical, the same formulas are run here without building a
    torch.distributions object (the log-prob and entropy are ``Categorical``'s own, so the values
    and gradients agree to float32 rounding). ``entropy_grad=False`` computes the entropy outside the
    autograd graph, for when it is only logged.
    """
    if not runs_sb3_categorical(policy, "evaluate_actions"):
        values, log_prob, entropy = policy.evaluate_actions(observations, actions)
        return values, log_prob, entropy if entropy is None or entropy_grad else entropy.detach()
    latent_pi, latent_vf = latents(policy, observations)
    logits = policy.action_net(latent_pi)
    log_pmf = th.log_softmax(logits, dim=-1)  # Categorical's logits − logsumexp, in one kernel (see sample_categorical)
    log_prob = categorical_log_prob(log_pmf, actions.long())
    values = policy.value_net(latent_vf)
    with th.set_grad_enabled(entropy_grad and th.is_grad_enabled()):
        entropy = categorical_entropy(log_pmf)
    return values, log_prob, entropy


def policy_gradient_loss(
    policy: ActorCriticPolicy,
    rollout: Rollout,
    ent_coef: float,
    vf_coef: float,
    normalize_advantage: bool = False,
) -> LossTerms:
    """The loss of one update over the whole (masked) rollout, with Ψ = ``rollout.advantages``."""
    assert rollout.advantages is not None, "run the estimator before computing the loss"
    lstm_states = rollout.extras.get(LSTM_STATES)
    # The rollout's own forward passes, if its collector kept them: used once (after an optimizer step
    # they would be stale), then any further loss on this rollout runs the policy again.
    graph = rollout.extras.pop(ROLLOUT_GRAPH, None)
    if graph is not None:
        flat = rollout.flat
        values, log_prob = flat(graph.values), flat(graph.log_probs)
        entropy = graph.entropy if graph.entropy is None or ent_coef != 0 else graph.entropy.detach()
        entropy = None if entropy is None else flat(entropy)
    elif lstm_states is None:
        flat = rollout.flat
        observations, actions = flat(rollout.observations), flat(rollout.actions)
        # With ent_coef == 0 the entropy only feeds the logs: keep it out of the graph, and so out of backward.
        values, log_prob, entropy = evaluate_actions(policy, observations, actions, entropy_grad=ent_coef != 0)
    else:
        # A recurrent policy replays each env's whole sequence from the states the rollout began with
        # (truncated BPTT); the mask, if any, applies to the outputs.
        flat = partial(rollout.flat, env_major=True)
        values, log_prob, entropy = policy.evaluate_actions(
            flat(rollout.observations, masked=False),
            flat(rollout.actions, masked=False),
            lstm_states,
            flat(rollout.episode_starts, masked=False),
        )
        if rollout.mask is not None:
            keep = flat(rollout.mask, masked=False)
            values, log_prob = values[keep], log_prob[keep]
            entropy = None if entropy is None else entropy[keep]
    values = values.flatten()
    advantages = flat(rollout.advantages)
    if normalize_advantage:
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    policy_loss = -(advantages * log_prob).mean()
    entropy_loss = -th.mean(-log_prob) if entropy is None else -th.mean(entropy)
    loss = policy_loss + ent_coef * entropy_loss if ent_coef != 0 else policy_loss
    value_loss = None
    if rollout.returns is not None:
        value_loss = F.mse_loss(flat(rollout.returns), values)
        loss = loss + vf_coef * value_loss
    return LossTerms(loss, policy_loss, value_loss, entropy_loss)
