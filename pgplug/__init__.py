"""pgplug: policy-gradient algorithms (REINFORCE, A2C, A3C) as plugins on Stable-Baselines3."""

from __future__ import annotations

from typing import Any

from pgplug.errors import PgplugError
from pgplug.estimator import Estimate, Estimator
from pgplug.hookspecs import hookimpl

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """``from pgplug import A2C`` looks the algorithm up in the registry (built-in or plugin);
    ``pgplug.load`` is :func:`pgplug.compat.load`, imported on first use."""
    if name == "load":
        from pgplug.compat import load

        return load
    from pgplug.plugin_host import get_host

    registry = get_host().algorithms
    for entry in registry:
        if entry.cls.__name__ == name:
            return entry.cls
    raise AttributeError(f"module 'pgplug' has no attribute {name!r}")


__all__ = ["Estimate", "Estimator", "PgplugError", "__version__", "hookimpl", "load"]
