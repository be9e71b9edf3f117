"""A3C: asynchronous advantage actor-critic, as a plugin package: the algorithm, its worker loop, and two
worker backends (local processes over a shared-memory parameter store, and one worker in the driver)."""

from pgplug.plugin.hookspecs import hookimpl
from pgplug.plugins.a3c.algorithm import A3C
from pgplug.plugins.a3c.process_backend import ProcessBackend
from pgplug.plugins.a3c.serial_backend import SerialBackend


@hookimpl
def pgplug_register_algorithms(register) -> None:
    register(A3C)


@hookimpl
def pgplug_register_backends(register) -> None:
    register(ProcessBackend)
    register(SerialBackend)


__all__ = ["A3C", "ProcessBackend", "SerialBackend"]
