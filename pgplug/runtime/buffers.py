"""Rollout storage: SB3's ``RolloutBuffer`` whose arrays are the rows the collector writes each step into.

The collector writes each step once, through numpy (a numpy row assignment costs a fraction of a torch
``tensor[t] = x``), into rows preallocated on the first observation, and nothing is allocated per step
(nor, on CPU, per rollout). Each array has a CPU tensor sharing its memory, from which the typed
:class:`~pgplug.contracts.rollout.Rollout` is viewed. After a rollout, the SB3 attributes
(``observations``, ``actions``, ``advantages``, ...) view the rows collected, with SB3's shapes, so
``model.rollout_buffer`` reads, ``size()``s and ``get()``s as SB3's does; ``compute_returns_and_advantage``
runs the algorithm's estimator.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common import buffers as sb3_buffers

from pgplug.contracts.estimator import Estimator
from pgplug.contracts.rollout import Rollout
from pgplug.contracts.rollout import map_observation as _map

#: A rollout's per-step forward outputs, kept until written: (actions, values, log-probs).
Outputs = tuple[list[th.Tensor], list[th.Tensor], list[th.Tensor]]
OUTPUT_FIELDS = ("actions", "values", "log_probs")
STEP_FIELDS = ("observations", "actions", "rewards", "episode_starts", "values", "log_probs")
#: Rows allocated when the length of a collection is not known in advance (REINFORCE); doubled as needed.
MIN_CAPACITY = 64


def empty_rows(capacity: int, x: np.ndarray) -> np.ndarray:
    """An empty ``[capacity, *x.shape]`` array whose rows have the memory layout of ``x``.

    SB3's VecTransposeImage hands out channels-first views of channels-last frames: keeping that
    layout makes each write a plain copy and feeds the CNN channels-last batches (faster on CPU).
    """
    order = sorted(range(x.ndim), key=lambda axis: -x.strides[axis])  # outermost axis first
    base = np.empty((capacity, *(x.shape[axis] for axis in order)), dtype=x.dtype)
    return base.transpose(0, *(1 + order.index(axis) for axis in range(x.ndim)))


def action_row_shape(action_space: spaces.Space) -> tuple[int, ...]:
    """One env's stored action: an index for ``Discrete`` (what its distribution scores), else SB3's flat
    ``[action_dim]`` (a ``Box(2, 2)`` action is scored as 4 numbers)."""
    if isinstance(action_space, spaces.Discrete):
        return ()
    return (int(np.prod(action_space.shape)),)


class CollectedRollout:
    """The storage half of pgplug's rollout buffers (mixed into SB3's ``RolloutBuffer`` and ``DictRolloutBuffer``).

    :ivar estimator: what :meth:`compute_returns_and_advantage` runs (set by the algorithm that owns the buffer)
    """

    estimator: Estimator | None = None
    gamma: float
    buffer_size: int
    action_space: spaces.Space
    device: th.device

    def reset(self) -> None:
        """SB3's ``reset``: the buffer is empty again. The rows stay allocated; nothing is zeroed."""
        self.pos, self.full, self.generator_ready = 0, False, False

    # -- rows ----------------------------------------------------------------------------------

    def ensure_rows(self, step: int, n_steps: int | None, obs: Any) -> None:
        """Rows for step ``step`` (and a spare one after ``n_steps``, for V(last obs)), allocated from ``obs``."""
        capacity = self.__dict__.get("capacity", 0)
        if step < capacity:
            return
        wanted = max((n_steps or 0) + 1, 2 * capacity, MIN_CAPACITY if n_steps is None else 0)
        old = self.__dict__.get("rows")
        self._allocate(wanted, obs if old is None else _map(old["observations"], lambda x: x[0]))
        if old is not None:  # grown mid-collection (REINFORCE): keep what was written
            for name in STEP_FIELDS:
                _map2(old[name], self.rows[name], lambda src, dst: dst.__setitem__(slice(0, capacity), src))

    def _allocate(self, capacity: int, obs: Any) -> None:
        n = len(next(iter(obs.values())) if isinstance(obs, dict) else obs)
        # The dtypes SB3's distributions sample: integer indices for (Multi)Discrete, floats otherwise.
        integer = isinstance(self.action_space, (spaces.Discrete, spaces.MultiDiscrete))
        self.capacity, self.n_envs = capacity, n
        self.rows: dict[str, Any] = {
            "observations": _map(obs, lambda x: empty_rows(capacity, np.asarray(x))),
            "actions": np.empty(
                (capacity, n, *action_row_shape(self.action_space)), np.int64 if integer else np.float32
            ),
            **{name: np.empty((capacity, n), np.float32) for name in STEP_FIELDS[2:]},
            "last_values": np.empty(n, np.float32),
            "last_dones": np.empty(n, np.float32),
            "before_estimate": np.zeros((capacity, n), np.float32),  # SB3's advantages and returns until estimated
        }
        self.row_tensors: dict[str, Any] = {name: _map(array, th.from_numpy) for name, array in self.rows.items()}
        #: Row t of the observations as a tensor, made once (indexing a tensor costs a microsecond or two).
        self.obs_rows = [_map(self.row_tensors["observations"], lambda x, t=t: x[t]) for t in range(capacity)]
        self._cpu_views: tuple[int, dict[str, Any]] | None = None
        self._sb3_views: tuple[int, dict[str, Any]] | None = None
        self._last_values_column = self.row_tensors["last_values"].view(-1, 1)
        self._output_rows: dict[str, tuple[Any, Any]] = dict.fromkeys(OUTPUT_FIELDS, (None, None))

    def write_obs(self, step: int, obs: Any, envs: slice | None = None) -> Any:
        """Copy ``obs`` into row ``step`` and return that row as a tensor: the step's one copy of it.

        :param envs: only these envs' part of the row (``obs`` holds theirs; array observations)
        """
        arrays = self.rows["observations"]
        if envs is not None:
            arrays[step, envs] = obs
            return self.obs_rows[step][envs]
        if isinstance(obs, dict):
            for key, value in obs.items():
                arrays[key][step] = value
        else:
            arrays[step] = obs
        return self.obs_rows[step]

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
                rows = self.row_tensors[name][start : start + len(outputs)]
                rows = rows.view(len(outputs) * first.shape[0], *rows.shape[2:])
                self._output_rows[name] = (key, rows)
            if first.is_cpu and first.dtype is rows.dtype and first.shape[1:] == rows.shape[1:]:
                th.cat(outputs, out=rows)
            else:
                rows.copy_(th.cat(outputs).reshape(rows.shape))

    def write_last_values(self, values: th.Tensor) -> None:
        """Write V(last obs), shaped ``[N]`` or ``[N, 1]`` (as ``predict_values`` gives it)."""
        last_values = self.row_tensors["last_values"]
        (last_values if values.dim() == 1 else self._last_values_column).copy_(values)

    # -- the rollout -----------------------------------------------------------------------------

    def collected(self, steps: int) -> Rollout:
        """The rollout of the first ``steps`` rows (views; the next collection overwrites them), and SB3's
        attributes viewing the same rows."""
        self.rollout = Rollout(**self._views(steps))
        self.buffer_size, self.pos, self.full, self.generator_ready = steps, steps, True, False
        views = self.__dict__.get("_sb3_views")
        if views is None or views[0] != steps:  # made once for A2C, whose rollouts all have n_steps rows
            views = self._sb3_views = (steps, self._sb3_arrays(steps))
        self.__dict__.update(views[1])  # again each rollout: get() replaces them with flattened copies
        if isinstance(self.observations, dict):  # and DictRolloutBuffer.get() flattens the dict's entries in place
            self.observations = dict(self.observations)
        return self.rollout

    def _sb3_arrays(self, steps: int) -> dict[str, Any]:
        """SB3's attributes over the first ``steps`` rows, with SB3's shapes."""
        rows = self.rows
        actions = rows["actions"][:steps]
        return {
            "observations": _map(rows["observations"], lambda x: x[:steps]),
            "actions": actions[..., None] if actions.ndim == 2 else actions,  # SB3's [T, N, action_dim]
            **{name: rows[name][:steps] for name in STEP_FIELDS[2:]},
            "advantages": rows["before_estimate"][:steps],  # zeros, until the estimator runs
            "returns": rows["before_estimate"][:steps],
        }

    def _views(self, steps: int) -> dict[str, Any]:
        """The :class:`Rollout` fields over the first ``steps`` rows, on the buffer's device."""
        if self.device.type != "cpu":  # the one copy per rollout to an accelerator
            views = self._cpu_fields(steps)
            return {name: _map(tensor, lambda x: x.to(self.device)) for name, tensor in views.items()}
        if self._cpu_views is None or self._cpu_views[0] != steps:  # CPU views live as long as the rows
            self._cpu_views = (steps, self._cpu_fields(steps))
        return self._cpu_views[1]

    def _cpu_fields(self, steps: int) -> dict[str, Any]:
        views = {name: _map(self.row_tensors[name], lambda x: x[:steps]) for name in STEP_FIELDS}
        return {**views, "last_values": self.row_tensors["last_values"], "last_dones": self.row_tensors["last_dones"]}

    def compute_returns_and_advantage(self, last_values: th.Tensor, dones: np.ndarray) -> None:
        """SB3's post-processing step: Ψ_t and the critic's targets of the rollout, from the buffer's estimator.

        :param last_values: V(s_T), the state after the rollout (one per env)
        :param dones: whether the rollout's last step ended each env's episode
        """
        if self.estimator is None:
            raise RuntimeError("this rollout buffer has no estimator: it belongs to an algorithm, which sets one")
        rollout = self.rollout
        # pgplug's learners pass the values and dones the rollout ended with; anything else replaces them.
        if last_values is not rollout.last_values:
            with th.no_grad():
                rollout.last_values.copy_(th.as_tensor(last_values).reshape(-1))
        if dones is not rollout.last_dones:
            rollout.last_dones.copy_(th.as_tensor(np.asarray(dones, dtype=np.float32)).reshape(-1))
        rollout.fill_estimate(self.estimator, self.gamma)
        self.advantages = _as_numpy(rollout.advantages)
        self.returns = self.advantages + self.values if rollout.returns is None else _as_numpy(rollout.returns)


def _as_numpy(tensor: th.Tensor) -> np.ndarray:
    """A CPU tensor's array (no copy), or a copy of another device's."""
    return tensor.numpy() if tensor.is_cpu else tensor.cpu().numpy()


def _map2(a: Any, b: Any, fn: Any) -> None:
    """``fn(a, b)``, or for each key of two dict observations."""
    if isinstance(a, dict):
        for key in a:
            fn(a[key], b[key])
    else:
        fn(a, b)


class RolloutBuffer(CollectedRollout, sb3_buffers.RolloutBuffer):
    """SB3's ``RolloutBuffer`` over the rows pgplug's collector writes (same constructor, attributes and ``get``)."""


class DictRolloutBuffer(CollectedRollout, sb3_buffers.DictRolloutBuffer):
    """SB3's ``DictRolloutBuffer`` (dict observations) over the rows pgplug's collector writes."""


def rollout_buffer_class(observation_space: spaces.Space) -> type[RolloutBuffer] | type[DictRolloutBuffer]:
    """The buffer class for these observations, as SB3 picks it."""
    return DictRolloutBuffer if isinstance(observation_space, spaces.Dict) else RolloutBuffer
