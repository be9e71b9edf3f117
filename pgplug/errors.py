"""The errors pgplug shows to users: each message is one line naming the bad value and the valid choices."""

from __future__ import annotations

from collections.abc import Iterable


class PgplugError(ValueError):
    """A user-facing error. The CLI prints its message on one line and exits non-zero."""


class PgplugWarning(UserWarning):
    """A user-facing warning: a value that works, but probably not as meant. The CLI prints it on one line."""


class UnknownNameError(PgplugError):
    """A name that no registry, config or option knows."""

    def __init__(self, kind: str, name: object, valid: Iterable[str]) -> None:
        choices = ", ".join(sorted(valid)) or "(none registered)"
        super().__init__(f"unknown {kind} {name!r}; valid {kind}s: {choices}")
        self.kind = kind
        self.name = name


class PluginClashError(PgplugError):
    """Two plugins registered the same name."""


class IncompatibleEstimatorError(PgplugError):
    """An estimator the algorithm cannot use (e.g. one that needs complete episodes in A2C)."""


class IncompatibleObjectiveError(PgplugError):
    """An objective the algorithm cannot minimise, or one that takes no estimator given an estimator."""


class InvalidPolicyError(PgplugError, AssertionError):
    """A policy that cannot be built for the env's spaces. Also an ``AssertionError``, which SB3 raises for these,
    so that code written against SB3 catches it as it did."""


class DivergedError(PgplugError):
    """The loss became NaN or infinite: the policy's outputs or the data are no longer finite."""


class WorkerError(PgplugError):
    """A worker of an asynchronous algorithm stopped on a user-facing error (a diverged loss, a bad value)."""


class WorkerTimeoutError(WorkerError):
    """A worker of an asynchronous algorithm sent nothing for longer than its limit (stopped, or stuck in an env)."""


def one_line(message: object) -> str:
    """Collapse a message to its first non-empty line, for terminal output."""
    for line in str(message).splitlines():
        if line.strip():
            return line.strip()
    return str(message)
