"""Value checks shared by every layer: each refuses a bad value in one line naming it and what is valid.

One rule per kind of value, so the constructor, the config reader and the command line refuse the
same values with the same words. A rule is ``check_<kind>(name, value)``: it returns the value (as the
type it stands for) or raises a :class:`~pgplug.errors.PgplugError` whose message names ``name``, the
value and what would be valid. :func:`check_settings` applies a table of such rules, by setting name, to
whatever subset of settings it is given: an algorithm declares its table once
(``PolicyGradientAlgorithm.setting_rules``) and both its constructor and the config reader apply it.
"""

from __future__ import annotations

import importlib
import inspect
import math
import numbers
import os
import tempfile
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pgplug.errors import PgplugError, PgplugWarning

#: The largest float32, the optimizers' working precision: a learning rate above it overflows.
FLOAT32_MAX = float(np.finfo(np.float32).max)
#: The largest training budget: 2**53 (about 9e15) timesteps, the largest whole number a float such as
#: ``-n 1e15`` or YAML's ``1e15`` holds exactly, and far beyond any run (a billion steps a second for 100 days).
MAX_TIMESTEPS = 2**53
#: Seeds are numpy's: whole numbers from 0 to 2**32 - 1 (``np.random.seed`` refuses any other).
MAX_SEED = 2**32 - 1
#: The most workers an algorithm may start (A3C's ``n_workers``); more than the machine's cores only warns.
MAX_WORKERS = 256

#: A rule: ``rule(name, value)`` returns the checked value or raises a one-line :class:`PgplugError`.
Rule = Callable[[str, Any], Any]


def _is_bool(value: object) -> bool:
    return isinstance(value, (bool, np.bool_))


def _is_real(value: object) -> bool:
    """A real number (numpy scalars included), not a bool."""
    return not _is_bool(value) and isinstance(value, numbers.Real)


# -- numbers -------------------------------------------------------------------------------------


def check_positive_int(name: str, value: Any) -> int:
    """``value`` as an ``int`` if it is a whole number ≥ 1 (numpy integers too; not bools or floats)."""
    if _is_bool(value) or not isinstance(value, (int, np.integer)) or value < 1:
        raise PgplugError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_non_negative_int(name: str, value: Any) -> int:
    """``value`` as an ``int`` if it is 0 or a whole number ≥ 1."""
    if _is_bool(value) or not isinstance(value, (int, np.integer)) or value < 0:
        raise PgplugError(f"{name} must be 0 or a positive integer, got {value!r}")
    return int(value)


def check_bool(name: str, value: Any) -> bool:
    """``value`` if it is a real boolean (numpy's too): never a string such as ``'abc'`` or ``'false'``, never 0/1.

    In a YAML config or ``-params``, that is a YAML boolean: ``true``/``false`` (also ``yes``/``no``, ``on``/``off``).
    """
    if not _is_bool(value):
        raise PgplugError(f"{name} must be true or false, got {value!r}")
    return bool(value)


def check_finite(name: str, value: Any) -> float:
    """``value`` as a float if it is a real number other than NaN and ±inf."""
    if not _is_real(value) or not math.isfinite(value):
        raise PgplugError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def check_non_negative(name: str, value: Any) -> float:
    """``value`` as a float if it is a finite number ≥ 0."""
    if not _is_real(value) or not math.isfinite(value) or value < 0:
        raise PgplugError(f"{name} must be a finite number ≥ 0, got {value!r}")
    return float(value)


def check_positive_number(name: str, value: Any) -> float:
    """``value`` as a float if it is a finite number > 0."""
    if not _is_real(value) or not math.isfinite(value) or value <= 0:
        raise PgplugError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def check_unit_interval(name: str, value: object) -> float:
    """``value`` as a float if it is a real number in [0, 1] (numpy scalars included)."""
    if not _is_real(value) or not 0.0 <= value <= 1.0:  # type: ignore[operator]
        raise PgplugError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)  # type: ignore[arg-type]


def check_gamma(gamma: object) -> float:
    return check_unit_interval("gamma", gamma)


