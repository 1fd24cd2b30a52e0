"""Calling an App's endpoints: threads for sync ones, time limits, failures to statuses.

Routes, input validation and output serialisation are FastAPI's, built by
`skyform.openapi.endpoint_api` exactly as for the bundle's stored schema;
this module supplies the `invoke` those routes call.

- Sync endpoints run on a pool of `max_multiplexing` threads, so a blocking
  handler never stalls the event loop (health checks keep answering) and the
  runner runs no more sync calls at once than the App said it can take.
- `request_timeout` bounds every call (checked four times a second). A thread
  cannot be killed, so a call that overruns gets 504 (`error_type:
  request_timeout`, also in the `x-skyform-error-type` header) and the runner
  then ends itself, as it may be stuck (fal does the same): a retry lands on a
  fresh runner instead of queueing behind a hung thread.
- An uncaught exception is logged with the request id and answered 500 with a
  JSON error carrying that id; `HTTPException`s pass through with their status.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from starlette.exceptions import HTTPException

from skyform.app import App, Endpoint
from skyform.runtime.batching import batchers_for
from skyform.runtime.runner_context import current_request
from skyform.runtime.runner_errors import (
    ERROR_TYPE_HEADER,
    EXIT_REQUEST_TIMEOUT,
    error_body,
    failure_of,
)

if TYPE_CHECKING:
    from fastapi import FastAPI
    from starlette.responses import JSONResponse

log = logging.getLogger("skyform.runner")


class EndpointInvoker:
    """The `invoke` of an App instance's routes.

    `request_timeout` is enforced by one watchdog task that checks the calls in
    flight a few times a second, not by a timer per request: a timer costs more
    than the rest of the runner's per-request work together.
    """

    def __init__(
        self, instance: App, endpoints: list[Endpoint], request_timeout: float, max_threads: int
    ) -> None:
        self._methods = {ep.name: getattr(instance, ep.name) for ep in endpoints}
        self._timeout = request_timeout
        self._running: dict[asyncio.Task[Any], float] = {}  # task -> deadline (loop time)
        self._expired: set[asyncio.Task[Any]] = set()
        self._watchdog: asyncio.Task[None] | None = None
        self.executor = ThreadPoolExecutor(
            max_workers=max(1, max_threads), thread_name_prefix="skyform-endpoint"
        )
        self._batchers = batchers_for(instance, endpoints, self.executor)

    async def __call__(self, ep: Endpoint, kwargs: dict[str, Any]) -> Any:
        method = self._methods[ep.name]
        if ep.kind == "websocket":
            # Open for as long as the client likes: no request_timeout.
            await serve_websocket(ep, method, kwargs)
            return None
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        self._running[task] = loop.time() + self._timeout
        if self._watchdog is None:
            self._watchdog = loop.create_task(self._watch())
        try:
            if ep.batched:  # gathered with concurrent calls into one batch
                (item,) = kwargs.values()
                return await self._batchers[ep.name].submit(item)
            if ep.kind == "stream":
                # Up to the first event, a stream is a call like any other: its
                # errors get their status (and a 503 its fate), request_timeout
                # bounds the wait, and the gateway may still retry it.
                return await self._open_stream(ep, method, kwargs)
            if ep.is_async:
                return await method(**kwargs)
            context = contextvars.copy_context()
            return await loop.run_in_executor(
                self.executor, functools.partial(context.run, method, **kwargs)
            )
        except HTTPException:
            raise
        except asyncio.CancelledError:
            if task not in self._expired:
                raise
            self._expired.discard(task)
            task.uncancel()
            return _timed_out(ep, self._timeout)
        except (Exception, SystemExit, KeyboardInterrupt) as exc:
            return _failed(ep, exc)
        finally:
            del self._running[task]
            if task in self._expired:  # the handler swallowed the cancellation
                self._expired.discard(task)
                task.uncancel()

    async def _open_stream(self, ep: Endpoint, method: Any, kwargs: dict[str, Any]) -> Any:
        """Run a generator endpoint up to its first value; the rest streams as SSE."""
        from skyform.runtime.runner_stream import EventStream, sse_response

        stream = EventStream(ep, method(**kwargs), self.executor)
        first = await stream.first()
        return sse_response(stream.events(first))

    async def _watch(self) -> None:
        """Cancel calls that run past their deadline (at most `interval` late)."""
        loop = asyncio.get_running_loop()
        interval = min(0.25, self._timeout / 4)
        while True:
            await asyncio.sleep(interval)
            now = loop.time()
            for task, deadline in list(self._running.items()):
                if deadline <= now and task not in self._expired:
                    self._expired.add(task)
                    task.cancel()


def build_api(cls: type[App], invoker: EndpointInvoker, endpoints: list[Endpoint]) -> FastAPI:
    """The App's FastAPI app, with JSON 500s (carrying the request id) for output errors."""
    from fastapi.exceptions import ResponseValidationError
    from starlette.requests import Request

    from skyform.openapi import endpoint_api

    api = endpoint_api(cls, invoker, endpoints)

    async def bad_output(_request: Request, exc: Exception) -> JSONResponse:
        ctx = current_request()
        log.error("endpoint returned a value that does not match its output type: %s", exc)
        return _json(
            500,
            "endpoint returned a value that does not match its declared output type",
            "invalid_output",
            ctx.request_id if ctx else None,
        )

    api.add_exception_handler(ResponseValidationError, bad_output)
    return api


