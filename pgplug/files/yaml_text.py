"""Read YAML the user hands over with bounds: a size limit on the file and on what its aliases expand to.

YAML aliases share one node, so a 469-byte file can describe a structure of billions of values (the
"billion laughs"): harmless until something walks it, such as printing it in an error message. The
document is composed first, the size it would have with every alias expanded is counted (each
shared node once), and only a document within :data:`MAX_VALUES` is constructed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from pgplug.errors import PgplugError

#: The largest YAML file read: configs and run records are kilobytes.
MAX_BYTES = 4 * 2**20
#: The most values (scalars, sequences, mappings) a document may hold with its aliases expanded.
MAX_VALUES = 1_000_000


def read_text(path: str | Path, what: str) -> str:
    """The text of ``path``, read up to :data:`MAX_BYTES` (``/dev/zero`` too); one line when it is too big or binary."""
    path = Path(path)
    try:
        with path.open("rb") as file:
            content = file.read(MAX_BYTES + 1)
    except OSError as exc:
        raise PgplugError(f"cannot read {what} {str(path)!r}: {exc.strerror or exc}") from exc
    if len(content) > MAX_BYTES:
        raise PgplugError(f"{what} {str(path)!r} is larger than {MAX_BYTES:,} bytes: not a config")
    try:
        return content.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PgplugError(
            f"{what} {str(path)!r} is not a YAML text file (byte {content[exc.start]:#04x} at offset {exc.start} "
            "is not UTF-8 text)"
        ) from None


def load(text: str, loader: type[yaml.SafeLoader], what: str) -> Any:
    """``yaml.load(text, Loader=loader)`` for one document, refused when its aliases expand past :data:`MAX_VALUES`."""
    reader = loader(text)
    try:
        node = reader.get_single_node()
        if node is None:
            return None
        size = expanded_size(node)
        if size > MAX_VALUES:
            raise PgplugError(
                f"{what} expands to more than {MAX_VALUES:,} values through its aliases (&anchor/*alias); refused"
            )
        return reader.construct_document(node)
    finally:
        reader.dispose()


def expanded_size(root: yaml.Node) -> int:
    """Values in the document rooted at ``root`` with aliases expanded; :data:`MAX_VALUES` + 1 once past it,
    or for a document that contains itself."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            on_path.discard(key)
            total = 1 + sum(sizes[id(child)] for child in _children(node))
            sizes[key] = min(total, MAX_VALUES + 1)
            continue
        if key in sizes:
            continue
        if key in on_path:  # an alias to one of its own ancestors: infinite when expanded
            return MAX_VALUES + 1
        on_path.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in sizes)
    return sizes[id(root)]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


__all__ = ["MAX_BYTES", "MAX_VALUES", "expanded_size", "load", "read_text"]
