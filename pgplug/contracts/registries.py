"""The process-wide plugin host and the registries it fills, one per contract.

Each contract declares its registry kind next to its base class (:data:`~pgplug.contracts.estimator.ESTIMATORS`,
...); this module hands those kinds and the built-in plugin modules to the generic
:class:`~pgplug.plugin.host.PluginHost`, and looks classes up by name.
"""

from __future__ import annotations

import inspect
from typing import Any

from pgplug.contracts.algorithm import ALGORITHMS
from pgplug.contracts.backend import BACKENDS
from pgplug.contracts.estimator import ESTIMATORS, GAMMA_T, Estimator
from pgplug.contracts.objective import OBJECTIVES, Objective
from pgplug.errors import PgplugError
from pgplug.plugin.host import PluginHost
from pgplug.plugin.registry import Registry
from pgplug.validation import check_bool

#: pgplug's built-in plugins. They are ordinary plugins, registered through the same hooks as any
#: entry-point or local plugin (as pytest keeps its list of default plugins).
BUILTIN_PLUGINS: tuple[str, ...] = (
    "pgplug.plugins.estimators",
    "pgplug.plugins.objectives",
    "pgplug.plugins.reinforce",
    "pgplug.plugins.a2c",
    "pgplug.plugins.a3c",
)
KINDS = (ESTIMATORS, OBJECTIVES, ALGORITHMS, BACKENDS)


class Host(PluginHost):
    """The plugin host with pgplug's registries, one property per contract."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(KINDS, BUILTIN_PLUGINS, **kwargs)

    @property
    def estimators(self) -> Registry:
        """Registered estimator classes by name."""
        return self.registry(ESTIMATORS)

    @property
    def objectives(self) -> Registry:
        """Registered objective classes by name."""
        return self.registry(OBJECTIVES)

    @property
    def algorithms(self) -> Registry:
        """Registered algorithm classes by name."""
        return self.registry(ALGORITHMS)

    @property
    def backends(self) -> Registry:
        """Registered worker backend classes by name."""
        return self.registry(BACKENDS)


_host: Host | None = None


def get_host() -> Host:
    """The process-wide plugin host, built on first use."""
    global _host
    if _host is None:
        _host = Host()
    return _host


def reset_host() -> None:
    """Forget the process-wide host (tests use it to start from a clean set of plugins)."""
    global _host
    _host = None


def call_hook(name: str, **kwargs: Any) -> list[Any]:
    """Call hook ``name`` of the process-wide host, skipping the call when no plugin implements it."""
    return get_host().call(name, **kwargs)


def construct(
    registry: Registry, name: str, kwargs: dict[str, Any] | None, what: str, also_valid: tuple[str, ...] = ()
) -> Any:
    """An instance of the class registered as ``name``, with a one-line error for arguments it does not take
    (listing its constructor's and ``also_valid``, the keys the caller takes off before)."""
    cls = registry.get(name)
    try:
        return cls(**(kwargs or {}))
    except TypeError as exc:
        variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        params = inspect.signature(cls.__init__).parameters.values()
        valid = [p.name for p in params if p.name != "self" and p.kind not in variadic] + list(also_valid)
        raise PgplugError(
            f"bad {what}_kwargs {kwargs!r} for {what} {name!r}: {exc}; valid keys: {', '.join(valid) or '(none)'}"
        ) from exc


def make_estimator(spec: str | Estimator, kwargs: dict[str, Any] | None = None) -> Estimator:
    """An estimator from a registered name (plus its keyword arguments) or an instance.

    Every estimator also takes ``gamma_t`` (:attr:`~pgplug.contracts.estimator.Estimator.gamma_t`), set here rather
    than by each constructor, so a third-party estimator has it without a line of its own.
    """
    if isinstance(spec, Estimator):
        if kwargs:
            raise PgplugError("estimator_kwargs are only used with an estimator name, not an instance")
        return spec
    own = dict(kwargs or {})
    gamma_t = check_bool(f"estimator {spec!r}'s {GAMMA_T}", own.pop(GAMMA_T, False))
    estimator = construct(get_host().estimators, spec, own, "estimator", also_valid=(GAMMA_T,))
    estimator.gamma_t = gamma_t
    return estimator


def make_objective(spec: str | Objective, kwargs: dict[str, Any] | None = None) -> Objective:
    """An objective from a registered name (plus its keyword arguments) or an instance."""
    if isinstance(spec, Objective):
        if kwargs:
            raise PgplugError("objective_kwargs are only used with an objective name, not an instance")
        return spec
    return construct(get_host().objectives, spec, kwargs, "objective")
