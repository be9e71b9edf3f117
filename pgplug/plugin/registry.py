"""Name → class registries, in the manner of hatch's plugin manager.

A :class:`RegistryKind` says what one registration hook fills; the contract that defines the base
class declares its kind (tox's model: the registry lives with its contract), and the plugin host
builds a :class:`Registry` for each kind it is given, without knowing any of them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from pgplug.errors import PgplugError, PluginClashError, UnknownNameError

T = TypeVar("T", bound=type)


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered class and the plugin it came from."""

    name: str
    cls: T
    source: str

    @property
    def description(self) -> str:
        """The first line of the class docstring."""
        doc = (self.cls.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""


@dataclass(frozen=True)
class RegistryKind:
    """One kind of registered class: what it is called, the hook that registers it, the base it must subclass.

    :param kind: singular noun for messages (``estimator``)
    :param hook: the ``pgplug_register_*`` hook whose ``register`` argument fills it
    :param base: every registered class must subclass it
    """

    kind: str
    hook: str
    base: type


class Registry(Generic[T]):
    """Maps names to classes. Each class names itself with a ``name`` class attribute.

    :param kind: what the registry holds (``estimator``, ``algorithm``), for messages
    :param base: when given, every registered class must subclass it
    """

    def __init__(self, kind: str, base: type | None = None) -> None:
        self.kind = kind
        self.base = base
        self._entries: dict[str, Entry[T]] = {}

    def add(self, cls: T, source: str) -> None:
        """Add ``cls`` under its ``name``; a second class under the same name is a :class:`PluginClashError`."""
        if not isinstance(cls, type):
            raise PgplugError(f"{source} registered {cls!r} as an {self.kind}; register() takes a class")
        label = f"{self.kind} class {cls.__module__}.{cls.__qualname__} from {source}"
        if self.base is not None and not issubclass(cls, self.base):
            raise PgplugError(f"{label} does not subclass {self.base.__module__}.{self.base.__qualname__}")
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not name:
            raise PgplugError(f"{label} has no 'name' attribute")
        existing = self._entries.get(name)
        if existing is not None:
            if existing.cls is cls:
                return
            raise PluginClashError(
                f"{self.kind} name {name!r} is registered twice: by {existing.source} "
                f"({existing.cls.__module__}.{existing.cls.__qualname__}) and by {source} "
                f"({cls.__module__}.{cls.__qualname__})"
            )
        self._entries[name] = Entry(name, cls, source)

    def get(self, name: str) -> T:
        return self.entry(name).cls

    def entry(self, name: str) -> Entry[T]:
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise UnknownNameError(self.kind, name, self._entries) from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(sorted(self._entries.values(), key=lambda e: e.name))

    def __len__(self) -> int:
        return len(self._entries)
