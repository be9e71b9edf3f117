"""A3C: asynchronous advantage actor-critic, as a plugin package (the algorithm, its worker loop, its backends)."""

from pgplug.plugin.hookspecs import hookimpl
from pgplug.plugins.a3c.algorithm import A3C


@hookimpl
def pgplug_register_algorithms(register) -> None:
    register(A3C)


__all__ = ["A3C"]
