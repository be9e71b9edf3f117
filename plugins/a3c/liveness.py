"""The driver's watch on A3C's workers: one that sends nothing for too long ends the run, in one line naming it.

Workers beat through their parameter store (``ParameterStore.beat``) at each change of activity and every
``BEAT_INTERVAL`` seconds within one, so a worker that stays silent is stopped (SIGSTOP), stuck (an env
blocked in ``step()``, a lock held by a dead sibling) or starved. Its limit is ``worker_timeout`` seconds,
or ``SLOWEST_UPDATE_FACTOR`` times the slowest update (pull, rollout, gradient, push) any worker has
reported so far if that is longer: an env whose steps take seconds is slow, not stuck. Start-up (the
forkserver's imports, building the envs, the first rollout) counts like any other silence.

Silence counts only while the driver watches: time the driver itself was away (a callback that ran for
seconds, the whole process group suspended with Ctrl-Z) is not held against the workers.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from pgplug.contracts.backend import Activity, Heartbeat, Message
from pgplug.errors import WorkerTimeoutError

#: A worker may be silent for this many times the slowest update reported so far, if that exceeds its timeout.
SLOWEST_UPDATE_FACTOR = 20
#: A gap between two looks of the driver longer than this is time the driver was away, not the workers' silence.
AWAY_AFTER = 1.0
#: Activities within one update: a worker silent in one of them is named with the update it was in.
IN_AN_UPDATE = (Activity.PULLING, Activity.STEPPING, Activity.COMPUTING, Activity.PUSHING)


def _seconds(value: float) -> str:
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def describe(beat: Heartbeat) -> str:
    """What a worker was last doing, e.g. ``stepping its envs in update 18``."""
    if beat.activity in IN_AN_UPDATE:
        return f"{beat.activity} in update {beat.updates + 1}"
    if beat.activity is Activity.WAITING:
        return f"{beat.activity} after update {beat.updates}"
    return str(beat.activity)


class WorkerWatch:
    """Raises :class:`~pgplug.errors.WorkerTimeoutError` when a worker has been silent for longer than its limit.

    :param worker_timeout: the seconds of silence allowed (more once updates are slow: see ``limit``); None: never
    """

    def __init__(self, worker_timeout: float | None) -> None:
        self.worker_timeout = worker_timeout
        self.slowest_update = 0.0
        self._last_look = time.monotonic()
        self._away: list[tuple[float, float]] = []  # (start, end) of the driver's absences

    @property
    def limit(self) -> float:
        """The seconds of silence allowed now."""
        assert self.worker_timeout is not None
        return max(self.worker_timeout, SLOWEST_UPDATE_FACTOR * self.slowest_update)

    def saw_reports(self, messages: list[Message]) -> None:
        """Take in the slowest update (seconds from pull to push) of each worker report."""
        for kind, _, payload in messages:
            if kind == "report" and payload.get("slowest_update") is not None:
                self.slowest_update = max(self.slowest_update, payload["slowest_update"])

    def check(self, heartbeats: Mapping[int, Heartbeat]) -> None:
        """Look at the workers' latest beats; raise for the one silent longest, if it is past the limit."""
        now = time.monotonic()
        if now - self._last_look > AWAY_AFTER:
            self._away.append((self._last_look, now))
        self._last_look = now
        if self.worker_timeout is None:
            return
        # A finishing worker is the backend's to end if its process does not exit: its work is done and reported.
        silent = [rank for rank, beat in heartbeats.items() if beat.activity is not Activity.FINISHING]
        if not silent:
            return
        rank = max(silent, key=lambda r: (heartbeats[r].seconds, -r))  # the lowest rank of equals (all starting)
        seconds = heartbeats[rank].seconds
        if self._watched(now - seconds, now) <= self.limit:
            return
        raise WorkerTimeoutError(
            f"A3C worker {rank} sent nothing for {_seconds(seconds)} s (last: {describe(heartbeats[rank])}); "
            f"the limit is {_seconds(self.limit)} s (worker_timeout, or {SLOWEST_UPDATE_FACTOR} × the slowest "
            "update if longer)"
        )

    def _watched(self, since: float, now: float) -> float:
        """The seconds between ``since`` and ``now`` that the driver was not away."""
        self._away = [(start, end) for start, end in self._away if end > since]
        away = sum(min(end, now) - max(start, since) for start, end in self._away)
        return now - since - away
