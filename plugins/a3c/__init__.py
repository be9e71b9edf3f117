"""A3C: asynchronous advantage actor-critic, as a plugin package: the algorithm, its worker loop, and three
worker backends (local processes over a shared-memory parameter store, one worker in the driver, and Ray
actors around a parameter-server actor, on one machine or a cluster; Ray is imported only when used)."""

from pgplug.plugin.hookspecs import hookimpl
from pgplug.plugins.a3c.algorithm import A3C
from pgplug.plugins.a3c.process_backend import ProcessBackend
from pgplug.plugins.a3c.ray_backend import RayBackend
from pgplug.plugins.a3c.serial_backend import SerialBackend


@hookimpl
def pgplug_register_algorithms(register) -> None:
    register(A3C)


@hookimpl
def pgplug_register_backends(register) -> None:
    register(ProcessBackend)
    register(SerialBackend)
    register(RayBackend)


__all__ = ["A3C", "ProcessBackend", "RayBackend", "SerialBackend"]
