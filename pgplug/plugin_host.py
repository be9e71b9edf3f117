"""The plugin host: one pluggy ``PluginManager`` and the registries its hooks fill.

Plugins come from three places, all registered the same way and called through the same hooks:
the built-in modules listed in :data:`pgplug.plugins.BUILTIN_PLUGINS`, the ``pgplug`` entry-point
group of installed distributions, and local modules named with ``--plugin`` or ``PGPLUG_PLUGINS``.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pluggy

from pgplug import hookspecs
from pgplug.errors import PgplugError
from pgplug.registry import Registry

ENTRY_POINT_GROUP = "pgplug"
PLUGINS_ENV_VAR = "PGPLUG_PLUGINS"
BUILTIN_SOURCE = "built-in"


class PluginHost:
    """Owns the plugin manager and builds the estimator and algorithm registries from its hooks."""

    def __init__(self, *, load_entry_points: bool = True, load_env: bool = True) -> None:
        self.pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
        self.pm.add_hookspecs(hookspecs)
        self._sources: dict[str, str] = {}
        self._estimators: Registry | None = None
        self._algorithms: Registry | None = None
        from pgplug.plugins import BUILTIN_PLUGINS

        for module_name in BUILTIN_PLUGINS:
            self.register(importlib.import_module(module_name), name=module_name, source=BUILTIN_SOURCE)
        if load_entry_points:
            self._load_entry_points()
        if load_env:
            for spec in filter(None, os.environ.get(PLUGINS_ENV_VAR, "").split(os.pathsep)):
                self.load_local(spec)

    def register(self, plugin: object, name: str, source: str) -> None:
        """Register a plugin object (usually a module) under ``name``, shown as coming from ``source``."""
        if self.pm.has_plugin(name):
            return
        self.pm.register(plugin, name=name)
        self.pm.check_pending()
        self._sources[name] = source
        self._estimators = self._algorithms = None

    def unregister(self, name: str) -> None:
        self.pm.unregister(name=name)
        self._sources.pop(name, None)
        self._estimators = self._algorithms = None

    def _load_entry_points(self) -> None:
        from importlib.metadata import entry_points

        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if self.pm.has_plugin(ep.name) or self.pm.is_blocked(ep.name):
                continue
            try:
                plugin = ep.load()
            except Exception as exc:
                raise PgplugError(f"plugin entry point {ep.name!r} ({ep.value}) failed to load: {exc}") from exc
            dist = getattr(ep, "dist", None)
            source = f"{dist.name} {dist.version}" if dist is not None else f"entry point {ep.name}"
            self.register(plugin, name=ep.name, source=source)

    def load_local(self, spec: str) -> ModuleType:
        """Load a plugin module given as an importable name or a path to a ``.py`` file."""
        path = Path(spec)
        if spec.endswith(".py") or path.exists():
            if not path.is_file():
                raise PgplugError(f"plugin file {spec!r} does not exist")
            module_name = f"pgplug_local_{path.stem}"
            module = sys.modules.get(module_name)
            if module is None:
                module_spec = importlib.util.spec_from_file_location(module_name, path)
                assert module_spec is not None and module_spec.loader is not None
                module = importlib.util.module_from_spec(module_spec)
                sys.modules[module_name] = module
                try:
                    module_spec.loader.exec_module(module)
                except Exception as exc:
                    del sys.modules[module_name]
                    raise PgplugError(f"plugin file {spec!r} failed to import: {exc}") from exc
            source = f"local file {path}"
        else:
            try:
                module = importlib.import_module(spec)
            except ImportError as exc:
                raise PgplugError(f"plugin module {spec!r} cannot be imported: {exc}") from exc
            source = f"local module {spec}"
        self.register(module, name=module.__name__, source=source)
        return module

    def _build(self, hook_name: str, kind: str) -> Registry:
        registry: Registry = Registry(kind)
        hook = getattr(self.pm.hook, hook_name)
        # Call each implementation on its own, so every registered class knows its plugin.
        for impl in reversed(hook.get_hookimpls()):
            plugin_name = self.pm.get_name(impl.plugin) or repr(impl.plugin)
            source = self._sources.get(plugin_name, plugin_name)
            impl.function(register=lambda cls, source=source: registry.add(cls, source))
        return registry

    @property
    def estimators(self) -> Registry:
        if self._estimators is None:
            self._estimators = self._build("pgplug_register_estimators", "estimator")
        return self._estimators

    @property
    def algorithms(self) -> Registry:
        if self._algorithms is None:
            self._algorithms = self._build("pgplug_register_algorithms", "algorithm")
        return self._algorithms

    def source_of(self, plugin_name: str) -> str:
        return self._sources.get(plugin_name, plugin_name)


_host: PluginHost | None = None


def get_host() -> PluginHost:
    """The process-wide plugin host, built on first use."""
    global _host
    if _host is None:
        _host = PluginHost()
    return _host


def reset_host() -> None:
    """Forget the process-wide host (tests use it to start from a clean set of plugins)."""
    global _host
    _host = None
