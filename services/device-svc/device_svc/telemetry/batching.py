"""Micro-batches of device messages, one transaction each (telemetry/ingest.py, telemetry/snapshots.py).

Messages queue here; a worker takes everything waiting (up to `max_rows`) and applies it in one unit
of work. Under light load a batch is one message, written at once; under heavy load batches grow
while the previous one is being written. `submit()` returns the message's result once its batch
committed: a device's lane waits for it, so one device's messages stay in arrival order while a batch
holds a message of every device talking. A batch that fails (a deadlock victim, a lost connection)
rolled back whole and is applied again; after `attempts` every message of it gets the error.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from prometheus_client import Histogram
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from kit.db import unit_of_work

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class _Waiting(Generic[T, R]):
    item: T
    done: "asyncio.Future[R]"
    key: object = None  # `one_per_key(item)`, computed once: `_take` scans everything pending each batch


class MicroBatcher(Generic[T, R]):
    def __init__(
        self,
        name: str,
        sessionmaker: async_sessionmaker[AsyncSession],
        apply: Callable[[AsyncSession, list[T]], Awaitable[Sequence[R]]],
        *,
        size: Histogram,
        max_rows: int = 500,
        workers: int = 2,
        attempts: int = 3,
        one_per_key: Callable[[T], object] | None = None,
    ) -> None:
        """`apply` writes a batch in the session it is given and returns one result per item, in order.
        `one_per_key`: a batch holds at most one item per key (see `_take`)."""
        self._one_per_key = one_per_key
        self._busy: set[object] = set()
        self._name = name
        self._sessionmaker = sessionmaker
        self._apply = apply
        self._size = size
        self._max_rows = max_rows
        self._workers = max(workers, 1)
        self._attempts = max(attempts, 1)
        self._pending: list[_Waiting[T, R]] = []
        self._wake = asyncio.Event()

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def submit(self, item: T) -> R:
        """Queue one item; returns its result when its batch committed (raises if it could not)."""
        return await self.submit_nowait(item)

    def submit_nowait(self, item: T) -> "asyncio.Future[R]":
        """Queue one item; the future completes when its batch committed (with the error if it could not).
        No task per item: the telemetry intake hands every report over this way (issue 9)."""
        done: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        key = self._one_per_key(item) if self._one_per_key is not None else None
        self._pending.append(_Waiting(item, done, key))
        self._wake.set()
        return done

    async def run(self) -> None:
        await asyncio.gather(*(self._work() for _ in range(self._workers)))

    def _take(self) -> list[_Waiting[T, R]]:
        if self._one_per_key is None:
            taken, self._pending = self._pending[: self._max_rows], self._pending[self._max_rows :]
            return taken
        # At most one item per key (device) in a batch, the oldest: the next one waits for the next batch, so
        # a device's messages are applied in arrival order, each against the state its predecessor committed.
        # A key another worker's batch holds waits too, so two batches never race for one device.
        keys: set[object] = set()
        taken, rest = [], []
        for waiting in self._pending:
            key = waiting.key
            if key in keys or key in self._busy or len(taken) >= self._max_rows:
                rest.append(waiting)
            else:
                keys.add(key)
                taken.append(waiting)
        self._pending = rest
        self._busy |= keys
        return taken

    def _release(self, taken: list[_Waiting[T, R]]) -> None:
        if self._one_per_key is not None:
            self._busy.difference_update(w.key for w in taken)
            if self._pending:
                self._wake.set()

    async def _work(self) -> None:
        while True:
            await self._wake.wait()
            taken = self._take()
            if not taken or not self._pending:
                self._wake.clear()  # nothing takeable now: a batch that ends (`_release`) wakes us again
            if taken:
                try:
                    await self._flush(taken)
                finally:
                    self._release(taken)

    async def close(self) -> None:
        """Write what is still queued (shutdown)."""
        while self._pending:
            taken = self._take()
            if not taken:  # the rest belongs to devices a running batch holds
                await asyncio.sleep(0.01)
                continue
            try:
                await self._flush(taken)
            finally:
                self._release(taken)

    async def _flush(self, taken: list[_Waiting[T, R]]) -> None:
        self._size.observe(len(taken))
        items = [w.item for w in taken]
        for attempt in range(1, self._attempts + 1):
            try:
                async with unit_of_work(self._sessionmaker) as session:
                    results = await self._apply(session, items)
                break
            except asyncio.CancelledError:
                for waiting in taken:
                    if not waiting.done.done():
                        waiting.done.cancel()
                raise
            except Exception as exc:
                if attempt == self._attempts:
                    log.exception(f"{self._name} batch failed", extra={"messages": len(taken)})
                    for waiting in taken:
                        if not waiting.done.done():
                            waiting.done.set_exception(exc)
                    return
                log.warning(f"{self._name} batch retried", extra={"messages": len(taken), "error": repr(exc)[:300]})
                await asyncio.sleep(0.05 * attempt)
        for waiting, result in zip(taken, results, strict=True):
            if not waiting.done.done():
                waiting.done.set_result(result)
