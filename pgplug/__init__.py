"""pgplug: policy-gradient algorithms (REINFORCE, A2C, A3C) as plugins on Stable-Baselines3."""

from __future__ import annotations

from typing import Any

from pgplug.contracts.estimator import Estimate, Estimator
from pgplug.errors import PgplugError
from pgplug.plugin.hookspecs import hookimpl

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """``from pgplug import A2C`` looks the algorithm up in the registry (built-in or plugin);
    ``pgplug.load`` is :func:`pgplug.interop.compat.load`, imported on first use."""
    if name == "load":
        from pgplug.interop.compat import load

        return load
    from pgplug.contracts.registries import get_host

    for entry in get_host().algorithms:
        if entry.cls.__name__ == name:
            return entry.cls
    raise AttributeError(f"module 'pgplug' has no attribute {name!r}")


__all__ = ["Estimate", "Estimator", "PgplugError", "__version__", "hookimpl", "load"]
