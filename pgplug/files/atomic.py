"""Write a file so that its name shows either the old content or the complete new one, never a torn file.

The content goes to a temporary file beside the target, is flushed to disk (``fsync``), and is
renamed over the target; the folder is synced too, so the rename survives a crash. A failure (a full
disk, Ctrl-C) removes the temporary file and leaves the target as it was.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO


def _default_mode() -> int:
    """The permissions ``open()`` would give a new file (0o666 less the umask); mkstemp's are 0o600."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


DEFAULT_MODE = _default_mode()


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[IO[bytes]]:
    """A binary file to write; on success it replaces ``path`` in one rename, on failure ``path`` is untouched."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    try:
        with os.fdopen(descriptor, "wb") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, target.stat().st_mode & 0o777 if target.is_file() else DEFAULT_MODE)
        os.replace(temporary, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        if isinstance(exc, OSError) and exc.filename is None:  # a failed write names no file: name the target
            note = "nothing written, the file there before is untouched"
            raise OSError(exc.errno, f"{exc.strerror or exc} ({note})", str(target)) from exc
        raise
    _sync_folder(target.parent)


def _sync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (not every filesystem allows opening a folder: then skip)."""
    with contextlib.suppress(OSError):
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def zip_path(path: str | os.PathLike[str]) -> Path:
    """Where SB3's ``save`` writes ``path``: with ``.zip`` added when it has no suffix."""
    target = Path(path)
    return Path(f"{target}.zip") if target.suffix == "" else target


__all__ = ["atomic_write", "zip_path"]
