"""SB3's actor-critic forward as the ops its modules run, called directly instead of through module calls.

An ``nn.Module`` call costs as much Python as a small layer's arithmetic: SB3's MLP policy calls
fifteen modules per forward (the flatten extractor and its ``nn.Flatten``, the ``MlpExtractor``, its
two ``Sequential`` stacks and their layers, the two heads). Where those modules are SB3's and torch's
own classes and calling them would run their ``forward`` and nothing else
(:class:`pgplug.fast.torch_internals.ModuleCalls`: no hooks, not compiled), the functions here run
the very same ops (``preprocess_obs`` and ``flatten``, ``F.linear``, ``tanh``, ``relu``) in the same
order: the same values and the same autograd graph, so the update may differentiate them. Anything
else is called as SB3 calls it.
"""

from __future__ import annotations

import weakref
from typing import Any, NamedTuple

import torch as th
import torch.nn.functional as F
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.preprocessing import preprocess_obs
from stable_baselines3.common.torch_layers import FlattenExtractor, MlpExtractor

from pgplug.contracts.rollout import Observation
from pgplug.fast.torch_internals import ModuleCalls, child_modules, linear_parameters

#: The layer classes whose forward is one op that :func:`logits_and_values` runs itself.
_LAYERS = frozenset((th.nn.Linear, th.nn.Tanh, th.nn.ReLU))


def extract_features(policy: ActorCriticPolicy, obs: Observation) -> th.Tensor | tuple[th.Tensor, th.Tensor]:
    """``policy.extract_features(obs)``: for SB3's own method over a shared ``FlattenExtractor``,
    ``preprocess_obs`` then ``nn.Flatten``'s ``flatten``, the ops SB3 runs."""
    if type(policy).extract_features is ActorCriticPolicy.extract_features and policy.share_features_extractor:
        extractor = child_modules(policy).get("features_extractor")
        if type(extractor) is FlattenExtractor:
            flatten = child_modules(extractor).get("flatten")
            if type(flatten) is th.nn.Flatten and _calls(extractor, flatten).forward_only():
                features = preprocess_obs(obs, policy.observation_space, normalize_images=policy.normalize_images)
                return features.flatten(flatten.start_dim, flatten.end_dim)
    return policy.extract_features(obs)


#: Per features extractor: its flatten module and their calls.
_extractors: weakref.WeakKeyDictionary[th.nn.Module, tuple[th.nn.Module, ModuleCalls]] = weakref.WeakKeyDictionary()


def _calls(extractor: th.nn.Module, flatten: th.nn.Module) -> ModuleCalls:
    cached = _extractors.get(extractor)
    if cached is None or cached[0] is not flatten:
        cached = _extractors[extractor] = (flatten, ModuleCalls((extractor, flatten)))
    return cached[1]


def latents(policy: ActorCriticPolicy, obs: Observation) -> tuple[th.Tensor, th.Tensor]:
    """The actor's and the critic's latent codes, as ``ActorCriticPolicy.forward`` computes them."""
    features = extract_features(policy, obs)
    if policy.share_features_extractor:
        return policy.mlp_extractor(features)
    return policy.mlp_extractor.forward_actor(features[0]), policy.mlp_extractor.forward_critic(features[1])


class MlpModules(NamedTuple):
    """SB3's own MLP extractor and heads of a policy, as the modules its forward calls."""

    extractor: MlpExtractor
    actor: tuple[th.nn.Module, ...]  # the layers of ``mlp_extractor.policy_net``
    critic: tuple[th.nn.Module, ...]  # the layers of ``mlp_extractor.value_net``
    action_net: th.nn.Linear
    value_net: th.nn.Linear


#: Per policy: the modules its MLP was last read as, what they are (None: not SB3's plain MLP), and their calls.
_mlps: weakref.WeakKeyDictionary[th.nn.Module, tuple[tuple[Any, ...], MlpModules | None, ModuleCalls]] = (
    weakref.WeakKeyDictionary()
)


def mlp_modules(policy: ActorCriticPolicy) -> MlpModules | None:
    """``policy``'s MLP when it is SB3's ``MlpExtractor`` of plain ``Linear``/``Tanh``/``ReLU`` stacks with
    ``Linear`` heads, and calling each of those modules would run its forward and nothing else; else None.

    The modules are looked up at every call (a layer replaced since is never missed, and the same
    modules give the same :class:`MlpModules` object), and so are their hooks.
    """
    extractor, action_net, value_net = map(child_modules(policy).get, ("mlp_extractor", "action_net", "value_net"))
    if type(extractor) is not MlpExtractor:
        return None
    pi, vf = map(child_modules(extractor).get, ("policy_net", "value_net"))
    if type(pi) is not th.nn.Sequential or type(vf) is not th.nn.Sequential:
        return None
    actor, critic = tuple(child_modules(pi).values()), tuple(child_modules(vf).values())
    modules = (extractor, pi, vf, actor, critic, action_net, value_net)
    cached = _mlps.get(policy)
    if cached is None or cached[0] != modules:  # nn.Module's == is identity
        plain = type(action_net) is type(value_net) is th.nn.Linear and _LAYERS.issuperset(map(type, actor + critic))
        mlp = MlpModules(extractor, actor, critic, action_net, value_net) if plain else None
        calls = ModuleCalls((extractor, pi, vf, *actor, *critic, action_net, value_net))
        cached = _mlps[policy] = (modules, mlp, calls)
    return cached[1] if cached[1] is not None and cached[2].forward_only() else None


def logits_and_values(policy: ActorCriticPolicy, obs: Observation) -> tuple[th.Tensor, th.Tensor]:
    """``action_net(latent_pi)`` and ``value_net(latent_vf)``, as ``ActorCriticPolicy.forward`` computes them
    (for a categorical policy, the logits)."""
    features = extract_features(policy, obs)
    mlp = mlp_modules(policy)
    if mlp is None:
        if policy.share_features_extractor:
            latent_pi, latent_vf = policy.mlp_extractor(features)
        else:
            latent_pi = policy.mlp_extractor.forward_actor(features[0])
            latent_vf = policy.mlp_extractor.forward_critic(features[1])
        return policy.action_net(latent_pi), policy.value_net(latent_vf)
    pi_features, vf_features = (features, features) if policy.share_features_extractor else features
    latent_pi, latent_vf = _run(mlp.actor, pi_features), _run(mlp.critic, vf_features)  # SB3's order of ops
    return F.linear(latent_pi, *linear_parameters(mlp.action_net)), F.linear(
        latent_vf, *linear_parameters(mlp.value_net)
    )


def _run(layers: tuple[th.nn.Module, ...], x: th.Tensor) -> th.Tensor:
    """The layers' forwards, as ``nn.Linear``, ``nn.Tanh`` and ``nn.ReLU`` compute them."""
    for layer in layers:
        kind = type(layer)
        if kind is th.nn.Linear:
            x = F.linear(x, *linear_parameters(layer))
        elif kind is th.nn.Tanh:
            x = th.tanh(x)
        else:
            x = F.relu(x, inplace=layer.inplace)
    return x