def _learning_rate_range(value: object) -> bool:
    return _is_real(value) and 0 <= value <= FLOAT32_MAX  # type: ignore[operator]


def check_learning_rate(name: str, value: Any) -> Any:
    """A schedule (any callable) as it is, or a constant between 0 and float32's largest number (not NaN)."""
    if not callable(value) and not _learning_rate_range(value):
        raise PgplugError(f"{name} must be a number between 0 and {FLOAT32_MAX:.3g} or a schedule, got {value!r}")
    return value


def check_constant_learning_rate(name: str, value: Any) -> float:
    """A learning rate where no schedule is taken: a number between 0 and float32's largest number (not NaN)."""
    if not _learning_rate_range(value):
        raise PgplugError(f"{name} must be a number between 0 and {FLOAT32_MAX:.3g}, got {value!r}")
    return float(value)


def check_max_grad_norm(name: str, value: Any) -> float | None:
    """The gradient-clipping threshold: a finite number > 0, or None for no clipping."""
    if value is None:
        return None
    try:
        return check_positive_number(name, value)
    except PgplugError:
        raise PgplugError(f"{name} must be a finite number > 0, or None for no clipping, got {value!r}") from None


def check_ent_coef(name: str, value: Any, allow_negative: bool = False) -> float:
    """The entropy coefficient: a finite number ≥ 0; a negative one only when asked for (``allow_negative``).

    A negative coefficient rewards certainty: the policy collapses onto one action early, which is
    almost always a sign error, so it takes an explicit ``allow_negative_ent_coef=True``.
    """
    number = check_finite(name, value)
    if number < 0 and not allow_negative:
        raise PgplugError(
            f"{name} must be ≥ 0 (a negative one punishes exploration; pass allow_negative_ent_coef=true "
            f"to mean it), got {value!r}"
        )
    return number


def check_timesteps(name: str, value: Any) -> int:
    """A training budget as an ``int``: a whole number from 1 to :data:`MAX_TIMESTEPS`.

    A whole float counts (``1e5``, as the command line, YAML configs and SB3's ``learn`` take budgets);
    strings, bools, fractions, NaN and inf do not.
    """
    whole = isinstance(value, (float, np.floating)) and math.isfinite(value) and float(value).is_integer()
    number = int(value) if whole else value
    if _is_bool(number) or not isinstance(number, (int, np.integer)) or not 1 <= number <= MAX_TIMESTEPS:
        raise PgplugError(f"{name} must be a whole number from 1 to 2**53, got {value!r}")
    return int(number)


def check_seed(name: str, value: Any) -> int | None:
    """A random seed: None (draw one) or a whole number from 0 to 2**32 - 1, numpy's range."""
    if value is None:
        return None
    if _is_bool(value) or not isinstance(value, (int, np.integer)) or not 0 <= value <= MAX_SEED:
        raise PgplugError(f"{name} must be a whole number from 0 to 2**32 - 1, got {value!r}")
    return int(value)


