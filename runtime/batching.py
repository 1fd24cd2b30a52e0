"""Dynamic batching: concurrent one-item calls of an endpoint, run as one batch.

Why: a model evaluates 32 inputs at once for little more than the cost of
one, but callers send one input each. An endpoint declared with
`@endpoint(path, batch_size=N, batch_wait_ms=M)` has a handler that takes
`list[In]` and returns `list[Out]`; callers still send one `In` and get one
`Out`. The runner gathers the requests in flight into batches:

- a batch runs as soon as N items wait, or once the oldest has waited M ms;
- one batch of an endpoint runs at a time: while it runs, new items queue,
  and the next batch starts the moment it ends (they have waited already),
  so under load batches fill up by themselves and the wait adds nothing;
- results go back in order. A slot holding an exception instance fails that
  item alone (an `HTTPException` keeps its status, anything else is the
  endpoint's usual 500); a handler that raises fails every item of the batch,
  through the same error mapping as an unbatched call (a CUDA error still
  answers 503 and ends the runner). A result list of the wrong length fails
  the whole batch: which item is whose cannot be known.
- an item whose caller has gone (its request was cancelled, or timed out)
  before its batch started is left out of the batch.

How many requests a runner takes at once is still `max_multiplexing` (the
SDK refuses a `batch_size` above it): the gateway never sends more, so a
batch can never exceed what the App said it can hold.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

from pydantic import BaseModel

from skyform.app import Endpoint


class BatchResultError(RuntimeError):
    """A batched handler returned something that does not match its inputs one to one."""


class Batcher:
    """Gathers one endpoint's concurrent items into batches and runs them one at a time."""

    def __init__(
        self,
        method: Callable[[list[Any]], Any],
        *,
        name: str,
        is_async: bool,
        batch_size: int,
        batch_wait_ms: float,
        executor: Executor,
    ) -> None:
        self._method = method
        self._name = name
        self._is_async = is_async
        self._size = max(1, batch_size)
        self._wait = max(0.0, batch_wait_ms) / 1000.0
        self._executor = executor
        self._queue: deque[tuple[Any, asyncio.Future[Any], float]] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._running = False
        self.batches = 0  # batches run so far (for tests and metrics)
        self.items = 0  # items in them

    async def submit(self, item: BaseModel | None) -> Any:
        """Queue one item; return its result (or raise its error) once its batch has run."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append((item, future, loop.time()))
        self._schedule(loop)
        return await future

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start a batch when one is due, else make sure a timer will start it."""
        if self._running:
            return  # the running batch starts the next one when it ends
        self._drop_abandoned()
        if not self._queue:
            self._cancel_timer()
            return
        oldest = self._queue[0][2]
        due = oldest + self._wait
        if len(self._queue) >= self._size or loop.time() >= due:
            self._cancel_timer()
            self._start(loop)
        elif self._timer is None:
            self._timer = loop.call_at(due, self._on_timer, loop)

    def _on_timer(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        self._schedule(loop)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _drop_abandoned(self) -> None:
        if any(future.done() for _, future, _ in self._queue):
            self._queue = deque(entry for entry in self._queue if not entry[1].done())

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        batch = [self._queue.popleft() for _ in range(min(self._size, len(self._queue)))]
        self._running = True
        loop.create_task(self._run(loop, [(item, future) for item, future, _ in batch]))

    async def _run(
        self, loop: asyncio.AbstractEventLoop, batch: list[tuple[Any, asyncio.Future[Any]]]
    ) -> None:
        items = [item for item, _ in batch]
        try:
            try:
                if self._is_async:
                    results = await self._method(items)
                else:
                    context = contextvars.copy_context()
                    results = await loop.run_in_executor(
                        self._executor, context.run, self._method, items
                    )
                results = self._check(results, len(items))
            except asyncio.CancelledError:  # the runner is shutting down
                for _, future in batch:
                    future.cancel()
                raise
            except BaseException as exc:  # every item shares the batch's failure
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                return
            self.batches += 1
            self.items += len(items)
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)
        finally:
            self._running = False
            self._schedule(loop)

    def _check(self, results: Any, count: int) -> list[Any]:
        if not isinstance(results, (list, tuple)):
            raise BatchResultError(
                f"{self._name} is batched and must return a list (one result per input), "
                f"got {type(results).__name__}"
            )
        if len(results) != count:
            raise BatchResultError(
                f"{self._name} returned {len(results)} results for a batch of {count} inputs"
            )
        return list(results)


def batchers_for(
    instance: object, endpoints: list[Endpoint], executor: Executor
) -> dict[str, Batcher]:
    """One `Batcher` per batched endpoint of an App instance (the runner's hook)."""
    found: dict[str, Batcher] = {}
    for ep in endpoints:
        if ep.spec.batch_size is None:
            continue
        found[ep.name] = Batcher(
            getattr(instance, ep.name),
            name=ep.name,
            is_async=ep.is_async,
            batch_size=ep.spec.batch_size,
            batch_wait_ms=ep.spec.batch_wait_ms,
            executor=executor,
        )
    return found