def _timed_out(ep: Endpoint, timeout: float) -> JSONResponse:
    ctx = current_request()
    reason = f"{ep.name} ran longer than request_timeout ({timeout:g}s)"
    log.error("%s; answering 504 and stopping this runner (its thread may be stuck)", reason)
    if ctx is not None:
        ctx.end_runner(EXIT_REQUEST_TIMEOUT, reason)
    return _json(
        504,
        f"request timed out after {timeout:g}s",
        "request_timeout",
        ctx.request_id if ctx else None,
    )


def _failed(ep: Endpoint, exc: BaseException) -> JSONResponse:
    status, detail, error_type = failure_of(ep, exc)
    ctx = current_request()
    return _json(status, detail, error_type, ctx.request_id if ctx else None)


async def serve_websocket(ep: Endpoint, method: Any, kwargs: dict[str, Any]) -> None:
    """Run a websocket endpoint; its failures become close codes (the runner's fate rules).

    A handler error closes with 1011 (the app's error; the runner keeps serving);
    a CUDA failure or exit closes with 1013 ("try again later": the websocket
    form of 503) and the runner ends itself.
    """
    from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

    ws = next((v for v in kwargs.values() if isinstance(v, WebSocket)), None)
    try:
        await method(**kwargs)
    except WebSocketDisconnect:
        return
    except (Exception, SystemExit, KeyboardInterrupt) as exc:
        status, _detail, _type = failure_of(ep, exc)
        if ws is not None and ws.application_state is not WebSocketState.DISCONNECTED:
            with contextlib.suppress(Exception):
                await ws.close(WS_UNHEALTHY if status == 503 else WS_APP_ERROR)
        return
    if ws is not None and ws.application_state is WebSocketState.CONNECTED:
        with contextlib.suppress(Exception):
            await ws.close(1000)


# Close codes of websocket endpoints (RFC 6455): the runner-fate rules' websocket form.
WS_APP_ERROR = 1011  # the handler raised: the app's error, runner fine (HTTP 500)
WS_UNHEALTHY = 1013  # "try again later": the runner is unhealthy and ends itself (HTTP 503)


def _json(status: int, detail: str, error_type: str, request_id: str | None) -> JSONResponse:
    from starlette.responses import JSONResponse

    return JSONResponse(
        error_body(detail, error_type, request_id),
        status_code=status,
        headers={ERROR_TYPE_HEADER: error_type},
    )
