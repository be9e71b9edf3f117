"""SB3's separate actor and critic MLPs run as one block-diagonal MLP: half the ops of a small policy's step."""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.policies import ActorCriticPolicy

from pgplug.fast.direct_forward import MlpModules, mlp_modules
from pgplug.fast.torch_internals import tensor_versions


class FusedActorCritic:
    """SB3's separate actor and critic MLPs (and heads) run as one MLP with block-diagonal weights.

    The step forward of a small policy is bound by per-op overhead, not arithmetic: one
    ``[h_pi + h_vf]``-wide layer instead of two halves the ops. The weights are rebuilt when an
    update changes a parameter (its version counter moves), so the fused copy never goes stale.
    Only plain ``Linear``/``Tanh``/``ReLU`` stacks of equal depth are fused; others run as they are.

    A small MLP's inference forward may run in numpy (:meth:`numpy_forward`) on views of the same fused weights:
    numpy's per-call cost is a fraction of torch's, and at CartPole's size the calls are the cost.
    """

    #: The most multiply-adds of one layer's product run in numpy: OpenBLAS (numpy's BLAS) splits a product across
    #: threads only above 4 × 65,536, so numpy stays on the calling thread; torch is as fast for larger products.
    NUMPY_MAX_WORK = 262_144

    #: Per policy: the modules it was built from (a policy whose modules are replaced gets a new one), and it.
    _cache: weakref.WeakKeyDictionary[th.nn.Module, tuple[MlpModules, FusedActorCritic | None]] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self, mlp: MlpModules) -> None:
        #: ("linear", actor Linear, critic Linear) or ("act", module class, None), the heads last
        self.stages: list[tuple[str, Any, Any]] = [
            ("linear", a, c) if type(a) is th.nn.Linear else ("act", type(a), None)
            for a, c in zip(mlp.actor, mlp.critic)
        ]
        self.stages.append(("linear", mlp.action_net, mlp.value_net))
        self.params = [p for kind, a, c in self.stages if kind == "linear" for m in (a, c) for p in m.parameters()]
        self.n_logits = mlp.action_net.out_features
        self._key: list[int] | None = None
        self._layers: list[tuple[th.Tensor, th.Tensor] | type] = []
        self._copies: list[tuple[th.Tensor, th.Tensor]] = []  # (block of a fused weight, the parameter it copies)
        #: The fused layers as numpy views (weights transposed, for ``x @ weight``), and the largest one's size.
        self._numpy_layers: list[tuple[np.ndarray, np.ndarray] | type] = []
        linears = [(a, c) for kind, a, c in self.stages if kind == "linear"]
        self._numpy_work = max(
            (a.out_features + c.out_features) * (a.in_features + (c.in_features if i else 0))
            for i, (a, c) in enumerate(linears)
        )

    @classmethod
    def of(cls, policy: ActorCriticPolicy) -> FusedActorCritic | None:
        """The fused MLP of ``policy``, or None where it does not apply (then the policy's modules run as they are).

        It applies to SB3's own MLP whose modules would run only their forwards
        (:func:`pgplug.fast.direct_forward.mlp_modules`, checked at every call), with a shared features
        extractor, actor and critic stacks of equal depth and layer by layer alike, and biases throughout.
        """
        mlp = mlp_modules(policy)
        if mlp is None or not policy.share_features_extractor:
            return None
        cached = cls._cache.get(policy)
        if cached is None or cached[0] is not mlp:  # the same modules give the same MlpModules
            cached = cls._cache[policy] = (mlp, cls(mlp) if cls._fits(mlp) else None)
        return cached[1]

    @staticmethod
    def _fits(mlp: MlpModules) -> bool:
        if len(mlp.actor) != len(mlp.critic):
            return False
        for a, c in [*zip(mlp.actor, mlp.critic), (mlp.action_net, mlp.value_net)]:
            if type(a) is not type(c) or (type(a) is th.nn.Linear and (a.bias is None or c.bias is None)):
                return False
        return True

    def _weights(self) -> list[tuple[th.Tensor, th.Tensor] | type]:
        key = tensor_versions(self.params)
        if key is None or key != self._key:
            with th.inference_mode():  # the fused copies are inference tensors: built and refreshed in that mode
                self._refresh(key)
        return self._layers

    def _refresh(self, key: list[int] | None) -> None:
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
            actor_block, critic_block = (
                (weight[:rows, :cols], weight[rows:, cols:]) if split else weight.split([rows, c.out_features])
            )
            copies += [(actor_block, a.weight), (critic_block, c.weight), (bias[:rows], a.bias), (bias[rows:], c.bias)]
            layers.append((weight, bias))
            split = True
        self._layers, self._copies = layers, copies
        self._numpy_layers = [
            (layer[0].numpy().T, layer[1].numpy()) if isinstance(layer, tuple) else layer for layer in layers
        ]

    def __call__(self, features: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """Logits and values from the features, as ``action_net(latent_pi)`` and ``value_net(latent_vf)``."""
        x = features
        for layer in self._weights():
            if isinstance(layer, tuple):
                x = th.nn.functional.linear(x, *layer)
            else:
                x = th.tanh(x) if layer is th.nn.Tanh else th.relu(x)
        return x[:, : self.n_logits], x[:, self.n_logits :]

    def runs_in_numpy(self, features: th.Tensor) -> bool:
        """Whether :meth:`numpy_forward` serves these features: float32 rows on the CPU outside autograd, float32
        weights, and products small enough for one thread (SB3's default 64-64 MLP: up to 16 rows)."""
        first = self.params[0]
        return (
            features.dtype is th.float32
            and first.dtype is th.float32
            and features.device.type == "cpu"
            and first.device.type == "cpu"
            and features.dim() == 2
            and not features.requires_grad
            and features.shape[0] * self._numpy_work <= self.NUMPY_MAX_WORK
        )

    def numpy_forward(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`__call__` in numpy, for inference: logits and values as arrays, equal to it up to float32
        rounding (numpy's BLAS and ``tanh`` are not torch's)."""
        self._weights()  # assembled, and refreshed after an update
        x = features
        for layer in self._numpy_layers:
            if isinstance(layer, tuple):
                x = x @ layer[0]
                x += layer[1]
            elif layer is th.nn.Tanh:
                np.tanh(x, out=x)
            else:
                np.maximum(x, 0, out=x)
        return x[:, : self.n_logits], x[:, self.n_logits :]
