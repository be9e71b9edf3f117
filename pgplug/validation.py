"""Value checks shared by every layer: each refuses a bad value in one line naming it and what is valid.

One rule per kind of value, so the constructor, the config reader and the command line refuse the
same values with the same words.
"""

from __future__ import annotations

import importlib
import numbers
from typing import Any

import numpy as np

from pgplug.errors import PgplugError

#: The largest float32, the optimizers' working precision: a learning rate above it overflows.
FLOAT32_MAX = float(np.finfo(np.float32).max)


def check_positive_int(name: str, value: Any) -> int:
    """``value`` as an ``int`` if it is a whole number ≥ 1 (numpy integers too; not bools or floats)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise PgplugError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_positive_number(name: str, value: Any) -> float:
    """``value`` as a float if it is a finite real number > 0 (numpy scalars included; not bools)."""
    if (
        isinstance(value, (bool, np.bool_))
        or not isinstance(value, numbers.Real)
        or not 0.0 < value < float("inf")  # also refuses NaN
    ):
        raise PgplugError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def check_unit_interval(name: str, value: object) -> float:
    """``value`` as a float if it is a real number in [0, 1] (numpy scalars included)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) or not 0.0 <= value <= 1.0:
        raise PgplugError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def check_gamma(gamma: object) -> float:
    return check_unit_interval("gamma", gamma)


def check_learning_rate(value: Any) -> Any:
    """A schedule (any callable) as it is, or a constant between 0 and float32's largest number."""
    if callable(value):
        return value
    if (
        isinstance(value, (bool, np.bool_))
        or not isinstance(value, (int, float, np.floating, np.integer))
        or not 0 <= value <= FLOAT32_MAX
    ):
        raise PgplugError(
            f"learning_rate must be a number between 0 and {FLOAT32_MAX:.3g} or a schedule, got {value!r}"
        )
    return value


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
