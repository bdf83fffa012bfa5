"""Small asyncio helpers."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


async def cancel_and_wait(task: asyncio.Task[Any], *, retry_s: float = 0.2) -> None:
    """Cancel `task` and wait until it has finished.

    Python 3.11's `asyncio.wait_for` (used inside aiomqtt's publish/subscribe) can swallow a cancellation that
    arrives just as the awaited operation completes, leaving the task running; so cancel again until it ends.
    """
    while not task.done():
        task.cancel()
        await asyncio.wait((task,), timeout=retry_s)
    with contextlib.suppress(asyncio.CancelledError):
        task.result()