def available_cpus() -> int:
    """The cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def check_n_workers(name: str, value: Any) -> int:
    """A number of worker processes: 1 to :data:`MAX_WORKERS`."""
    if _is_bool(value) or not isinstance(value, (int, np.integer)) or not 1 <= value <= MAX_WORKERS:
        raise PgplugError(f"{name} must be a whole number from 1 to {MAX_WORKERS}, got {value!r}")
    return int(value)


def warn_more_workers_than_cores(name: str, value: int) -> None:
    """One line when ``value`` workers on this machine are more than its available cores."""
    cpus = available_cpus()
    if value > cpus:
        warnings.warn(
            f"{name}={value} is more than the CPU cores available ({cpus}): the workers will take turns on them",
            PgplugWarning,
            stacklevel=3,
        )


def optional(rule: Rule) -> Rule:
    """``rule``, letting None through (a setting whose None means "none" or "the default")."""

    def check(name: str, value: Any) -> Any:
        return None if value is None else rule(name, value)

    check.__doc__ = f"None, or what {rule.__name__} accepts."
    return check


def check_settings(rules: Mapping[str, Rule], settings: Mapping[str, Any]) -> dict[str, Any]:
    """The settings that have a rule, each checked (and converted) by it; settings without a rule are left out."""
    return {name: rules[name](name, value) for name, value in settings.items() if name in rules}


# -- precision -----------------------------------------------------------------------------------

#: The floating-point precisions a policy's forward passes can run in (``precision``, ``--precision``).
PRECISIONS = ("fp32", "bf16")


def check_precision(name: str, value: Any) -> str:
    """``fp32`` (everything in float32) or ``bf16`` (the network body under bfloat16 autocast, for CPUs with
    bf16 matrix units)."""
    if not isinstance(value, str) or value not in PRECISIONS:
        raise PgplugError(f"{name} must be one of {', '.join(PRECISIONS)}, got {value!r}")
    return value


# -- devices -------------------------------------------------------------------------------------


def available_devices() -> list[str]:
    """The torch devices this machine has: ``cpu``, then each accelerator torch reports (``cuda``, ``cuda:0``, ...)."""
    import torch

    found = ["cpu"]
    for kind in ("cuda", "xpu", "mps"):
        module = getattr(torch, kind, None)
        backend = getattr(torch.backends, kind, None)  # where older torch versions answer for mps
        is_available = getattr(module, "is_available", None) or getattr(backend, "is_available", None)
        if is_available is None or not is_available():
            continue
        count = module.device_count() if hasattr(module, "device_count") else 1
        found += [kind, *(f"{kind}:{i}" for i in range(count))]
    return found


def _check_device(name: str, value: Any, cuda_falls_back: bool) -> Any:
    import torch

    if isinstance(value, str) and value == "auto":
        return value
    available = available_devices()
    try:
        device = torch.device(value)
    except (RuntimeError, TypeError, ValueError):
        device = None
    if device is None or not isinstance(value, (str, torch.device)):
        devices = ", ".join(available)
        raise PgplugError(f"{name} must be auto or a torch device this machine has ({devices}), got {value!r}")
    if device.type == "cpu" or str(device) in available or (cuda_falls_back and device.type == "cuda"):
        return value
    raise PgplugError(f"{name} {str(value)!r} does not exist on this machine; available: auto, {', '.join(available)}")


def check_device(name: str, value: Any) -> Any:
    """``auto``, ``cpu`` or a device this machine has (``cuda``, ``cuda:1``, ``mps``, ...): the command line's rule."""
    return _check_device(name, value, cuda_falls_back=False)


def check_model_device(name: str, value: Any) -> Any:
    """A model's ``device``, as SB3 takes it: :func:`check_device`, except that ``cuda`` without CUDA is the CPU
    (SB3's ``get_device``, which code written for SB3 relies on: ``A2C.load(path, device="cuda")`` anywhere)."""
    return _check_device(name, value, cuda_falls_back=True)


# -- folders -------------------------------------------------------------------------------------


def check_writable_folder(name: str, path: str | os.PathLike[str]) -> Path:
    """A folder output can be written to, checked without creating anything: the folder, or the nearest
    existing folder above it (where it will be created), is probed with a file written and removed.

    Refuses a file (``/dev/null`` too), a path under a file, and a folder one may not write to, before
    anything runs, rather than when the first checkpoint or log is written.
    """
    folder = Path(path)
    existing = folder
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    reason = None
    if not existing.is_dir():
        reason = "which is not a folder" if existing == folder else "a part of which is not a folder"
    else:
        try:
            with tempfile.NamedTemporaryFile(dir=existing, prefix=".pgplug-probe-"):
                pass
        except OSError as exc:
            reason = f"where nothing can be written ({exc.strerror or exc})"
    if reason is not None:
        raise PgplugError(f"{name} must be a writable folder, got {str(path)!r}, {reason}")
    return folder


