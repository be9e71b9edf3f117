"""The advantage estimators as pure functions over time-major tensors (``[T, N]``).

Every function takes ``dones[t] = 1`` where step t ended an episode (see
:func:`pgplug.contracts.estimator.episode_ends`), so episode boundaries inside a rollout, the rollout's end
(bootstrap from ``last_values``) and time-limit truncations (the reward already carries γ·V) are
handled in one place. The formulas are in docs/estimators.md.
"""

from __future__ import annotations

import torch as th


def discounted_reward_to_go(rewards: th.Tensor, dones: th.Tensor, gamma: float, tail: th.Tensor) -> th.Tensor:
    """G_t = r_t + γ (1 − done_t) G_{t+1}, with G_T = ``tail`` (0 for Monte-Carlo, V(s_T) to bootstrap)."""
    return _backward_recursion(rewards, gamma * (1.0 - dones), tail)


def _backward_recursion(terms: th.Tensor, coefficients: th.Tensor, tail: th.Tensor) -> th.Tensor:
    """x_t = terms_t + coefficients_t · x_{t+1}, with x_T = ``tail``: the one sequential loop over time.

    Whatever can be computed for all steps at once is computed before the loop, so each step costs
    two tensor ops (a rollout is short and the envs are few: the per-op overhead is the cost).
    """
    out = []
    running = tail
    for term, coefficient in zip(terms.unbind(0)[::-1], coefficients.unbind(0)[::-1]):
        running = term + coefficient * running
        out.append(running)
    return th.stack(out[::-1]) if out else th.empty_like(terms)


def reward_to_go(rewards: th.Tensor, dones: th.Tensor, gamma: float) -> th.Tensor:
    """Σ_{k=t..t1} γ^{k−t} r_k up to the end t1 of t's episode (Monte-Carlo, no bootstrap)."""
    return discounted_reward_to_go(rewards, dones, gamma, th.zeros_like(rewards[0]))


def full_return(rewards: th.Tensor, episode_starts: th.Tensor, dones: th.Tensor, gamma: float) -> th.Tensor:
    """G(τ) = Σ_{k=t0..t1} γ^{k−t0} r_k, the same for every step of the episode."""
    to_go = reward_to_go(rewards, dones, gamma)
    out = th.empty_like(to_go)
    current = to_go[0]
    for t in range(to_go.shape[0]):
        current = th.where(episode_starts[t].bool(), to_go[t], current)
        out[t] = current
    return out


def td_target(
    rewards: th.Tensor, values: th.Tensor, dones: th.Tensor, last_values: th.Tensor, gamma: float
) -> th.Tensor:
    """r_t + γ V_{t+1} (1 − done_t), with V_T = ``last_values``."""
    next_values = th.cat([values[1:], last_values.reshape(1, -1)], dim=0)
    return rewards + gamma * next_values * (1.0 - dones)


def nstep_return(
    rewards: th.Tensor,
    values: th.Tensor,
    dones: th.Tensor,
    last_values: th.Tensor,
    gamma: float,
    n: int | None,
) -> th.Tensor:
    """G_t^(m) = Σ_{k<m} γ^k r_{t+k} + γ^m V_{t+m} [no episode end in between].

    m = min(n, steps to the episode's end or the rollout's end); ``n=None`` runs to the rollout's
    end (A3C's forward view), which is the backward recursion bootstrapped from ``last_values``.
    """
    horizon = rewards.shape[0]
    if n is None or n >= horizon:
        return discounted_reward_to_go(rewards, dones, gamma, last_values)
    next_values = th.cat([values[1:], last_values.reshape(1, -1)], dim=0)  # V_{t+1}
    out = th.zeros_like(rewards)
    alive = th.ones_like(rewards)  # no episode end among steps t .. t+k-1
    discount = 1.0
    for k in range(n):
        steps = horizon - k  # the t whose step t+k lies inside the rollout
        r_k, d_k, v_k = rewards[k:], dones[k:], next_values[k:]
        out[:steps] += discount * alive[:steps] * r_k
        last = k == n - 1
        # Bootstrap where this is the m-th step: the n-th, or the rollout's last (t + k = T − 1).
        ends = th.zeros_like(rewards[:steps]) if not last else th.ones_like(rewards[:steps])
        ends[-1] = 1.0
        out[:steps] += discount * gamma * alive[:steps] * (1.0 - d_k) * ends * v_k
        alive[:steps] = alive[:steps] * (1.0 - d_k)
        discount *= gamma
    return out


def gae_advantage(
    rewards: th.Tensor,
    values: th.Tensor,
    dones: th.Tensor,
    last_values: th.Tensor,
    gamma: float,
    gae_lambda: float,
) -> th.Tensor:
    """Σ_l (γλ)^l δ_{t+l}, stopping at episode ends (Schulman et al. 2016), as SB3 computes it."""
    next_values = th.cat([values[1:], last_values.reshape(1, -1)], dim=0)
    next_non_terminal = 1.0 - dones
    deltas = rewards + gamma * next_values * next_non_terminal - values
    return _backward_recursion(deltas, gamma * gae_lambda * next_non_terminal, th.zeros_like(last_values))
