"""Time-major rollouts and the lean loop that collects them from an SB3 ``VecEnv``.

One collector serves every algorithm (REINFORCE, A2C and each A3C worker). It does what SB3's
``OnPolicyAlgorithm.collect_rollouts`` does, with the same random draws, but leaner: the policy runs
under ``torch.inference_mode``; each step is written once into preallocated buffers (the
observation into the row the policy reads, the forward's actions, values and log-probs with one
``cat`` per field per rollout); torch.distributions' argument checks are off around the forward passes; only
the infos of the envs whose episode ended are visited; and ``learn()`` without callbacks skips the
per-step callback protocol, which nothing would receive. For policies with a real feature
extractor (a CNN), the forward passes are instead recorded with their autograd graph, which the
update then differentiates rather than running the network again (:mod:`pgplug.rollout_graph`).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.distributions import CategoricalDistribution
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy
from stable_baselines3.common.torch_layers import MlpExtractor
from stable_baselines3.common.vec_env import VecEnv

from pgplug.rollout_graph import ROLLOUT_GRAPH, RolloutGraph, can_reuse_rollout_graph

Observation = th.Tensor | dict[str, th.Tensor]
#: A rollout's per-step forward outputs, kept until written: (actions, values, log-probs).
Outputs = tuple[list[th.Tensor], list[th.Tensor], list[th.Tensor]]
_OUTPUT_FIELDS = ("actions", "values", "log_probs")
StepHook = Callable[[dict[str, Any]], bool]


class unchecked_distributions:
    """Turn off torch.distributions' argument validation (pure overhead on the policy's own outputs).

    A class rather than a ``@contextmanager`` generator: it is entered twice per update.
    """

    __slots__ = ("_previous",)

    def __enter__(self) -> None:
        self._previous = th.distributions.Distribution._validate_args
        th.distributions.Distribution._validate_args = False  # what set_default_validate_args(False) sets

    def __exit__(self, *exc_info: object) -> None:
        # Only ever switched back on: with threads overlapping, restoring what each saw on entry could
        # leave the checks off for good.
        if self._previous:
            th.distributions.Distribution._validate_args = True


def obs_to_tensor(obs: np.ndarray | dict[str, np.ndarray], device: th.device) -> Observation:
    if isinstance(obs, dict):
        return {key: th.as_tensor(value, device=device) for key, value in obs.items()}
    return th.as_tensor(obs, device=device)


def sample_categorical(logits: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
    """Actions and log-probs drawn as ``Categorical(logits=logits)``'s ``sample()`` and ``log_prob()`` do.

    The same random draws, without building a torch.distributions object at every step (most of a
    small policy's forward time):

    - the normalised logits come from one fused ``log_softmax`` rather than ``Categorical``'s
      ``logits - logsumexp(logits)`` (seven kernels); the two agree to one float32 ulp;
    - the draw is what ``torch.multinomial(probs, 1, True)`` computes for one sample (the
      exponential-race form of the Gumbel-max trick, ``argmax(p / q)`` with ``q ~ Exp(1)``: the same
      generator calls, so the same actions unless a one-ulp difference in ``p`` decides a near-tie),
      minus its argument checks and their two host syncs, which cost more than the draw.
      Non-finite logits are caught by the update's loss check.
    """
    log_pmf = th.log_softmax(logits, dim=-1)
    actions = draw_categorical(log_pmf)
    return actions, categorical_log_prob(log_pmf, actions)


@th.no_grad()
def draw_categorical(log_pmf: th.Tensor) -> th.Tensor:
    """One action per row of normalised logits, drawn as ``torch.multinomial(probs, 1, True)`` draws it."""
    probs = th.softmax(log_pmf, dim=-1).reshape(-1, log_pmf.shape[-1])
    race = th.empty_like(probs).exponential_(1)
    return th.div(probs, race, out=race).argmax(dim=-1).reshape(log_pmf.shape[:-1])


def categorical_log_prob(log_pmf: th.Tensor, actions: th.Tensor) -> th.Tensor:
    """``Categorical.log_prob(actions)`` from normalised logits (``actions``: integer indices)."""
    return log_pmf.gather(-1, actions.unsqueeze(-1)).squeeze(-1)


def categorical_entropy(log_pmf: th.Tensor) -> th.Tensor:
    """``Categorical.entropy()`` from normalised logits (the same formula: −Σ p·max(log p, float min))."""
    p_log_p = th.clamp(log_pmf, min=th.finfo(log_pmf.dtype).min) * th.softmax(log_pmf, dim=-1)
    return -p_log_p.sum(-1)


def runs_sb3_categorical(policy: ActorCriticPolicy, method: str) -> bool:
    """True when ``policy.<method>`` is SB3's own ``ActorCriticPolicy`` code over a plain categorical.

    Then pgplug may run the same ops itself (:meth:`RolloutCollector.act`,
    :func:`pgplug.loss.evaluate_actions`); any other policy is called as it is.
    """
    return (
        getattr(type(policy), method) is getattr(ActorCriticPolicy, method)
        and type(policy)._get_action_dist_from_latent is ActorCriticPolicy._get_action_dist_from_latent
        and type(policy.action_dist) is CategoricalDistribution
        and not policy._forward_hooks
        and not policy._forward_pre_hooks
    )


def latents(policy: ActorCriticPolicy, obs: Observation) -> tuple[th.Tensor, th.Tensor]:
    """The actor's and the critic's latent codes, as ``ActorCriticPolicy.forward`` computes them."""
    features = policy.extract_features(obs)
    if policy.share_features_extractor:
        return policy.mlp_extractor(features)
    return policy.mlp_extractor.forward_actor(features[0]), policy.mlp_extractor.forward_critic(features[1])


_NOT_LISTED: Any = object()
_plain_modules: weakref.WeakKeyDictionary[th.nn.Module, list[th.nn.Module] | None] = weakref.WeakKeyDictionary()


def set_training_mode(policy: BasePolicy, mode: bool) -> None:
    """``policy.set_training_mode(mode)``, the flags set directly when no module overrides ``train()``.

    The recursive ``nn.Module.train`` (with ``Module.__setattr__`` on each module) costs ~35 µs on
    CartPole's MLP policy, and an update switches modes twice; the direct writes cost ~1 µs.
    The module list is taken once per policy (SB3 policies do not grow modules after construction).
    """
    modules = _plain_modules.get(policy, _NOT_LISTED)
    if modules is _NOT_LISTED:
        modules = list(policy.modules())
        plain = type(policy).set_training_mode is BasePolicy.set_training_mode and all(
            type(module).train is th.nn.Module.train for module in modules
        )
        modules = _plain_modules[policy] = modules if plain else None
    if modules is None:
        policy.set_training_mode(mode)
        return
    for module in modules:
        module.__dict__["training"] = mode  # what nn.Module.train assigns, without __setattr__'s checks


_ELEMENTWISE = (th.nn.Tanh, th.nn.ReLU)


class FusedActorCritic:
    """SB3's separate actor and critic MLPs (and heads) run as one MLP with block-diagonal weights.

    The step forward of a small policy is bound by per-op overhead, not arithmetic: one
    ``[h_pi + h_vf]``-wide layer instead of two halves the ops. The weights are rebuilt when an
    update changes a parameter (its version counter moves), so the fused copy never goes stale.
    Only plain ``Linear``/``Tanh``/``ReLU`` stacks of equal depth are fused; others run as they are.
    """

    _cache: weakref.WeakKeyDictionary[th.nn.Module, FusedActorCritic | None] = weakref.WeakKeyDictionary()

    def __init__(self, policy: ActorCriticPolicy, stages: list[tuple[str, Any, Any]]) -> None:
        self.stages = stages  # ("linear", actor Linear, critic Linear) or ("act", module class, None)
        self.params = [p for _, a, c in stages if isinstance(a, th.nn.Linear) for m in (a, c) for p in m.parameters()]
        self.n_logits = policy.action_net.out_features
        self._key: tuple[int, ...] | None = None
        self._layers: list[tuple[th.Tensor, th.Tensor] | type] = []
        self._copies: list[tuple[th.Tensor, th.Tensor]] = []  # (block of a fused weight, the parameter it copies)

    @classmethod
    def of(cls, policy: ActorCriticPolicy) -> FusedActorCritic | None:
        if policy not in cls._cache:
            cls._cache[policy] = cls._build(policy)
        return cls._cache[policy]

    @classmethod
    def _build(cls, policy: ActorCriticPolicy) -> FusedActorCritic | None:
        extractor = policy.mlp_extractor
        if type(extractor) is not MlpExtractor:  # a subclass may compute its latents otherwise
            return None
        pi, vf = extractor.policy_net, extractor.value_net
        if not (
            policy.share_features_extractor and isinstance(pi, th.nn.Sequential) and isinstance(vf, th.nn.Sequential)
        ):
            return None
        if (
            len(pi) != len(vf)
            or not isinstance(policy.action_net, th.nn.Linear)
            or not isinstance(policy.value_net, th.nn.Linear)
        ):
            return None
        stages: list[tuple[str, Any, Any]] = []
        for a, c in zip(pi, vf):
            if type(a) is th.nn.Linear and type(c) is th.nn.Linear and a.bias is not None and c.bias is not None:
                stages.append(("linear", a, c))
            elif type(a) is type(c) and type(a) in _ELEMENTWISE:
                stages.append(("act", type(a), None))
            else:
                return None
        if policy.action_net.bias is None or policy.value_net.bias is None:
            return None
        stages.append(("linear", policy.action_net, policy.value_net))
        return cls(policy, stages)

    def _weights(self) -> list[tuple[th.Tensor, th.Tensor] | type]:
        key = tuple(p._version for p in self.params)
        if key != self._key:
            with th.inference_mode():  # the fused copies are inference tensors: built and refreshed in that mode
                self._refresh(key)
        return self._layers

    def _refresh(self, key: tuple[int, ...]) -> None:
        first = self.params[0]
        if self._copies and (self._copies[0][0].device, self._copies[0][0].dtype) == (first.device, first.dtype):
            for fused, param in self._copies:  # refresh in place: no allocation, no zeroing
                fused.copy_(param)
        else:
            self._assemble()
        self._key = key

    def _assemble(self) -> None:
        """Allocate the fused weights and note which block of them each parameter fills."""
        layers: list[tuple[th.Tensor, th.Tensor] | type] = []
        copies: list[tuple[th.Tensor, th.Tensor]] = []
        split = False  # False while both halves still read the same input
        for kind, a, c in self.stages:
            if kind == "act":
                layers.append(a)
                continue
            weight = (th.block_diag(a.weight, c.weight) if split else th.cat([a.weight, c.weight])).detach()
            bias = th.cat([a.bias, c.bias]).detach()
            rows, cols = a.out_features, a.in_features
            actor_block, critic_block = (weight[:rows, :cols], weight[rows:, cols:]) if split else weight.split(rows)
            copies += [(actor_block, a.weight), (critic_block, c.weight), (bias[:rows], a.bias), (bias[rows:], c.bias)]
            layers.append((weight, bias))
            split = True
        self._layers, self._copies = layers, copies

    def __call__(self, features: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """Logits and values from the features, as ``action_net(latent_pi)`` and ``value_net(latent_vf)``."""
        x = features
        for layer in self._weights():
            if isinstance(layer, tuple):
                x = th.nn.functional.linear(x, *layer)
            else:
                x = th.tanh(x) if layer is th.nn.Tanh else th.relu(x)
        return x[:, : self.n_logits], x[:, self.n_logits :]


def _map(obs: Any, fn: Callable[[Any], Any]) -> Any:
    return {key: fn(value) for key, value in obs.items()} if isinstance(obs, dict) else fn(obs)


@dataclass
class Rollout:
    """``T`` steps of ``N`` envs, time-major, plus what the estimator and the update need."""

    observations: Observation  # [T, N, *obs_shape]
    actions: th.Tensor  # [T, N, *action_shape]
    rewards: th.Tensor  # [T, N], γ·V(terminal obs) added at time-limit truncations
    episode_starts: th.Tensor  # [T, N]
    values: th.Tensor  # [T, N]
    log_probs: th.Tensor  # [T, N]
    last_values: th.Tensor  # [N]
    last_dones: th.Tensor  # [N]
    advantages: th.Tensor | None = None
    returns: th.Tensor | None = None
    mask: th.Tensor | None = None  # [T, N] bool: the steps the update uses (None = all)
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def n_steps(self) -> int:
        return self.rewards.shape[0]

    def fill_estimate(self, estimator: Callable[..., Any], gamma: float) -> Rollout:
        """Set ``advantages`` and ``returns`` from ``estimator`` (a :class:`pgplug.estimator.Estimator`)."""
        estimate = estimator(
            rewards=self.rewards,
            values=self.values,
            episode_starts=self.episode_starts,
            last_values=self.last_values,
            last_dones=self.last_dones,
            gamma=gamma,
        )
        self.advantages, self.returns = estimate.advantages, estimate.returns
        return self

    def flat(self, x: Observation, env_major: bool = False, masked: bool = True) -> Observation:
        """``[T, N, ...]`` → ``[T·N, ...]``, keeping only masked steps when a mask is set (and ``masked``).

        ``env_major`` orders the steps env by env (``[N·T, ...]``): whole sequences, as recurrent
        policies evaluate them.
        """

        def flatten(v: th.Tensor) -> th.Tensor:
            if env_major:
                v = v.transpose(0, 1)
            v = v.reshape(-1, *v.shape[2:])
            if self.mask is None or not masked:
                return v
            mask = self.mask.transpose(0, 1) if env_major else self.mask
            return v[mask.reshape(-1)]

        return _map(x, flatten)


def empty_rows(capacity: int, x: np.ndarray) -> np.ndarray:
    """An empty ``[capacity, *x.shape]`` array whose rows have the memory layout of ``x``.

    SB3's VecTransposeImage hands out channels-first views of channels-last frames: keeping that
    layout makes each write a plain copy and feeds the CNN channels-last batches (faster on CPU).
    """
    order = sorted(range(x.ndim), key=lambda axis: -x.strides[axis])  # outermost axis first
    base = np.empty((capacity, *(x.shape[axis] for axis in order)), dtype=x.dtype)
    return base.transpose(0, *(1 + order.index(axis) for axis in range(x.ndim)))


class _Buffers:
    """Preallocated ``[capacity, N, ...]`` numpy arrays, each with a CPU tensor sharing its memory.

    Steps are written through the numpy arrays: a numpy row assignment costs a fraction of a torch
    ``tensor[t] = x``, and nothing is allocated per step (nor, on CPU, per rollout).
    """

    names = ("observations", "actions", "rewards", "episode_starts", "values", "log_probs")

    def __init__(self, capacity: int, obs: Any, action_space: spaces.Space) -> None:
        n = len(next(iter(obs.values())) if isinstance(obs, dict) else obs)
        # The dtypes SB3's distributions sample: integer indices for (Multi)Discrete, floats otherwise.
        integer = isinstance(action_space, (spaces.Discrete, spaces.MultiDiscrete))
        self.capacity = capacity
        self.action_space = action_space
        self.np: dict[str, Any] = {
            "observations": _map(obs, lambda x: empty_rows(capacity, np.asarray(x))),
            "actions": np.empty((capacity, n, *action_space.shape), np.int64 if integer else np.float32),
            **{name: np.empty((capacity, n), np.float32) for name in self.names[2:]},
            "last_values": np.empty(n, np.float32),
            "last_dones": np.empty(n, np.float32),
        }
        self.tensors: dict[str, Any] = {name: _map(array, th.from_numpy) for name, array in self.np.items()}
        #: Row t of the observation buffer as a tensor, made once (indexing a tensor costs a microsecond or two).
        self.obs_rows = [_map(self.tensors["observations"], lambda x, t=t: x[t]) for t in range(capacity)]
        self._cpu_fields: tuple[int, dict[str, Any]] | None = None
        self._last_values_column = self.tensors["last_values"].view(-1, 1)
        self._output_rows: dict[str, tuple[Any, Any]] = dict.fromkeys(_OUTPUT_FIELDS, (None, None))

    def write_outputs(self, start: int, outputs_by_field: Outputs) -> None:
        """Write the forward's per-step actions, values and log-probs into rows ``start, start + 1, ...``.

        One ``cat`` per field into the rows viewed as ``[steps·N, ...]`` (a ``stack`` is that ``cat`` plus a
        view per step).
        """
        for name, outputs in zip(_OUTPUT_FIELDS, outputs_by_field):
            if not outputs:
                continue
            first = outputs[0]
            key = (start, len(outputs), first.shape)
            cached_key, rows = self._output_rows[name]
            if cached_key != key:  # made once for A2C, whose rollouts all start at 0 and have n_steps rows
                rows = self.tensors[name][start : start + len(outputs)]
                rows = rows.view(len(outputs) * first.shape[0], *first.shape[1:])
                self._output_rows[name] = (key, rows)
            if first.is_cpu and first.dtype is rows.dtype:
                th.cat(outputs, out=rows)
            else:
                rows.copy_(th.cat(outputs).reshape(rows.shape))

    def write_last_values(self, values: th.Tensor) -> None:
        """Write V(last obs), shaped ``[N]`` or ``[N, 1]`` (as ``predict_values`` gives it)."""
        last_values = self.tensors["last_values"]
        (last_values if values.dim() == 1 else self._last_values_column).copy_(values)

    def fields(self, steps: int, device: th.device) -> dict[str, Any]:
        """The :class:`Rollout` fields over the first ``steps`` rows, on ``device``."""
        if device.type != "cpu":  # the one copy per rollout to an accelerator
            return {name: _map(tensor, lambda x: x.to(device)) for name, tensor in self._views(steps).items()}
        if self._cpu_fields is None or self._cpu_fields[0] != steps:  # CPU views live as long as the buffers
            self._cpu_fields = (steps, self._views(steps))
        return self._cpu_fields[1]

    def _views(self, steps: int) -> dict[str, Any]:
        views = {name: _map(self.tensors[name], lambda x: x[:steps]) for name in self.names}
        return {**views, "last_values": self.tensors["last_values"], "last_dones": self.tensors["last_dones"]}

    def grown(self, capacity: int) -> _Buffers:
        """A copy with room for ``capacity`` steps (for collections of unknown length)."""
        bigger = _Buffers(capacity, _map(self.np["observations"], lambda x: x[0]), self.action_space)
        for name in self.names:
            old, new = self.np[name], bigger.np[name]
            if isinstance(old, dict):
                for key in old:
                    new[key][: self.capacity] = old[key]
            else:
                new[: self.capacity] = old
        return bigger


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
        self._buffers: _Buffers | None = None
        #: Env steps (per env) the last ``collect`` took, kept up to date should it be interrupted.
        self.env_steps_taken = 0
        #: Keep each step's forward pass with its autograd graph for the update (pgplug.rollout_graph): asked
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

    @classmethod
    def for_policy(cls, policy: BasePolicy, env: VecEnv, gamma: float, **kwargs: Any) -> RolloutCollector:
        """The collector that fits ``policy``: the recurrent one for sb3-contrib's LSTM policies."""
        from pgplug.recurrent import RecurrentRolloutCollector, is_recurrent

        collector_class = RecurrentRolloutCollector if is_recurrent(policy) else cls
        return collector_class(policy, env, gamma, **kwargs)

    def _buffers_for(self, step: int, n_steps: int | None) -> _Buffers:
        buffers = self._buffers
        # One row more than the steps: the observation after the last step goes there for V(last obs).
        if buffers is None:
            buffers = _Buffers(max((n_steps or 0) + 1, 64), self.last_obs, self.policy.action_space)
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

    def _write_obs(self, buffers: _Buffers, step: int) -> Observation:
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
