"""The plugin host: one pluggy ``PluginManager`` and the registries its hooks fill.

Plugins come from three places, all registered the same way and called through the same hooks:
the built-in modules the host is given (:data:`pgplug.contracts.registries.BUILTIN_PLUGINS`), the
``pgplug`` entry-point group of installed distributions, and local modules named with ``--plugin``
or ``PGPLUG_PLUGINS``. A plugin is checked when it is registered (unknown hooks, bad hook
arguments, name clashes, classes that do not fit their kind), so a mistake is one ``PgplugError``
naming the plugin, and the host is left as it was before.

The host knows no contract: the registry kinds (estimators, objectives, ...) are given to it by the
layer that defines them, so loading plugins imports nothing of the training stack by itself.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import inspect
import os
import re
import sys
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy

from pgplug.errors import PgplugError, PluginClashError, one_line
from pgplug.plugin import hookspecs
from pgplug.plugin.registry import Registry, RegistryKind

ENTRY_POINT_GROUP = "pgplug"
PLUGINS_ENV_VAR = "PGPLUG_PLUGINS"
DISABLE_ENV_VAR = "PGPLUG_DISABLE_PLUGINS"
BUILTIN_SOURCE = "built-in"
HOOK_PREFIX = "pgplug_"


@dataclass(frozen=True)
class PluginInfo:
    """A registered plugin: its name, where it came from and the hooks it implements."""

    name: str
    source: str
    version: str | None
    hooks: tuple[str, ...]


class PluginManager(pluggy.PluginManager):
    """pluggy's manager that also takes undecorated ``pgplug_*`` functions as hook implementations.

    As pytest does with ``pytest_*``: a forgotten ``@hookimpl`` would otherwise be silently ignored,
    and a misspelled hook with it.
    """

    def parse_hookimpl_opts(self, plugin: object, name: str) -> Any:
        opts = super().parse_hookimpl_opts(plugin, name)
        if (
            opts is None
            and name.startswith(HOOK_PREFIX)
            and inspect.isfunction(inspect.getattr_static(plugin, name, None))
        ):
            return {}
        return opts


def _split(value: str, separator: str) -> list[str]:
    return [part.strip() for part in value.split(separator) if part.strip()]


def _local_module_name(path: Path) -> str:
    """A stable module name for a plugin file: the same file always gets it, another file never."""
    stem = re.sub(r"\W", "_", path.stem)
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:8]
    return f"pgplug_local_{stem}_{digest}"


def _label(name: str, source: str) -> str:
    """How messages name a plugin: a local one by its file or module, others by name and source."""
    return source if source.startswith("local ") else f"plugin {name!r} ({source})"


def _import_error(what: str, exc: BaseException, path: Path | None = None) -> PgplugError:
    """One line saying what failed to import and why, with the plugin file's line number if known."""
    where = ""
    if path is not None and not isinstance(exc, SyntaxError):
        lines = [f.lineno for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename) == path]
        where = f" (line {lines[-1]})" if lines else ""
    return PgplugError(f"{what} failed to import: {type(exc).__name__}: {one_line(exc)}{where}")


