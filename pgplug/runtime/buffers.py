"""Preallocated rollout storage: numpy arrays the collector writes each step into, with tensor views of them."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces

from pgplug.contracts.rollout import map_observation as _map

#: A rollout's per-step forward outputs, kept until written: (actions, values, log-probs).
Outputs = tuple[list[th.Tensor], list[th.Tensor], list[th.Tensor]]
OUTPUT_FIELDS = ("actions", "values", "log_probs")


def empty_rows(capacity: int, x: np.ndarray) -> np.ndarray:
    """An empty ``[capacity, *x.shape]`` array whose rows have the memory layout of ``x``.

    SB3's VecTransposeImage hands out channels-first views of channels-last frames: keeping that
    layout makes each write a plain copy and feeds the CNN channels-last batches (faster on CPU).
    """
    order = sorted(range(x.ndim), key=lambda axis: -x.strides[axis])  # outermost axis first
    base = np.empty((capacity, *(x.shape[axis] for axis in order)), dtype=x.dtype)
    return base.transpose(0, *(1 + order.index(axis) for axis in range(x.ndim)))


class Buffers:
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
        self._output_rows: dict[str, tuple[Any, Any]] = dict.fromkeys(OUTPUT_FIELDS, (None, None))

    def write_outputs(self, start: int, outputs_by_field: Outputs) -> None:
        """Write the forward's per-step actions, values and log-probs into rows ``start, start + 1, ...``.

        One ``cat`` per field into the rows viewed as ``[steps·N, ...]`` (a ``stack`` is that ``cat`` plus a
        view per step).
        """
        for name, outputs in zip(OUTPUT_FIELDS, outputs_by_field):
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

    def grown(self, capacity: int) -> Buffers:
        """A copy with room for ``capacity`` steps (for collections of unknown length)."""
        bigger = Buffers(capacity, _map(self.np["observations"], lambda x: x[0]), self.action_space)
        for name in self.names:
            old, new = self.np[name], bigger.np[name]
            if isinstance(old, dict):
                for key in old:
                    new[key][: self.capacity] = old[key]
            else:
                new[: self.capacity] = old
        return bigger
