"""Joining Ray, or starting it, for A3C; what every node must agree on; and shipping local plugins to the workers.

- No address: pgplug starts a local Ray instance and shuts it down after ``learn()``, with a token of the
  process's own (Ray would otherwise write one into ``~/.ray``) and usage statistics off unless the user set
  them, and
  the driver's ``sys.path`` for the workers (so env factories importable here import there).
- ``address``: joins an existing cluster (``auto``, ``HOST:PORT`` or ``ray://...``) and, after ``learn()``,
  only disconnects: the cluster is not pgplug's to stop. A process already connected to Ray is used as is.
- Local plugin files travel in the runtime env of the Ray job pgplug starts or joins (``py_modules``, which
  ``ray.init`` uploads: an actor's own runtime env takes only URIs), under the module name they have in the
  driver, so the objects of their classes unpickle on any node.
- Connecting keeps the process's SIGTERM handler, which ``ray.init`` would replace by one that aborts it.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import logging
import os
import secrets
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from pgplug.contracts.registries import get_host
from pgplug.errors import PgplugError
from pgplug.validation import available_cpus

#: The pip extra that installs Ray.
RAY_EXTRA = "pip install 'pgplug[ray]'"
#: Object store of a local instance pgplug starts, in MiB (A3C moves weights and gradients, never data).
DEFAULT_OBJECT_STORE_MIB = 100
#: Environment variables pgplug sets for a local instance it starts, unless the user set them.
LOCAL_DEFAULTS = {"RAY_USAGE_STATS_ENABLED": "0"}


def check_ray_installed() -> None:
    """One line saying how to install Ray if it is not (without importing it: see :func:`set_local_defaults`)."""
    if importlib.util.find_spec("ray") is None:
        raise PgplugError(f"the ray backend needs Ray, which is not installed; install it with: {RAY_EXTRA}")


def require_ray() -> ModuleType:
    """``import ray``, or one line saying how to install it."""
    check_ray_installed()
    import ray

    return ray


def local_versions() -> dict[str, str]:
    """What must be the same on every node: pgplug, torch and SB3 (Ray itself checks Ray's and Python's)."""
    return {name: importlib.metadata.version(name) for name in ("pgplug", "torch", "stable-baselines3")}


def check_versions(expected: dict[str, str], where: str) -> None:
    """One line naming each package whose version here differs from the driver's."""
    here = local_versions()
    differ = [
        f"{name} {here.get(name)} there, {version} on the driver"
        for name, version in expected.items()
        if here.get(name) != version
    ]
    if differ:
        raise PgplugError(
            f"versions differ between the driver and {where}: {'; '.join(differ)}; "
            "install the same pgplug, torch and stable-baselines3 on every node"
        )


def load_plugins(specs: list[str]) -> None:
    """Load the driver's local plugins (module names) in an actor, so that their classes unpickle."""
    for spec in specs:
        get_host().load_local(spec)


