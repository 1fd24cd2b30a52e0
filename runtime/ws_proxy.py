"""WebSocket connections through the gateway, to `websocket=True` endpoints.

A caller's websocket to `/{app}/{path}` (or `/{stack}/{app}/{path}`, the
fal-style id fal-client's `realtime`/`ws_connect` use) waits in the app's queue
like any request: the first one starts a runner (scale from zero), and while
it is open the connection holds one of that runner's `max_multiplexing`
slots. The gateway accepts the caller only once the runner's endpoint has
accepted, then relays every frame, text or binary (fal-client's msgpack
frames included), both ways as it comes.

Refusals before the handshake are HTTP answers (401 for a private app without
the API key, 404 for a path that is no websocket endpoint). Close codes follow
the runner-fate rules:

- the runner's handler raised: it closes with 1011, passed on; the runner
  keeps serving (an app error, like HTTP 500);
- the runner is unhealthy (a CUDA error, say): it closes with 1013 ("try
  again later", its 503), passed on, and the gateway counts that runner as
  terminated;
- the runner could not be reached: the connection is retried on another
  runner (nothing was relayed yet);
- no runner came up in time, or the app's runners fail to start: 1013 with
  the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from skyform.runtime.asgi import Message, Receive, Scope, Send, dump
from skyform.runtime.runner_context import REQUEST_ID_HEADER

if TYPE_CHECKING:
    from skyform.runtime.gateway import Gateway
    from skyform.runtime.gateway_scheduler import AppState, Runner

log = logging.getLogger("skyform.gateway")

WS_APP_ERROR = 1011
WS_TRY_AGAIN = 1013
_OPEN_TIMEOUT_S = 30.0


async def proxy_websocket(
    gateway: Gateway, app: AppState, path: str, scope: Scope, receive: Receive, send: Send
) -> None:
    """Serve one caller's websocket to `path` of `app` (see the module docstring)."""
    query = scope.get("query_string", b"").decode("latin-1")
    target = f"{path}?{query}" if query else path
    req = gateway.scheduler.submit(
        app, target, "WEBSOCKET", b"", "", no_retry=False, persist=False, kind="websocket"
    )
    bound = app.limits.startup_timeout + app.limits.request_timeout
    while True:
        try:
            async with asyncio.timeout(bound):
                await req.done.wait()
        except TimeoutError:
            req.waiting = False
            gateway.scheduler.forget(req)
        runner, released = req.lent, req.released
        if runner is None or released is None:
            reason = req.error or "no runner could serve this websocket"
            await refuse(send, 503, dump({"detail": reason, "error_type": req.error_type}))
            return
        try:
            upstream = await _connect(runner, target, req.id, scope)
        except OSError as exc:
            log.warning("websocket %s: runner %s unreachable: %s", req.id, runner.id, exc)
            gateway.scheduler.websocket_ended(req, runner, "unreachable")
            released.set()
            continue
        except Exception as exc:  # the runner refused the handshake (its endpoint closed it)
            gateway.scheduler.websocket_ended(req, runner, "app_error")
            released.set()
            await refuse(send, 403, dump({"detail": f"the app refused the websocket: {exc}"}))
            return
        break
    outcome = "app_error"
    try:
        outcome = await _relay(scope, receive, send, upstream, req.id)
    finally:
        with contextlib.suppress(Exception):
            await upstream.close()
        gateway.scheduler.websocket_ended(req, runner, outcome)
        released.set()


async def _connect(runner: Runner, target: str, request_id: str, scope: Scope) -> Any:
    from websockets.asyncio.client import connect

    assert runner.client is not None
    headers = {REQUEST_ID_HEADER: request_id}
    if runner.token:  # each runner has its own token
        headers["authorization"] = f"Bearer {runner.token}"
    subprotocols = scope.get("subprotocols") or None
    client = runner.client
    tls = client.ssl_context is not None  # runners off this host are reached over TLS
    extra: dict[str, Any] = {}
    if tls:
        extra = {
            "ssl": client.ssl_context,
            "server_hostname": client.server_hostname or client.host,
        }
    return await connect(
        f"{'wss' if tls else 'ws'}://{client.host}:{client.port}{target}",
        **extra,
        additional_headers=headers,
        subprotocols=subprotocols,
        open_timeout=_OPEN_TIMEOUT_S,
        max_size=None,
        compression=None,
        ping_interval=None,
    )


async def _relay(scope: Scope, receive: Receive, send: Send, upstream: Any, request_id: str) -> str:
    """Relay frames both ways until one side closes; the outcome for the runner-fate rules."""
    from websockets.exceptions import ConnectionClosed

    connect = await receive()
    if connect["type"] != "websocket.connect":
        return "ok"
    accept: Message = {
        "type": "websocket.accept",
        "headers": [(b"x-skyform-request-id", request_id.encode())],
    }
    if upstream.subprotocol:
        accept["subprotocol"] = upstream.subprotocol
    await send(accept)

    async def down() -> None:
        with contextlib.suppress(ConnectionClosed):
            async for frame in upstream:
                if isinstance(frame, bytes):
                    await send({"type": "websocket.send", "bytes": frame})
                else:
                    await send({"type": "websocket.send", "text": frame})

    async def up() -> int:
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return int(message.get("code", 1000))
            if message.get("bytes") is not None:
                await upstream.send(message["bytes"])
            elif message.get("text") is not None:
                await upstream.send(message["text"])

    downward = asyncio.ensure_future(down())
    upward = asyncio.ensure_future(up())
    try:
        await asyncio.wait({downward, upward}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (downward, upward):
            task.cancel()
        await asyncio.gather(downward, upward, return_exceptions=True)
    if upward.done() and not upward.cancelled() and upward.exception() is None:
        return "ok"  # the caller closed
    # The runner closed: pass its code on.
    code = upstream.close_code or 1000
    reason = upstream.close_reason or ""
    with contextlib.suppress(Exception):
        await send({"type": "websocket.close", "code": code, "reason": reason})
    if code == WS_TRY_AGAIN:
        return "unhealthy"
    return "app_error" if code == WS_APP_ERROR else "ok"


async def refuse(send: Send, status: int, body: bytes) -> None:
    """Answer the upgrade with a plain HTTP response (the websocket is never opened)."""
    await send(
        {
            "type": "websocket.http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "websocket.http.response.body", "body": body})