class PluginHost:
    """Owns the plugin manager and builds a registry of each given kind from its hook.

    :param kinds: the registries to build (each kind names its ``pgplug_register_*`` hook and base class)
    :param builtins: modules to register first, as ``built-in`` plugins
    :param load_entry_points: load the installed plugins of the ``pgplug`` entry-point group
    :param load_env: read ``PGPLUG_PLUGINS`` (modules or ``.py`` files, ``os.pathsep``-separated)
        and ``PGPLUG_DISABLE_PLUGINS`` (comma-separated plugin or distribution names to skip)
    :param blocked: plugin names never to register (as ``PGPLUG_DISABLE_PLUGINS``)
    """

    def __init__(
        self,
        kinds: Iterable[RegistryKind] = (),
        builtins: Iterable[str] = (),
        *,
        load_entry_points: bool = True,
        load_env: bool = True,
        blocked: Iterable[str] = (),
    ) -> None:
        self.pm = PluginManager(ENTRY_POINT_GROUP)
        self.pm.add_hookspecs(hookspecs)
        self.kinds = tuple(kinds)
        self._sources: dict[str, str] = {}
        self._versions: dict[str, str] = {}
        self._local_specs: dict[str, str] = {}
        self._registries: dict[RegistryKind, Registry] = {}
        self._registries_key: tuple[tuple[str, int], ...] | None = None
        blocked = [*blocked, *(_split(os.environ.get(DISABLE_ENV_VAR, ""), ",") if load_env else [])]
        for name in blocked:
            self.pm.set_blocked(name)
        for module_name in builtins:
            self.register(importlib.import_module(module_name), name=module_name, source=BUILTIN_SOURCE)
        if load_entry_points:
            self._load_entry_points()
        if load_env:
            for spec in _split(os.environ.get(PLUGINS_ENV_VAR, ""), os.pathsep):
                self.load_local(spec)

    # -- registration -----------------------------------------------------------------------

    def register(self, plugin: object, name: str, source: str) -> str | None:
        """Register a plugin object (usually a module) under ``name``, shown as coming from ``source``.

        Returns the name, or None when the name is blocked. Registering the same object again is
        harmless; anything wrong with the plugin is a :class:`PgplugError` and leaves it unregistered.
        """
        if self.pm.is_blocked(name):
            return None
        registered = self.pm.get_plugin(name)
        if registered is plugin or (registered is None and self.pm.is_registered(plugin)):
            return self.pm.get_name(plugin)
        if registered is not None:
            raise PluginClashError(f"plugin name {name!r} is used twice: by {self.source_of(name)} and by {source}")
        try:
            self.pm.register(plugin, name=name)
        except pluggy.PluginValidationError as exc:
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            details = "; ".join(lines[1:] if len(lines) > 1 and lines[0].startswith("Plugin ") else lines)
            raise PgplugError(f"{_label(name, source)} is invalid: {details}") from exc
        self._sources[name] = source
        try:
            self._check_hook_names(plugin, name)
            self._build_registries()
        except PgplugError:
            self.unregister(name)
            raise
        return name

    def unregister(self, name: str) -> object | None:
        """Remove a plugin and its hooks; returns it, or None if no plugin has that name."""
        plugin = self.pm.unregister(name=name)
        self._sources.pop(name, None)
        self._versions.pop(name, None)
        self._local_specs.pop(name, None)
        return plugin

    def _check_hook_names(self, plugin: object, name: str) -> None:
        """pluggy's ``check_pending`` for one plugin: a hook no spec declares is a misspelling."""
        known = sorted(n for n in vars(self.pm.hook) if not n.startswith("_") and getattr(self.pm.hook, n).has_spec())
        for hook_name, caller in vars(self.pm.hook).items():
            if hook_name.startswith("_") or caller.has_spec():
                continue
            if any(impl.plugin is plugin and not impl.optionalhook for impl in caller.get_hookimpls()):
                close = difflib.get_close_matches(hook_name, known, n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"known hooks: {', '.join(known)}"
                raise PgplugError(f"{_label(name, self.source_of(name))} implements unknown hook {hook_name!r}; {hint}")

    def _load_entry_points(self) -> None:
        from importlib.metadata import entry_points

        for ep in entry_points(group=ENTRY_POINT_GROUP):
            dist = ep.dist
            dist_name = dist.name if dist is not None else f"entry point {ep.name}"
            if self.pm.is_blocked(ep.name) or self.pm.is_blocked(dist_name):
                continue
            try:
                plugin = ep.load()
            except Exception as exc:
                error = _import_error(f"plugin {ep.name!r} ({dist_name}, {ep.value})", exc)
                raise PgplugError(f"{error}; set {DISABLE_ENV_VAR}={ep.name} to skip it") from exc
            if self.register(plugin, name=ep.name, source=dist_name) and dist is not None:
                self._versions[ep.name] = dist.version

    def load_local(self, spec: str) -> ModuleType:
        """Load a plugin module given as an importable name or a path to a ``.py`` file.

        Loading the same file or module again returns the loaded module and registers nothing new.
        """
        spec = spec.strip()
        if spec.endswith(".py") or os.sep in spec or (os.altsep is not None and os.altsep in spec):
            path = Path(spec).expanduser().resolve()
            if not path.is_file():
                raise PgplugError(f"plugin file {spec!r} does not exist")
            module = self._import_file(path, spec)
            source, replay = f"local file {path}", str(path)
        else:
            if not spec.replace(".", "").replace("_", "").isalnum():
                raise PgplugError(f"plugin {spec!r} is neither a .py file nor a module name")
            try:
                module = importlib.import_module(spec)
            except ModuleNotFoundError as exc:
                if exc.name is not None and (spec == exc.name or spec.startswith(f"{exc.name}.")):
                    raise PgplugError(
                        f"plugin module {spec!r} not found (give a .py file or an importable module)"
                    ) from None
                raise _import_error(f"plugin module {spec!r}", exc) from exc
            except Exception as exc:
                raise _import_error(f"plugin module {spec!r}", exc) from exc
            source, replay = f"local module {spec}", spec
        name = self.register(module, name=module.__name__, source=source)
        if name is not None and self._sources.get(name) == source:
            self._local_specs.setdefault(name, replay)
        return module

    @staticmethod
    def _import_file(path: Path, spec: str) -> ModuleType:
        module_name = _local_module_name(path)
        module = sys.modules.get(module_name)
        if module is not None:
            return module
        module_spec = importlib.util.spec_from_file_location(module_name, path)
        assert module_spec is not None and module_spec.loader is not None
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_name] = module
        try:
            module_spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[module_name]
            raise _import_error(f"plugin file {spec!r}", exc, path) from exc
        return module

    # -- registries -------------------------------------------------------------------------

    def _build(self, kind: RegistryKind) -> Registry:
        """Call each implementation of a ``register`` hook on its own, so each class knows its plugin.

        Implementations run in registration order, so a clash names the earlier plugin first.
        """
        hook_name = kind.hook
        registry: Registry = Registry(kind.kind, kind.base)
        for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
            if impl.wrapper or impl.hookwrapper:
                continue
            source = self.source_of(impl.plugin_name)

            def register(cls: type, source: str = source) -> None:
                registry.add(cls, source)

            arguments: dict[str, Callable[[type], None]] = {"register": register}
            try:
                impl.function(*(arguments[arg] for arg in impl.argnames))
            except PgplugError:
                raise
            except Exception as exc:
                error = f"{type(exc).__name__}: {one_line(exc)}"
                raise PgplugError(f"{_label(impl.plugin_name, source)} failed in {hook_name}: {error}") from exc
        return registry

    def _build_registries(self) -> None:
        self._registries = {kind: self._build(kind) for kind in self.kinds}
        self._registries_key = self._plugins_key()

    def _plugins_key(self) -> tuple[tuple[str, int], ...]:
        return tuple((name, id(plugin)) for name, plugin in self.pm.list_name_plugin() if plugin is not None)

    def registry(self, kind: RegistryKind) -> Registry:
        """The registered classes of ``kind`` by name (a kind the host was not given is a ``KeyError``)."""
        # Rebuilt when plugins changed behind the host's back (``pm.set_blocked``, ``pm.register``).
        if self._registries_key != self._plugins_key():
            self._build_registries()
        return self._registries[kind]

    def call(self, hook_name: str, **kwargs: Any) -> list[Any]:
        """Call hook ``hook_name``, skipping the call when no plugin implements it.

        For hooks called every update: an empty pluggy call still costs microseconds.
        """
        caller = getattr(self.pm.hook, hook_name)
        return caller(**kwargs) if caller.get_hookimpls() else []

    def call_checked(self, hook_name: str, **kwargs: Any) -> list[Any]:
        """Call hook ``hook_name`` as pluggy does; an exception of one of its implementations becomes one
        :class:`PgplugError` naming the plugin (one the plugin raised as a ``PgplugError`` passes as it is).

        For the hooks a command calls once (``pgplug_addoption``, ``pgplug_configure``): a plugin's mistake is
        one line naming it, never a traceback.
        """
        caller = getattr(self.pm.hook, hook_name)
        try:
            return caller(**kwargs)
        except PgplugError:
            raise
        except Exception as exc:
            error = f"{type(exc).__name__}: {one_line(exc)}"
            raise PgplugError(f"{self._raised_by(caller, exc)} failed in {hook_name}: {error}") from exc

    def _raised_by(self, caller: Any, exc: BaseException) -> str:
        """How messages name the plugin whose hook implementation raised ``exc`` (the innermost on its traceback)."""
        codes = {getattr(impl.function, "__code__", None): impl.plugin_name for impl in caller.get_hookimpls()}
        names = [codes[frame.f_code] for frame, _ in traceback.walk_tb(exc.__traceback__) if frame.f_code in codes]
        return _label(names[-1], self.source_of(names[-1])) if names else "a plugin"

    def implements(self, hook_name: str) -> bool:
        """Whether any registered plugin implements hook ``hook_name``."""
        return bool(getattr(self.pm.hook, hook_name).get_hookimpls())

    def source_of(self, plugin_name: str) -> str:
        """Where a plugin came from: ``built-in``, a distribution name, ``local file ...``."""
        return self._sources.get(plugin_name, plugin_name)

    def local_plugins(self) -> list[str]:
        """The ``load_local`` specs registered (absolute paths for files), in order.

        Another process (an A3C worker) that loads them gets the same module names, so objects of
        their classes unpickle there.
        """
        return [
            self._local_specs[name]
            for name, plugin in self.pm.list_name_plugin()
            if plugin is not None and name in self._local_specs
        ]

    def local_plugin_modules(self) -> list[str]:
        """The module names of the ``load_local`` plugins, in order: what loads them where the files were shipped
        under those names (an A3C worker on another machine)."""
        return [name for name, plugin in self.pm.list_name_plugin() if plugin is not None and name in self._local_specs]

    def local_plugin_files(self) -> dict[str, Path]:
        """The ``load_local`` plugins given as files: module name → file."""
        return {
            name: Path(self._local_specs[name])
            for name in self.local_plugin_modules()
            if self._local_specs[name].endswith(".py")
        }

    def plugins(self) -> list[PluginInfo]:
        """The registered plugins in registration order (blocked ones are not registered)."""
        return [
            PluginInfo(
                name=name,
                source=self.source_of(name),
                version=self._versions.get(name),
                hooks=tuple(sorted(caller.name for caller in self.pm.get_hookcallers(plugin) or [])),
            )
            for name, plugin in self.pm.list_name_plugin()
            if plugin is not None
        ]