@dataclass
class ShippedPlugins:
    """The driver's local plugins as the actors load them: module names, and the files that carry them."""

    modules: list[str]
    runtime_env: dict[str, Any]
    folder: Path | None = None

    def remove(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


def ship_plugins() -> ShippedPlugins:
    """Copy each local plugin file as ``<its module name in the driver>.py`` into a folder Ray uploads for the job
    (``py_modules``, see :func:`connect`); plugins given as module names must be importable on every node as they
    are."""
    host = get_host()
    files = host.local_plugin_files()
    modules = host.local_plugin_modules()
    if not files:
        return ShippedPlugins(modules, {})
    folder = Path(tempfile.mkdtemp(prefix="pgplug-plugins-"))
    for name, path in files.items():
        shutil.copyfile(path, folder / f"{name}.py")
    return ShippedPlugins(modules, {"py_modules": [str(folder / f"{name}.py") for name in files]}, folder)


@dataclass
class Connection:
    """This process's connection to Ray, and whether pgplug started the instance (and so stops it)."""

    owned: bool
    disconnect_after: bool
    description: str
    cpus: float

    def close(self) -> None:
        """Stop the instance pgplug started (every process of it), or only disconnect from a cluster."""
        ray = require_ray()
        if self.disconnect_after and ray.is_initialized():
            ray.shutdown()


def set_local_defaults() -> None:
    """For a local instance pgplug starts, before Ray is first imported: usage statistics off, and token
    authentication with a token of this process's (else Ray writes one into ``~/.ray``), unless the user set
    either. Kept for the process's life: Ray reads them once."""
    for name, value in LOCAL_DEFAULTS.items():
        os.environ.setdefault(name, value)
    if not any(name in os.environ for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")):
        os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(16))


@contextlib.contextmanager
def sigterm_kept() -> Iterator[None]:
    """Keep this process's SIGTERM handler across ``ray.init``, which replaces it twice: in Python, with one that
    exits at once, and underneath, with its core's crash handler, which aborts the process. The command line's
    own handler (SIGTERM stops training and saves the model, as Ctrl-C does) stays. Only the main thread has one."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        if previous is not None:  # None: a handler not installed from Python, which Python cannot put back
            signal.signal(signal.SIGTERM, previous)


def _python_path() -> str:
    """The driver's ``sys.path`` folders, for workers on this machine."""
    return os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))


def connect(
    address: str | None,
    n_workers: int,
    object_store_mib: int = DEFAULT_OBJECT_STORE_MIB,
    shipped: ShippedPlugins | None = None,
) -> Connection:
    """Connect to Ray for ``n_workers`` workers of one CPU each; one line if the cluster has too few CPUs.

    ``shipped``: the local plugin files, which go into the runtime env of the job this connection starts (a process
    already connected to Ray has its job, and cannot take them).
    """
    job_env = shipped.runtime_env if shipped is not None else {}
    if address is None and "ray" not in sys.modules:
        set_local_defaults()  # before Ray is imported: it reads its authentication settings then
    ray = require_ray()
    if ray.is_initialized():
        if job_env:
            raise PgplugError(
                "this process is already connected to Ray, whose job cannot take pgplug's local plugin files: let "
                "pgplug connect (backend_kwargs address), or install the plugins on every node"
            )
        connection = Connection(False, False, "the Ray instance this process is connected to", 0.0)
    elif address is None:
        try:
            with sigterm_kept():
                ray.init(
                    address="local",  # a new instance, also where RAY_ADDRESS or a `ray start` cluster would be joined
                    num_cpus=max(available_cpus(), n_workers),  # like local processes, workers may share cores
                    object_store_memory=object_store_mib * 2**20,
                    include_dashboard=False,
                    logging_level=logging.WARNING,
                    runtime_env={"env_vars": {"PYTHONPATH": _python_path()}, **job_env},
                )
        except BaseException:
            ray.shutdown()  # whatever of the instance had started
            raise
        connection = Connection(True, True, "a local Ray instance started by pgplug", 0.0)
    else:
        try:
            with sigterm_kept():
                ray.init(address=address, logging_level=logging.WARNING, runtime_env=job_env or None)
        except ConnectionError as exc:
            raise PgplugError(f"cannot join the Ray cluster at {address!r}: {exc}") from None
        connection = Connection(False, True, f"the Ray cluster at {address}", 0.0)
    try:
        connection.cpus = float(ray.cluster_resources().get("CPU", 0.0))
        nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
        connection.description += f" ({nodes} node{'s' if nodes != 1 else ''}, {connection.cpus:g} CPUs)"
        if connection.cpus < n_workers:
            raise PgplugError(
                f"{connection.description} has {connection.cpus:g} CPUs; n_workers={n_workers} needs "
                f"{n_workers} (one each)"
            )
    except BaseException:
        connection.close()
        raise
    return connection
