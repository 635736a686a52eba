"""Stopping a background service: its main loop task and the tasks it started.

Shared by the relay and the webhook dispatcher, which both run one ``_run`` task that
starts a task per send.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Collection

__all__ = ["stop_tasks"]


async def stop_tasks(
    main: asyncio.Task[None] | None, tasks: Collection[asyncio.Task[None]], grace: float
) -> None:
    """Cancel ``main`` and wait for it; give ``tasks`` ``grace`` seconds to end, then
    cancel the rest and wait for them too."""
    if main is not None:
        main.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await main
    if tasks:
        _, pending = await asyncio.wait(tasks, timeout=grace)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
