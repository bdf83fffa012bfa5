"""Periodic jobs: at rest a job waits its interval; a deadline rung in-process or reported by the job
brings its next run forward; a failing job runs again at its next turn."""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

from kit.periodic import Alarm, Job, run_periodically
from kit.testing import eventually

AN_HOUR = 3600.0


@asynccontextmanager
async def running(
    job: Job, *, interval_s: float, alarm: Alarm | None = None, min_gap_s: float = 0.1, run_at_start: bool = True
) -> AsyncIterator[None]:
    task = asyncio.create_task(
        run_periodically(
            job, name="test-job", interval_s=interval_s, alarm=alarm, min_gap_s=min_gap_s, run_at_start=run_at_start
        )
    )
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def counted() -> tuple[list[datetime], Job]:
    runs: list[datetime] = []

    async def job() -> None:
        runs.append(datetime.now(UTC))

    return runs, job


def at_least(runs: list[datetime], n: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return len(runs) >= n

    return check


async def test_a_job_runs_at_start_then_when_its_alarm_rings_not_before() -> None:
    runs, job = counted()
    alarm = Alarm()
    async with running(job, interval_s=AN_HOUR, alarm=alarm):
        await eventually(at_least(runs, 1), timeout=5, what="the run at start")
        deadline = datetime.now(UTC) + timedelta(seconds=0.3)
        alarm.ring_at(deadline)
        await eventually(at_least(runs, 2), timeout=5, what="the run at the deadline")
        assert runs[1] >= deadline
        assert len(runs) == 2  # nothing polled in between, and the hour has not passed


async def test_an_earlier_deadline_wakes_a_job_already_waiting_for_a_later_one() -> None:
    runs, job = counted()
    alarm = Alarm()
    async with running(job, interval_s=AN_HOUR, alarm=alarm, run_at_start=False):
        alarm.ring_at(datetime.now(UTC) + timedelta(seconds=AN_HOUR / 2))
        alarm.ring_at(datetime.now(UTC) + timedelta(seconds=0.2))
        await eventually(at_least(runs, 1), timeout=5, what="the run at the earlier deadline")


async def test_a_job_that_reports_its_next_deadline_runs_then() -> None:
    runs: list[datetime] = []
    next_due = datetime.now(UTC) + timedelta(seconds=0.3)

    async def job() -> datetime | None:
        runs.append(datetime.now(UTC))
        return next_due if len(runs) == 1 else None

    async with running(job, interval_s=AN_HOUR):
        await eventually(at_least(runs, 2), timeout=5, what="the run at the reported deadline")
        assert runs[1] >= next_due


async def test_a_failing_job_runs_again_at_its_next_turn() -> None:
    runs: list[datetime] = []

    async def job() -> None:
        runs.append(datetime.now(UTC))
        if len(runs) < 3:
            raise RuntimeError("database away")

    async with running(job, interval_s=0.05, min_gap_s=0.0):
        await eventually(at_least(runs, 3), timeout=5, what="the job to survive its failures")
