"""SIGTERM and SIGHUP stop a command as Ctrl-C does, so that ``kill``, ``timeout``, ``docker stop`` and Slurm
save the model instead of losing the run.

Inside :func:`stop_signals_interrupt`, SIGINT, SIGTERM and SIGHUP raise :class:`Stopped` (a
``KeyboardInterrupt``) in the main thread. Inside :func:`uninterrupted` (a save) they wait: the first
one is raised when the block ends, so that a second Ctrl-C cannot cut the save short. The exit code is
128 + the signal number, as a shell reports a process the signal killed.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Stopped(KeyboardInterrupt):
    """A stop signal arrived; ``signum`` says which."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def exit_code(interrupt: KeyboardInterrupt) -> int:
    """128 + the signal's number (130 for Ctrl-C and a plain ``KeyboardInterrupt``, 143 for SIGTERM).

    A library may catch the :class:`Stopped` a signal raised and raise a plain ``KeyboardInterrupt`` instead (Ray's
    ``ray.get`` can, when the signal lands inside it): then the last stop signal received names the code.
    """
    signum = getattr(interrupt, "signum", None) or _State.received
    return 128 + (signum or signal.SIGINT)


class _State:
    deferring = False
    pending: int | None = None
    #: The last stop signal received, for :func:`exit_code`.
    received: int | None = None


def _on_signal(signum: int, frame: FrameType | None) -> None:
    _State.received = signum
    if _State.deferring:
        _State.pending = _State.pending or signum
        return
    raise Stopped(signum)


@contextlib.contextmanager
def stop_signals_interrupt() -> Iterator[None]:
    """Raise :class:`Stopped` on a stop signal (the handlers are the main thread's: elsewhere this does nothing)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _State.received = None
    previous = {signum: signal.signal(signum, _on_signal) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def uninterrupted() -> Iterator[None]:
    """Hold stop signals back while the block runs (a save); the first one is raised after it."""
    outer = _State.deferring
    _State.deferring = True
    try:
        yield
    finally:
        _State.deferring = outer
        if not outer and _State.pending is not None:
            pending, _State.pending = _State.pending, None
            raise Stopped(pending)
