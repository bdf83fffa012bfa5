"""A stopping service ends: a background task that will not stop is left behind after a bounded wait, named in
the log with the coroutines it is suspended in, instead of holding the process (a pod ignoring SIGTERM, a test
run that hangs in a fixture's teardown)."""

import asyncio
import logging

import pytest

from kit import app as kit_app


async def test_a_task_that_ignores_cancellation_is_left_behind_and_named(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(kit_app, "SHUTDOWN_STEP_S", 0.2)
    release = asyncio.Event()

    async def stubborn_inner() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            await release.wait()  # swallows the cancellation, as a client stuck in its own stop would

    async def stubborn() -> None:
        await stubborn_inner()

    async def polite() -> None:
        await asyncio.sleep(3600)

    tasks = [asyncio.create_task(stubborn(), name="stubborn"), asyncio.create_task(polite(), name="polite")]
    await asyncio.sleep(0)
    with caplog.at_level(logging.ERROR, logger="kit.app"):
        await asyncio.wait_for(kit_app._cancel_all(tasks), 5)
    assert tasks[1].cancelled()
    [record] = [r for r in caplog.records if "did not stop" in r.getMessage()]
    message = record.getMessage()
    assert "task stubborn" in message and "stubborn_inner" in message and "polite" not in message
    release.set()
    await tasks[0]


async def test_a_client_that_never_stops_is_left_behind(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(kit_app, "SHUTDOWN_STEP_S", 0.2)
    never = asyncio.Event()
    with caplog.at_level(logging.ERROR, logger="kit.app"):
        await asyncio.wait_for(kit_app._bounded_stop("producer", never.wait()), 5)
    assert any("the producer did not stop" in r.getMessage() for r in caplog.records)
