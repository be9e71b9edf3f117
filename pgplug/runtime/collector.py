"""The lean loop that collects time-major rollouts from an SB3 ``VecEnv``.

One collector serves every algorithm (REINFORCE, A2C and each A3C worker). It does what SB3's
``OnPolicyAlgorithm.collect_rollouts`` does, with the same random draws, but leaner: the policy runs
under ``torch.inference_mode``; each step is written once into preallocated buffers (the
observation into the row the policy reads, the forward's actions, values and log-probs with one
``cat`` per field per rollout); torch.distributions' argument checks are off around the forward passes; only
the infos of the envs whose episode ended are visited; and ``learn()`` without callbacks skips the
per-step callback protocol, which nothing would receive. For policies with a real feature
extractor (a CNN), the forward passes are instead recorded with their autograd graph, which the
update then differentiates rather than running the network again (:mod:`pgplug.fast.rollout_graph`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.distributions import CategoricalDistribution
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.vec_env import VecEnv

from pgplug.contracts.rollout import Observation, Rollout
from pgplug.contracts.rollout import map_observation as _map
from pgplug.fast.categorical import (
    categorical_entropy,
    categorical_log_prob,
    draw_categorical,
    latents,
    runs_sb3_categorical,
    sample_categorical,
)
from pgplug.fast.fused_mlp import FusedActorCritic
from pgplug.fast.rollout_graph import ROLLOUT_GRAPH, RolloutGraph, can_reuse_rollout_graph
from pgplug.fast.torch_internals import set_training_mode, unchecked_distributions
from pgplug.runtime.buffers import Buffers, Outputs

StepHook = Callable[[dict[str, Any]], bool]


def obs_to_tensor(obs: np.ndarray | dict[str, np.ndarray], device: th.device) -> Observation:
    if isinstance(obs, dict):
        return {key: th.as_tensor(value, device=device) for key, value in obs.items()}
    return th.as_tensor(obs, device=device)


class RolloutCollector:
    """Steps ``env`` with ``policy`` and records time-major rollouts.

    Keeps the last observation and episode-start flags between rollouts, like SB3's
    ``_last_obs`` / ``_last_episode_starts``; algorithms read and set them through the attributes.
    The returned :class:`Rollout` views buffers that the next ``collect`` overwrites.
    """

    def __init__(
        self,
        policy: ActorCriticPolicy,
        env: VecEnv,
        gamma: float,
        bootstrap_truncation: bool = True,
        sde_sample_freq: int = -1,
        keep_graph: bool = False,
    ) -> None:
        self.policy = policy
        self.env = env
        self.gamma = gamma
        self.bootstrap_truncation = bootstrap_truncation
        self.sde_sample_freq = sde_sample_freq
        self.n_envs = env.num_envs
        self.device = policy.device
        self._on_cpu = self.device.type == "cpu"
        self.last_obs: np.ndarray | dict[str, np.ndarray] | None = None
        self.last_episode_starts = np.ones(self.n_envs, dtype=bool)
        self._buffers: Buffers | None = None
        #: Env steps (per env) the last ``collect`` took, kept up to date should it be interrupted.
        self.env_steps_taken = 0
        #: Keep each step's forward pass with its autograd graph for the update (pgplug.fast.rollout_graph): asked
        #: for by algorithms that update once per rollout, done where the policy allows it.
        self.keep_graph = keep_graph and can_reuse_rollout_graph(policy)
        self._graph_steps: list[tuple[th.Tensor, th.Tensor, th.Tensor | None]] = []

    def act(self, obs: Observation) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """Sampled actions, values and log-probs of the policy at ``obs``, as ``policy(obs)`` returns them.

        With ``keep_graph`` the differentiable outputs are also kept for the update.
        """
        policy = self.policy
        if self.keep_graph:
            return self._act_keeping_graph(obs)
        # inference_mode: no autograd graph or version counters for a forward that is never differentiated.
        with th.inference_mode():
            if not runs_sb3_categorical(policy, "forward"):
                with unchecked_distributions():
                    return policy(obs)
            fused = FusedActorCritic.of(policy)
            if fused is not None:
                logits, values = fused(policy.extract_features(obs))
            else:
                latent_pi, latent_vf = latents(policy, obs)
                logits, values = policy.action_net(latent_pi), policy.value_net(latent_vf)
            actions, log_probs = sample_categorical(logits)
            return actions, values, log_probs

    def _act_keeping_graph(self, obs: Observation) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """``policy(obs)`` with autograd on; the actions are drawn outside the graph (as constants)."""
        policy = self.policy
        latent_pi, latent_vf = latents(policy, obs)
        values = policy.value_net(latent_vf)
        if type(policy.action_dist) is CategoricalDistribution:
            log_pmf = th.log_softmax(policy.action_net(latent_pi), dim=-1)
            actions = draw_categorical(log_pmf)
            log_probs = categorical_log_prob(log_pmf, actions)
            entropy: th.Tensor | None = categorical_entropy(log_pmf)
        else:
            with unchecked_distributions():
                distribution = policy._get_action_dist_from_latent(latent_pi)
                actions = distribution.get_actions().detach()
                log_probs, entropy = distribution.log_prob(actions), distribution.entropy()
                actions = actions.reshape((-1, *policy.action_space.shape))
        self._graph_steps.append((values.flatten(), log_probs, entropy))
        return actions, values.detach(), log_probs.detach()

    def values_at(self, obs: Observation, env_index: int | None = None) -> th.Tensor:
        """V(obs): of the state after the rollout (all envs), or of env ``env_index``'s terminal observation.

        After the rollout, through the step forward's fused MLP where there is one (half the ops of
        SB3's ``predict_values``), so V(last obs) is computed as the rollout's values were.
        """
        policy = self.policy
        if (
            env_index is None
            and type(policy).predict_values is ActorCriticPolicy.predict_values
            # predict_values runs BasePolicy.extract_features, which the fused path's extract_features is
            and type(policy).extract_features is ActorCriticPolicy.extract_features
        ):
            fused = FusedActorCritic.of(policy)
            if fused is not None:
                return fused(policy.extract_features(obs))[1]
        return policy.predict_values(obs)

    def _buffers_for(self, step: int, n_steps: int | None) -> Buffers:
        buffers = self._buffers
        # One row more than the steps: the observation after the last step goes there for V(last obs).
        if buffers is None:
            buffers = Buffers(max((n_steps or 0) + 1, 64), self.last_obs, self.policy.action_space)
        elif step >= buffers.capacity:
            buffers = buffers.grown(max((n_steps or 0) + 1, 2 * buffers.capacity))
        self._buffers = buffers
        return buffers

    def collect(
        self,
        n_steps: int | None,
        on_step: StepHook | None = None,
        until: Callable[[int, np.ndarray], bool] | None = None,
        max_steps: int = 100_000,
        on_episodes_end: Callable[[list[dict[str, Any]], np.ndarray], None] | None = None,
    ) -> Rollout | None:
        """Collect ``n_steps`` steps per env (or, with ``n_steps=None``, until ``until(t, dones)``).

        ``on_step`` runs after every env step with the step's locals and may return False to
        abort: then ``collect`` returns None, as SB3's ``collect_rollouts`` returns False. Then, at
        a step where episodes ended, ``on_episodes_end`` gets the infos and dones of those envs only
        (SB3's ``_update_info_buffer`` arguments, without visiting every env's info).
        """
        self.env_steps_taken = 0
        assert self.last_obs is not None, "reset the env and set last_obs before collecting"
        policy, env = self.policy, self.env
        set_training_mode(policy, False)
        if policy.use_sde:
            policy.reset_noise(self.n_envs)
        self._graph_steps = []
        limit = n_steps if n_steps is not None else max_steps
        stop_early = until if n_steps is None else None
        resample_noise_every = self.sde_sample_freq if policy.use_sde and self.sde_sample_freq > 0 else 0
        box = isinstance(policy.action_space, spaces.Box)
        low, high = (policy.action_space.low, policy.action_space.high) if box else (None, None)
        buffers = self._buffers
        as_numpy = th.Tensor.numpy if self._on_cpu else lambda x: x.cpu().numpy()
        step = 0
        # The forward's actions, values and log-probs are kept as tensors and written into the buffers
        # once per rollout (one cat per field, instead of a row write per step).
        pending: Outputs = ([], [], [])
        while step < limit:
            if resample_noise_every and step % resample_noise_every == 0:
                policy.reset_noise(self.n_envs)
            if buffers is None or step >= buffers.capacity:
                if buffers is not None:
                    buffers.write_outputs(step - len(pending[0]), pending)
                    pending = ([], [], [])
                buffers = self._buffers_for(step, n_steps)
            # The policy reads the observation from its buffer row: the step's one copy of it.
            obs_row = self._write_obs(buffers, step)
            actions, values, log_probs = self.act(obs_row)
            pending[0].append(actions)
            pending[1].append(values)
            pending[2].append(log_probs)
            # A fresh array each step, as SB3 gives the env and the callbacks (it views the new actions tensor).
            actions_np = as_numpy(actions)
            env_actions = actions_np
            if box:
                if policy.squash_output:
                    env_actions = policy.unscale_action(env_actions)
                else:
                    env_actions = np.clip(actions_np, low, high)
            new_obs, rewards, dones, infos = env.step(env_actions)
            self.env_steps_taken = step + 1
            if on_step is not None and not on_step(
                {
                    "new_obs": new_obs,
                    "rewards": rewards,
                    "dones": dones,
                    "infos": infos,
                    "actions": actions_np,
                    "clipped_actions": env_actions,
                    "values": values,
                    "log_probs": log_probs,
                    "n_steps": step,
                }
            ):
                self._graph_steps = []
                return None
            # count_nonzero: ndarray.any() goes through a Python wrapper, four times the cost.
            if np.count_nonzero(dones):
                ended = np.flatnonzero(dones)
                if on_episodes_end is not None:
                    on_episodes_end([infos[i] for i in ended], dones[ended])
                if self.bootstrap_truncation:
                    rewards = self._bootstrap_truncated(rewards, ended, infos)
            arrays = buffers.np
            arrays["rewards"][step] = rewards
            arrays["episode_starts"][step] = self.last_episode_starts
            self.last_obs = new_obs
            self.last_episode_starts = dones
            step += 1
            if stop_early is not None and stop_early(step, dones):
                break
        assert buffers is not None
        buffers.np["last_dones"][:] = self.last_episode_starts  # the last step's dones
        with th.inference_mode():
            last_obs = (
                self._write_obs(buffers, step) if step < buffers.capacity else obs_to_tensor(self.last_obs, self.device)
            )
            # Written here, where torch's code is still warm in the cache from the forward: microseconds less.
            buffers.write_last_values(self.values_at(last_obs))
            buffers.write_outputs(step - len(pending[0]), pending)
        rollout = Rollout(**buffers.fields(step, self.device))
        if self._graph_steps:
            values, log_probs, entropy = zip(*self._graph_steps)
            rollout.extras[ROLLOUT_GRAPH] = RolloutGraph(
                th.stack(values), th.stack(log_probs), None if entropy[0] is None else th.stack(entropy)
            )
            self._graph_steps = []
        return rollout

    def _write_obs(self, buffers: Buffers, step: int) -> Observation:
        """Copy ``last_obs`` into row ``step`` of the observation buffer and return that row for the policy."""
        obs, arrays, row = self.last_obs, buffers.np["observations"], buffers.obs_rows[step]
        if isinstance(obs, dict):
            for key, value in obs.items():
                arrays[key][step] = value
        else:
            arrays[step] = obs
        return row if self._on_cpu else _map(row, lambda x: x.to(self.device))

    def _bootstrap_truncated(self, rewards: np.ndarray, ended: np.ndarray, infos: list[dict]) -> np.ndarray:
        """Add γ·V(terminal observation) to the reward of episodes cut by a time limit (SB3 #633)."""
        truncated = [
            i
            for i in ended
            if infos[i].get("terminal_observation") is not None and infos[i].get("TimeLimit.truncated", False)
        ]
        if not truncated:
            return rewards
        with th.inference_mode():
            # One env at a time, as SB3 does: a batched forward could round differently.
            for i in truncated:
                terminal_obs = self.policy.obs_to_tensor(infos[i]["terminal_observation"])[0]
                rewards[i] += self.gamma * self.values_at(terminal_obs, env_index=i)[0]  # type: ignore[arg-type]
        return rewards
