"""Unpickle what model files hold (spaces, arrays, schedules, class references) without running code from them.

A pickle can call any function it names. :func:`safe_loads` reads one with an allowlist instead: it
resolves only names inside the packages a model file legitimately refers to (gymnasium's spaces,
numpy, SB3, sb3-contrib, pgplug, torch's modules and optimizers), and of those it lets the pickle

- **build** data: gymnasium spaces, numpy arrays, dtypes, scalars and random generators, SB3's
  schedules, ``VecNormalize`` and its running statistics, pgplug estimators, containers;
- **refer** to classes without calling them: policies, features extractors, activation functions,
  optimizers, rollout buffers (what ``policy_class`` and ``policy_kwargs`` name);

and nothing else: any other name, a class pickled by value (cloudpickle), or a call of a class it may
only refer to ends the load with :class:`UntrustedPickleError`, naming what the pickle asked for.
:func:`trusted_loads` is Python's own unpickler for files the user vouches for. Both read classes of
OpenAI ``gym`` as their ``gymnasium`` twins, so gym-era files open.

The checks sit in the opcodes that call (``REDUCE``, ``NEWOBJ``, ``INST``, ``OBJ``) and set state
(``BUILD``) of Python's reference unpickler (``pickle._Unpickler``), the one unpickler whose
opcodes can be overridden; model-file pickles are a few kilobytes, so its speed does not matter.
"""

from __future__ import annotations

import _compat_pickle
import collections
import functools
import importlib
import io
import pickle
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3.common.buffers import BaseBuffer
from stable_baselines3.common.running_mean_std import RunningMeanStd
from stable_baselines3.common.utils import ConstantSchedule, FloatSchedule, LinearSchedule
from stable_baselines3.common.vec_env import VecNormalize

from pgplug.contracts.estimator import Estimator
from pgplug.errors import PgplugError

#: Packages whose modules a model-file pickle may name (any other module is never imported).
TRUSTED_PACKAGES = ("gymnasium", "numpy", "stable_baselines3", "sb3_contrib", "pgplug", "torch", "collections")

#: Functions a pickle may call: numpy's and the standard library's data constructors.
DATA_FUNCTIONS = frozenset(
    {
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy.random._pickle", "__generator_ctor"),
        ("numpy.random._pickle", "__bit_generator_ctor"),
        ("numpy.random._pickle", "__randomstate_ctor"),
        ("numpy.random.bit_generator", "__pyx_unpickle_SeedSequence"),
        ("_codecs", "encode"),
        ("copyreg", "_reconstructor"),
    }
)
#: Built-in classes a pickle may build (not ``bytearray``: ``bytearray(10**12)`` is a memory bomb).
BUILTIN_CLASSES = frozenset(
    {object, set, frozenset, slice, complex, dict, list, tuple, float, int, bool, str, bytes, range}
)
#: Classes whose instances a pickle may build and set the state of.
DATA_CLASSES: tuple[type, ...] = (
    gym.Space,
    np.ndarray,
    np.dtype,
    np.generic,
    np.random.Generator,
    np.random.BitGenerator,
    np.random.SeedSequence,
    np.random.RandomState,
    collections.deque,
    collections.OrderedDict,
    collections.defaultdict,
    FloatSchedule,
    LinearSchedule,
    ConstantSchedule,
    VecNormalize,
    RunningMeanStd,
    th.device,
    th.Size,
)
#: Classes a pickle may name but never call (``policy_class``, ``policy_kwargs``' classes).
REFERENCED_CLASSES: tuple[type, ...] = (th.nn.Module, th.optim.Optimizer, BaseBuffer)


class UntrustedPickleError(PgplugError):
    """A pickle asked for something outside the allowlist of :mod:`pgplug.files.safe_pickle`."""


def _gymnasium_name(module: str) -> str:
    """``gym.spaces.box`` → ``gymnasium.spaces.box``; numpy 1's ``numpy.core`` → numpy 2's ``numpy._core``."""
    if module == "gym" or module.startswith("gym."):
        return "gymnasium" + module[len("gym") :]
    if module == "numpy.core" or module.startswith("numpy.core."):
        return "numpy._core" + module[len("numpy.core") :]
    return module


def _is_data_class(obj: Any) -> bool:
    return isinstance(obj, type) and (obj in BUILTIN_CLASSES or issubclass(obj, _data_classes()))


@functools.cache
def _data_classes() -> tuple[type, ...]:
    """:data:`DATA_CLASSES` and pgplug's estimators (a zip pickles an estimator whose arguments are not JSON)."""
    return (*DATA_CLASSES, Estimator)


