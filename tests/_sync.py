"""Waiting helpers for tests: events first, a deadline poll only where no event exists.

Project rule: no sleeps as synchronisation.  Wait on something real (a
future, an event, a task, a closed transport); where there is nothing to
wait on (a counter, another process's state), poll the condition with a
deadline via :func:`wait_until`, which fails with a clear message.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiodicom

DEADLINE = 10.0


async def wait_until(predicate: Callable[[], bool], deadline: float, what: str, interval: float = 0.001) -> None:
    """Poll ``predicate`` until it is true; AssertionError naming ``what`` after ``deadline`` seconds.

    Only for conditions with no event to wait on.
    """
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while not predicate():
        if loop.time() > end:
            raise AssertionError(f"not within {deadline} s: {what}")
        await asyncio.sleep(interval)


async def wait_no_associations(server: aiodicom.Server, deadline: float = DEADLINE) -> None:
    """Wait (on the associations' ``closed`` futures) until ``server`` has no open association."""
    try:
        async with asyncio.timeout(deadline):
            while server.associations:
                # the server drops an association from the set in the same
                # callback that resolves its ``closed`` future
                await asyncio.wait([a.closed for a in server.associations])
    except TimeoutError:
        raise AssertionError(
            f"not within {deadline} s: server associations closed ({len(server.associations)} open)"
        ) from None


async def tasks_settle(baseline: set[asyncio.Task[Any]], deadline: float = DEADLINE) -> None:
    """Wait (on the tasks themselves) until every task not in ``baseline`` has finished."""
    me = asyncio.current_task()
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while True:
        extra = {t for t in asyncio.all_tasks() if t not in baseline and t is not me}
        if not extra:
            return
        remaining = end - loop.time()
        if remaining <= 0:
            raise AssertionError(f"tasks still running after {deadline} s: {extra}")
        await asyncio.wait(extra, timeout=remaining)
