"""Wake whoever waits for the gateway's apps or runners to change (`GET /-/apps?wait=S`).

`apply` must see a runner become ready the moment it does ("apply means
live"), without asking the gateway several times a second through a runner's
whole `setup()`: it long-polls `/-/apps`, and the scheduler calls `notify()`
wherever a runner or an app changes state. A waiter compares what it would
answer with what its caller already has (an ETag), so a notification that
changed nothing it shows costs one comparison, and one the scheduler forgot
is caught by the waiter's own bounded re-check.
"""

from __future__ import annotations

import asyncio
import contextlib


class Changes:
    """A broadcast "something changed" signal for coroutines on one event loop."""

    def __init__(self) -> None:
        self._event: asyncio.Event | None = None

    def notify(self) -> None:
        """Wake every current waiter (no waiter: nothing to do)."""
        event, self._event = self._event, None
        if event is not None:
            event.set()

    async def wait(self, timeout: float) -> bool:
        """Until the next `notify()` or `timeout` seconds; True when notified."""
        if self._event is None:
            self._event = asyncio.Event()
        event = self._event
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)
            return True
        return False
