"""Periodic jobs (sweepers, reconcilers): one loop for every service. A job runs every `interval_s`, or
earlier when a deadline it reported, or one rung on its Alarm in-process, comes due; so a job that has
work at known times does not poll the database at rest. A failing job is logged and tried again at its
next turn: an outage (database away) must not stop a sweeper, and a poison row is the job's business
(it logs and skips it), never the loop's."""

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

log = logging.getLogger(__name__)

# A job's answer: when it next has work (the earliest deadline it saw), or None (then `interval_s`).
Job = Callable[[], Awaitable[datetime | None]]


class Alarm:
    """The earliest deadline known in-process for a job; ringing an earlier one wakes the job's loop.
    E.g. device-svc rings it with each eject command's deadline once the command is committed."""

    def __init__(self) -> None:
        self._at: float | None = None  # loop-independent monotonic time
        self._changed = asyncio.Event()

    def ring_at(self, when: datetime) -> None:
        at = time.monotonic() + max((when - datetime.now(UTC)).total_seconds(), 0.0)
        if self._at is None or at < self._at:
            self._at = at
            self._changed.set()

    def due_at(self) -> float | None:
        return self._at

    def consume_until(self, now: float) -> None:
        """A run at `now` covers every deadline up to it."""
        if self._at is not None and self._at <= now:
            self._at = None

    async def wait(self, seconds: float) -> None:
        if seconds <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), seconds)
        self._changed.clear()


async def run_periodically(
    job: Job,
    *,
    name: str,
    interval_s: float,
    alarm: Alarm | None = None,
    min_gap_s: float = 0.1,
    run_at_start: bool = True,
) -> None:
    """Run `job` every `interval_s` (the fallback that finds work nobody rang for, e.g. another replica's),
    at the deadline it returned or its alarm rang if earlier, but never twice within `min_gap_s` (a burst
    of deadlines is swept together)."""
    alarm = alarm or Alarm()
    now = time.monotonic()
    next_at = now if run_at_start else now + interval_s
    last_run = float("-inf")
    while True:
        now = time.monotonic()
        due = min(next_at, alarm.due_at() or next_at)
        due = max(due, last_run + min_gap_s)
        if due > now:
            await alarm.wait(due - now)
            continue  # re-evaluate: the alarm may have been rung earlier, or the time has come
        last_run = time.monotonic()
        alarm.consume_until(last_run)
        next_at = last_run + interval_s
        try:
            reported = await job()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("periodic job failed; it runs again at its next turn", extra={"job": name})
            continue
        if reported is not None:
            alarm.ring_at(reported)
