"""A consumer whose loop dies is started again, with a growing pause, and says so (issue 14)."""

import asyncio

import pytest
from prometheus_client import REGISTRY
from sqlalchemy.ext.asyncio import create_async_engine

from kit.app import _consumers_ready
from kit.db import make_sessionmaker
from kit.kafka import EventConsumer


def _restarts(name: str) -> float:
    return REGISTRY.get_sample_value("pb_consumer_restarts_total", {"consumer": name}) or 0.0


async def test_a_dead_consumer_loop_is_started_again_with_backoff() -> None:
    engine = create_async_engine("postgresql+asyncpg://nobody@127.0.0.1:1/none")  # never connected
    consumer = EventConsumer(
        name="supervised",
        bootstrap="127.0.0.1:1",
        group_id="kit-supervision",
        topics=["t"],
        handlers={},
        sessionmaker=make_sessionmaker(engine),
    )
    runs = 0
    third = asyncio.Event()

    async def loop() -> None:  # dies twice (as on a database gone while parking), then runs
        nonlocal runs
        runs += 1
        if runs < 3:
            raise ConnectionError(f"database away ({runs})")
        third.set()
        await asyncio.Event().wait()

    consumer.run = loop  # type: ignore[method-assign]
    before = _restarts("supervised")
    clock = asyncio.get_running_loop().time
    started = clock()
    task = asyncio.create_task(consumer.run_supervised(backoff_s=0.05))
    try:
        await asyncio.wait_for(third.wait(), 10)
        assert clock() - started >= 0.05 + 0.1  # the pause doubled after the second death
        assert consumer.restarts == 2 and _restarts("supervised") - before == 2
        with pytest.raises(RuntimeError, match=r"supervised.*2 restarts, last: ConnectionError"):
            await _consumers_ready([consumer])  # not holding partitions: /readyz says why
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await engine.dispose()