@functools.cache
def _data_functions() -> tuple[Any, ...]:
    found = (getattr(importlib.import_module(module), name, None) for module, name in DATA_FUNCTIONS)
    return tuple(function for function in found if function is not None)


def _is_data_function(obj: Any) -> bool:
    return any(obj is function for function in _data_functions())


def _is_referenced_class(obj: Any) -> bool:
    return isinstance(obj, type) and issubclass(obj, REFERENCED_CLASSES)


def _label(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__name__)}"


class SafeUnpickler(pickle._Unpickler):
    """Python's reference unpickler with an allowlist on every name it resolves, call it makes and state it sets."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def find_class(self, module: str, name: str) -> Any:
        if self.proto < 3 and (module, name) in _compat_pickle.NAME_MAPPING:  # Python 2 names, as pickle maps them
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif self.proto < 3:
            module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        module = _gymnasium_name(module)
        allowed = (module, name) in DATA_FUNCTIONS or module == "builtins" or module.split(".")[0] in TRUSTED_PACKAGES
        if not allowed or "__main__" in module.split("."):
            raise UntrustedPickleError(f"it refers to {module}.{name}, which is not on pgplug's list of safe names")
        try:
            obj = importlib.import_module(module)
            for part in name.split("."):
                obj = getattr(obj, part)
        except (ImportError, AttributeError) as exc:
            raise UntrustedPickleError(f"it refers to {module}.{name}, which does not exist here") from exc
        if _is_data_function(obj) or _is_data_class(obj) or _is_referenced_class(obj):
            return obj
        raise UntrustedPickleError(f"it refers to {module}.{name}, which is not a data type pgplug rebuilds")

    def _check_call(self, func: Any, args: Any) -> None:
        """Calls build data: a data class or a listed function, given no class a file may only name."""
        if any(isinstance(arg, type) and not _is_data_class(arg) for arg in args or ()):
            raise UntrustedPickleError(f"it passes a class to {_label(func)}, which pgplug does not let a file do")
        if _is_data_class(func) or _is_data_function(func):
            return
        raise UntrustedPickleError(f"it calls {_label(func)}, which pgplug only lets a file name, not call")

    def load_reduce(self) -> None:
        self._check_call(self.stack[-2], self.stack[-1])
        super().load_reduce()

    def load_newobj(self) -> None:
        self._check_call(self.stack[-2], ())
        super().load_newobj()

    def load_newobj_ex(self) -> None:
        self._check_call(self.stack[-3], ())
        super().load_newobj_ex()

    def _instantiate(self, klass: Any, args: Any) -> None:
        self._check_call(klass, args)
        super()._instantiate(klass, args)

    def load_build(self) -> None:
        target = self.stack[-2]
        if isinstance(target, type) or not isinstance(target, _data_classes()):
            raise UntrustedPickleError(f"it sets the state of {_label(target)}, which is not a data object")
        super().load_build()

    def persistent_load(self, pid: Any) -> Any:
        raise UntrustedPickleError("it holds a persistent reference, which model files do not use")

    dispatch[pickle.REDUCE[0]] = load_reduce
    dispatch[pickle.NEWOBJ[0]] = load_newobj
    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex
    dispatch[pickle.BUILD[0]] = load_build


class TrustingUnpickler(pickle.Unpickler):
    """Python's unpickler (it runs whatever the pickle names), with gym's classes read as gymnasium's."""

    def find_class(self, module: str, name: str) -> Any:
        return super().find_class(_gymnasium_name(module), name)


def safe_loads(blob: bytes) -> Any:
    """Unpickle ``blob`` over the allowlist; :class:`UntrustedPickleError` says what it asked for otherwise."""
    try:
        return SafeUnpickler(io.BytesIO(blob)).load()
    except UntrustedPickleError:
        raise
    except RecursionError as exc:
        raise UntrustedPickleError("it nests too deeply") from exc


def trusted_loads(blob: bytes) -> Any:
    """Unpickle ``blob`` as Python does: only for files the user trusts."""
    return TrustingUnpickler(io.BytesIO(blob)).load()


def loads(blob: bytes, trust: bool) -> Any:
    """:func:`trusted_loads` when the user trusts the file, else :func:`safe_loads`."""
    return trusted_loads(blob) if trust else safe_loads(blob)


__all__ = ["SafeUnpickler", "TrustingUnpickler", "UntrustedPickleError", "loads", "safe_loads", "trusted_loads"]