def check_writable_file(name: str, path: str | os.PathLike[str]) -> Path:
    """A file output can be written to, checked without creating it: not a folder, and in a folder that is
    (or will be created) writable (:func:`check_writable_folder`)."""
    file = Path(path)
    if file.is_dir():
        raise PgplugError(f"{name} must be a file to write, got {str(path)!r}, which is a folder")
    try:
        check_writable_folder(name, file.parent)
    except PgplugError:
        raise PgplugError(
            f"{name} must be a file in a writable folder, got {str(path)!r}, whose folder {str(file.parent)!r} "
            "cannot be written to (or is not a folder)"
        ) from None
    return file


# -- keyword arguments and layer sizes -----------------------------------------------------------


def keyword_parameters(target: Callable[..., Any]) -> tuple[list[str], bool]:
    """The keyword arguments ``target(...)`` names, and whether it takes others too.

    For a class, its ``__init__``'s, following ``**kwargs`` up the MRO (a subclass passing ``**kwargs`` on
    takes its base's); it takes others when no class in the chain ends the ``**kwargs``.
    """
    keys: list[str] = []
    if not isinstance(target, type):
        try:
            params = inspect.signature(target).parameters.values()
        except (TypeError, ValueError):
            return keys, True
        keys = [p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        return keys, any(p.kind is p.VAR_KEYWORD for p in params)
    for klass in target.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None or klass is object:
            continue
        try:
            params = inspect.signature(init).parameters.values()
        except (TypeError, ValueError):  # a constructor written in C: whatever it takes is unknown here
            return keys, True
        keys += [p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name not in keys]
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            return keys, False
    return keys, True


def check_keywords(
    what: str,
    target: Callable[..., Any],
    kwargs: Mapping[str, Any],
    reserved: Iterable[str] = (),
    also: Iterable[str] = (),
    label: str | None = None,
) -> None:
    """Refuse a keyword ``target`` does not take, or one in ``reserved`` (those its caller passes itself),
    naming the valid ones.

    :param what: what the keywords are, for the message (``policy_kwargs key``, ``env_wrapper argument``)
    :param also: keywords the caller takes besides ``target``'s
    :param label: how the message names ``target`` (default: its name)
    """
    reserved = {"self", *reserved}
    names, open_ended = keyword_parameters(target)
    valid = sorted({*names, *also} - reserved)
    label = label or getattr(target, "__qualname__", repr(target))
    for key in kwargs:
        if key in reserved - {"self"}:
            raise PgplugError(
                f"{what} {key!r} is not for {label}: pgplug passes it itself; valid keys: {', '.join(valid)}"
            )
        if key not in valid and not open_ended:
            raise PgplugError(f"unknown {what} {key!r} for {label}; valid keys: {', '.join(valid) or '(none)'}")


def _layer_sizes(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and all(
        not _is_bool(size) and isinstance(size, (int, np.integer)) and size >= 1 for size in value
    )


def check_net_arch(name: str, value: Any) -> Any:
    """SB3's ``net_arch``: None (the policy's default), a list of layer sizes shared by actor and critic,
    ``dict(pi=[...], vf=[...])``, or SB3's older ``[dict(pi=[...], vf=[...])]``; every size a whole number ≥ 1."""
    arch = value[0] if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict) else value
    if arch is None or _layer_sizes(arch):
        return value
    if isinstance(arch, dict) and set(arch) <= {"pi", "vf"} and all(map(_layer_sizes, arch.values())):
        return value
    raise PgplugError(
        f"{name} must be a list of layer sizes ≥ 1 such as [64, 64], or dict(pi=[64, 64], vf=[64, 64]), got {value!r}"
    )


def import_dotted(path: str) -> Any:
    """``package.module.Name`` → the object, by import and attribute lookup only (nothing is evaluated)."""
    if path.startswith(("nn.", "th.")):
        path = "torch." + path
    module_name, _, attr = path.rpartition(".")
    if not module_name:
        raise PgplugError(f"{path!r} is not a dotted import path such as 'package.module.Class'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise PgplugError(f"cannot import {module_name!r} for {path!r}: {exc}") from exc
    try:
        return getattr(module, attr)
    except AttributeError:
        raise PgplugError(f"module {module_name!r} has no attribute {attr!r}") from None
