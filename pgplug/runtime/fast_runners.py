"""The fast runners: the reference runners' jobs done with pgplug's speed paths, where each is proven equal.

Every speed path of pgplug is here, composed from the pieces in :mod:`pgplug.fast`:

- collection under ``torch.inference_mode`` with torch.distributions' argument checks off, SB3's separate
  actor and critic MLPs run as one block-diagonal MLP (:mod:`pgplug.fast.fused_mlp`) and categorical
  actions drawn without distribution objects (:mod:`pgplug.fast.categorical`), the same random draws;
- SB3's flatten extractor, MLP stacks and heads run as their ops without module calls
  (:mod:`pgplug.fast.direct_forward`), in collection and in the update;
- the update differentiating the rollout's own forward passes for CNN policies (:mod:`pgplug.fast.rollout_graph`);
- a small fused MLP's step forward in numpy, whose calls cost a fraction of torch's
  (:meth:`FusedActorCritic.numpy_forward <pgplug.fast.fused_mlp.FusedActorCritic.numpy_forward>`), equal up to
  float32 rounding;
- training-mode flags set directly, gradient clipping and the optimizer step without ``Optimizer.step``'s
  wrappers (:mod:`pgplug.fast.optim`), bitwise the same; for a small policy on flat buffers
  (:mod:`pgplug.fast.flat_update`), bitwise the same;
- ``predict`` without argument checks or the recursive ``train(False)`` (:mod:`pgplug.fast.predict`);
- ``precision="bf16"``: the policy's body under bfloat16 autocast on channels-last images, its heads and
  distributions in float32 (:class:`Bf16Runner`, :mod:`pgplug.fast.precision`);
- envs stepped in the process without ``DummyVecEnv``'s deep copies of every step's infos and observations
  (:class:`LeanDummyVecEnv`, which :func:`pgplug.runtime.runners.vec_env_class` hands to the env builder).

Each piece engages only for the configurations it is written for (SB3's own modules and methods, no
hooks) and otherwise calls what the reference runner calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.distributions import CategoricalDistribution
from stable_baselines3.common.policies import ActorCriticPolicy

from pgplug.contracts.objective import PolicyEvaluation, UpdateBatch
from pgplug.contracts.rollout import Observation, Rollout
from pgplug.fast import optim
from pgplug.fast.categorical import (
    categorical_entropy,
    categorical_log_prob,
    draw_categorical,
    runs_sb3_categorical,
    sample_categorical,
    sample_categorical_array,
)
from pgplug.fast.direct_forward import extract_features, latents, logits_and_values
from pgplug.fast.flat_update import FlatUpdate
from pgplug.fast.fused_mlp import FusedActorCritic
from pgplug.fast.lean_vec_env import LeanDummyVecEnv as LeanDummyVecEnv  # chosen by runners.vec_env_class
from pgplug.fast.precision import bf16_latents
from pgplug.fast.precision import runs_sb3_actor_critic as runs_sb3_actor_critic  # checked by runners.runner_for
from pgplug.fast.predict import predict
from pgplug.fast.rollout_graph import RolloutGraph, can_reuse_rollout_graph
from pgplug.fast.torch_internals import set_training_mode, tensor_versions, unchecked_distributions
from pgplug.runtime.policy_runner import PolicyRunner, StepOutputs, outside_graph_unless, update_batch
from pgplug.runtime.recurrent import RecurrentRunner


class FastUpdates:
    """The update's and ``predict``'s speed paths, shared by the feed-forward and the recurrent fast runner."""

    fast = True
    policy: Any
    _flat: FlatUpdate | None = None

    def flat_update(self) -> FlatUpdate:
        """The flat gradient and optimizer buffers of this runner's updates (:mod:`pgplug.fast.flat_update`)."""
        if self._flat is None:
            self._flat = FlatUpdate()
        return self._flat

    def set_training_mode(self, mode: bool) -> None:
        set_training_mode(self.policy, mode)

    def clip_grad_norm(self, params: list[th.nn.Parameter], max_norm: float) -> None:
        optim.clip_grad_norm(params, max_norm, self.flat_update())

    def optimizer_step(self, optimizer: th.optim.Optimizer, grads: Sequence[th.Tensor | None] | None = None) -> None:
        optim.optimizer_step(optimizer, grads, self.flat_update())

    def predict(
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[Any, tuple[np.ndarray, ...] | None]:
        return predict(self.policy, observation, state, episode_start, deterministic)


class FastRunner(FastUpdates, PolicyRunner):
    """The feed-forward fast runner.

    :param keep_graph: record the rollout's forward passes with their autograd graph so that the update
        differentiates them instead of running the policy again; asked for by algorithms that make one
        gradient step per rollout, on the weights that collected it, and done where the policy allows it
    """

    def __init__(self, policy: ActorCriticPolicy, keep_graph: bool = False) -> None:
        super().__init__(policy)
        self.keep_graph = keep_graph and can_reuse_rollout_graph(policy)
        self._graph_steps: list[tuple[th.Tensor, th.Tensor, th.Tensor | None]] = []
        #: The rollout whose forward passes were kept, the weights' versions then, and the passes.
        self._graph: tuple[Rollout, list[int] | None, RolloutGraph] | None = None
        self._params = list(policy.parameters())

    # -- collection ----------------------------------------------------------------------------

    def begin_rollout(self, n_envs: int) -> None:
        self._graph_steps = []

    def act(self, obs: Observation, episode_starts: np.ndarray) -> StepOutputs:
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
                features = extract_features(policy, obs)
                if fused.runs_in_numpy(features):
                    logits_array, values_array = fused.numpy_forward(features.numpy())
                    actions, log_probs = sample_categorical_array(logits_array)
                    return actions, th.from_numpy(values_array), log_probs
                logits, values = fused(features)
            else:
                logits, values = logits_and_values(policy, obs)
            actions, log_probs = sample_categorical(logits)
            return actions, values, log_probs

    def _act_keeping_graph(self, obs: Observation) -> StepOutputs:
        """``policy(obs)`` with autograd on; the actions are drawn outside the graph (as constants)."""
        policy = self.policy
        if type(policy.action_dist) is CategoricalDistribution:
            logits, values = logits_and_values(policy, obs)
            log_pmf = th.log_softmax(logits, dim=-1)
            actions = draw_categorical(log_pmf.detach())
            log_probs = categorical_log_prob(log_pmf, actions)
            entropy: th.Tensor | None = categorical_entropy(log_pmf)
        else:
            latent_pi, latent_vf = latents(policy, obs)
            values = policy.value_net(latent_vf)
            with unchecked_distributions():
                distribution = policy._get_action_dist_from_latent(latent_pi)
                actions = distribution.get_actions().detach()
                log_probs, entropy = distribution.log_prob(actions), distribution.entropy()
                actions = actions.reshape((-1, *policy.action_space.shape))
        self._graph_steps.append((values.flatten(), log_probs, entropy))
        return actions, values.detach(), log_probs.detach()

    def values(self, obs: Observation, episode_starts: np.ndarray | None = None, env_index: int | None = None):
        """V(obs); after the rollout through the step forward's fused MLP where there is one (half the ops of
        SB3's ``predict_values``), so V(last obs) is computed as the rollout's values were."""
        policy = self.policy
        with th.inference_mode():
            if (
                env_index is None
                and type(policy).predict_values is ActorCriticPolicy.predict_values
                # predict_values runs BasePolicy.extract_features, which the fused path's extract_features is
                and type(policy).extract_features is ActorCriticPolicy.extract_features
            ):
                fused = FusedActorCritic.of(policy)
                if fused is not None:
                    features = extract_features(policy, obs)
                    if fused.runs_in_numpy(features):
                        return th.from_numpy(fused.numpy_forward(features.numpy())[1])
                    return fused(features)[1]
            return policy.predict_values(obs)

    def end_rollout(self, rollout: Rollout | None) -> None:
        if rollout is not None and self._graph_steps:
            # [T, N] from the step's forward passes: one per step, or one per group of envs and step, in that order
            n_envs = rollout.last_values.shape[0]

            def time_major(parts: tuple[th.Tensor, ...]) -> th.Tensor:
                return th.cat(parts).view(-1, n_envs)

            values, log_probs, entropies = zip(*self._graph_steps)
            entropy = None if entropies[0] is None else time_major(entropies)
            graph = RolloutGraph(time_major(values), time_major(log_probs), entropy)
            self._graph = (rollout, tensor_versions(self._params), graph)
        self._graph_steps = []

    # -- update --------------------------------------------------------------------------------

    def evaluate_rollout(self, rollout: Rollout, differentiate_entropy: bool) -> UpdateBatch:
        """The rollout's own forward passes if this runner kept them for it and the weights have not changed since
        (once: after an optimizer step they would be stale); otherwise the policy, run with the categorical formulas
        where they apply."""
        kept, self._graph = self._graph, None
        flat = rollout.flat
        if kept is not None and kept[0] is rollout and kept[1] is not None and kept[1] == tensor_versions(self._params):
            graph = kept[2]
            entropy = None if graph.entropy is None else flat(graph.entropy)
            evaluation = PolicyEvaluation(
                flat(graph.values), flat(graph.log_probs), outside_graph_unless(differentiate_entropy, entropy)
            )
            return update_batch(rollout, evaluation)
        observations, actions = flat(rollout.observations), flat(rollout.actions)
        policy = self.policy
        with unchecked_distributions():
            if not runs_sb3_categorical(policy, "evaluate_actions"):
                values, log_prob, entropy = policy.evaluate_actions(observations, actions)
                evaluation = PolicyEvaluation(
                    values.flatten(), log_prob, outside_graph_unless(differentiate_entropy, entropy)
                )
                return update_batch(rollout, evaluation)
            logits, values = logits_and_values(policy, observations)
            evaluation = categorical_evaluation(logits, values, actions, differentiate_entropy)
        return update_batch(rollout, evaluation)


def categorical_evaluation(
    logits: th.Tensor, values: th.Tensor, actions: th.Tensor, differentiate_entropy: bool
) -> PolicyEvaluation:
    """``evaluate_actions``' values, log-probs and entropy from a categorical policy's logits and values."""
    # Categorical's logits − logsumexp, in one kernel (see pgplug.fast.categorical.sample_categorical)
    log_pmf = th.log_softmax(logits, dim=-1)
    log_prob = categorical_log_prob(log_pmf, actions.long())
    # Only logged when the loss does not differentiate it: kept out of the graph, and so out of backward.
    with th.set_grad_enabled(differentiate_entropy and th.is_grad_enabled()):
        entropy = categorical_entropy(log_pmf)
    return PolicyEvaluation(values.flatten(), log_prob, entropy)


class Bf16Runner(FastRunner):
    """The fast runner with the policy's body in bfloat16 (``precision="bf16"``, :mod:`pgplug.fast.precision`).

    The rollout's step forwards and V(s) run under inference mode, the update evaluates the whole rollout in
    one batch: keeping the rollout's graph (:mod:`pgplug.fast.rollout_graph`) was slower in bfloat16, whose
    convolutions gain most at the update's larger batch (``benchmarks/precision.py``). ``predict`` stays
    float32, so a model predicts alike on every CPU. Only for policies whose forward passes are SB3's own
    (:func:`runs_sb3_actor_critic`): :func:`pgplug.runtime.runners.runner_for` refuses others.
    """

    def __init__(self, policy: ActorCriticPolicy) -> None:
        super().__init__(policy, keep_graph=False)

    def act(self, obs: Observation, episode_starts: np.ndarray) -> StepOutputs:
        policy = self.policy
        with th.inference_mode(), unchecked_distributions():
            latent_pi, latent_vf = bf16_latents(policy, obs)
            values = policy.value_net(latent_vf)
            if type(policy.action_dist) is CategoricalDistribution:
                actions, log_probs = sample_categorical(policy.action_net(latent_pi))
                return actions, values, log_probs
            distribution = policy._get_action_dist_from_latent(latent_pi)
            actions = distribution.get_actions()
            log_probs = distribution.log_prob(actions)
            return actions.reshape((-1, *policy.action_space.shape)), values, log_probs

    def values(self, obs: Observation, episode_starts: np.ndarray | None = None, env_index: int | None = None):
        with th.inference_mode():
            return self.policy.value_net(bf16_latents(self.policy, obs)[1])

    def evaluate_rollout(self, rollout: Rollout, differentiate_entropy: bool) -> UpdateBatch:
        flat, policy = rollout.flat, self.policy
        observations, actions = flat(rollout.observations), flat(rollout.actions)
        latent_pi, latent_vf = bf16_latents(policy, observations)
        values = policy.value_net(latent_vf)
        if type(policy.action_dist) is CategoricalDistribution:
            return update_batch(
                rollout, categorical_evaluation(policy.action_net(latent_pi), values, actions, differentiate_entropy)
            )
        with unchecked_distributions():
            distribution = policy._get_action_dist_from_latent(latent_pi)
            log_prob, entropy = distribution.log_prob(actions), distribution.entropy()
        evaluation = PolicyEvaluation(values.flatten(), log_prob, outside_graph_unless(differentiate_entropy, entropy))
        return update_batch(rollout, evaluation)


class FastRecurrentRunner(FastUpdates, RecurrentRunner):
    """The recurrent fast runner: sb3-contrib's forward passes, under inference mode and without argument checks."""

    def act(self, obs: Observation, episode_starts: np.ndarray) -> StepOutputs:
        with th.inference_mode(), unchecked_distributions():
            return super().act(obs, episode_starts)

    def evaluate_rollout(self, rollout: Rollout, differentiate_entropy: bool) -> UpdateBatch:
        with unchecked_distributions():
            return super().evaluate_rollout(rollout, differentiate_entropy)
