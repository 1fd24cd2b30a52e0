"""Generator endpoints as server-sent events, on the runner.

Each value a generator endpoint yields is one SSE event, `data: <json>`,
written as soon as it is yielded (no buffering: one ASGI body message per
event). Sync generators run on the endpoint thread pool, one `next()` at a
time, so a handler blocked on its model never stalls the event loop.

The first value is produced before the response starts (`EventStream.first`),
so failures up to there are ordinary HTTP errors. After it, a failure ends the
stream with one `event: error` whose data is `{detail, error_type,
request_id}` (the runner's fate rules still apply: a CUDA error ends the
runner). A caller that goes away closes the generator: its `finally` blocks
and `GeneratorExit` handlers run (for a sync generator, as soon as the
`next()` it is in returns).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
from collections.abc import AsyncIterator
from concurrent.futures import Executor, Future
from typing import TYPE_CHECKING, Any

from pydantic_core import to_jsonable_python

from skyform.app import Endpoint
from skyform.runtime.runner_context import current_request
from skyform.runtime.runner_errors import failure_of

log = logging.getLogger("skyform.runner")

if TYPE_CHECKING:
    from starlette.responses import StreamingResponse

SSE = "text/event-stream"
_END = object()


def sse_event(value: Any) -> bytes:
    """One SSE event carrying `value` as JSON."""
    return b"data: " + json.dumps(to_jsonable_python(value)).encode() + b"\n\n"


def sse_error(detail: str, error_type: str, request_id: str | None) -> bytes:
    """The event that ends a stream which failed after its first event."""
    data = {"detail": detail, "error_type": error_type, "request_id": request_id}
    return b"event: error\ndata: " + json.dumps(data).encode() + b"\n\n"


class EventStream:
    """One generator endpoint's values, produced on demand."""

    def __init__(self, ep: Endpoint, gen: Any, executor: Executor) -> None:
        self.ep = ep
        self._gen = gen
        self._async = hasattr(gen, "__anext__")
        self._executor = executor
        # Every next() of a sync generator runs in this context: its log lines
        # carry the request id, and a fatal error reaches the request's fate.
        self._context = contextvars.copy_context()
        self._pending: Future[Any] | None = None  # the next() running on the pool
        self._done = False

    async def next(self) -> Any:
        """The next value, or `_END`."""
        if self._async:
            try:
                return await self._gen.__anext__()
            except StopAsyncIteration:
                return _END
        self._pending = self._executor.submit(self._context.run, _next, self._gen)
        return await asyncio.wrap_future(self._pending)

    async def first(self) -> Any:
        value = await self.next()
        if value is _END:
            self._done = True
        return value

    async def events(self, first: Any) -> AsyncIterator[bytes]:
        """The SSE bytes: `first`, then every further value; an error event on failure."""
        try:
            value = first
            while value is not _END:
                yield sse_event(value)
                value = await self.next()
            self._done = True
        except (Exception, SystemExit, KeyboardInterrupt) as exc:
            self._done = True
            _status, detail, error_type = failure_of(self.ep, exc)
            ctx = current_request()
            yield sse_error(detail, error_type, ctx.request_id if ctx else None)
        finally:
            if not self._done:
                self._close()

    def _close(self) -> None:
        """The caller left mid-stream: close the generator (its cleanup code runs)."""
        self._done = True
        log.info("%s: the caller went away; closing its stream", self.ep.name)
        if self._async:
            # A task of its own: the caller's cancellation must not cut the cleanup short.
            task = asyncio.ensure_future(_aclose(self._gen))
            _closing.add(task)
            task.add_done_callback(_closing.discard)
        else:
            # On the pool, once the next() in progress (if any) has returned.
            def close(_done: object = None) -> None:
                with contextlib.suppress(RuntimeError):  # the pool is shut down
                    self._executor.submit(self._context.run, _close_quietly, self._gen)

            if self._pending is not None and not self._pending.done():
                self._pending.add_done_callback(close)
            else:
                close()


_closing: set[asyncio.Future[None]] = set()  # strong references until each close finishes


async def _aclose(gen: Any) -> None:
    with contextlib.suppress(Exception):
        await gen.aclose()


def _next(gen: Any) -> Any:
    return next(gen, _END)


def _close_quietly(gen: Any) -> None:
    with contextlib.suppress(Exception):
        gen.close()


def sse_response(events: AsyncIterator[bytes]) -> StreamingResponse:
    """A streaming response of SSE `events`, marked so no proxy buffers it."""
    from starlette.responses import StreamingResponse

    return StreamingResponse(
        events,
        media_type=SSE,
        headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
    )
