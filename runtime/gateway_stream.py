"""Streamed responses through the gateway: forwarding them, and storing them for the queue.

A synchronous call whose runner answers with a body of unknown length (a
generator endpoint's SSE, any starlette `StreamingResponse`) is forwarded
chunk by chunk as the runner writes it: each chunk read from the runner is
sent on to the caller before the next one is read, so a slow caller slows the
runner down (backpressure) and nothing is buffered beyond one chunk. A caller
that disconnects closes the runner connection, which the runner's server
reports to the handler.

Once the head has been sent the request cannot be retried: a runner that dies
or stalls mid-stream ends the caller's stream with an SSE `event: error`
(`error_type` `stream_broken` or `timeout`) when it is an event stream, or by
cutting the chunked body short otherwise (the caller sees an incomplete
response, never a truncated one presented as whole).

Queue calls store the whole stream as their result. An event stream is stored
as JSON, `{"events": [<each event's data, parsed as JSON>]}`, plus
`"error": {...}` when it ended with an error event; any other streamed body
is stored as it came, with its content type.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from skyform.runtime.asgi import Message, Receive, Send
from skyform.runtime.gateway_client import RunnerResponse, StreamBroken

SSE = "text/event-stream"
# Hop-by-hop headers (and the framing, which uvicorn redoes) are not forwarded.
_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "te", "trailer", "upgrade"}
)


def is_event_stream(content_type: str | None) -> bool:
    return bool(content_type) and content_type.split(";", 1)[0].strip().lower() == SSE  # type: ignore[union-attr]


def error_event(detail: str, error_type: str, request_id: str) -> bytes:
    data = {"detail": detail, "error_type": error_type, "request_id": request_id}
    return b"event: error\ndata: " + json.dumps(data).encode() + b"\n\n"


async def forward_stream(
    send: Send,
    receive: Receive,
    response: RunnerResponse,
    extra: list[tuple[bytes, bytes]],
    request_id: str,
    idle_timeout: float,
) -> str:
    """Forward `response` to the caller; the outcome: complete, client_gone, broken or timeout."""
    headers = [
        (k.encode("latin-1"), v.encode("latin-1"))
        for k, v in response.headers.items()
        if k not in _HOP
    ]
    await send(
        {"type": "http.response.start", "status": response.status, "headers": [*headers, *extra]}
    )
    sse = is_event_stream(response.headers.get("content-type"))
    pump = asyncio.ensure_future(_pump(send, response, idle_timeout))
    gone = asyncio.ensure_future(_until_disconnect(receive))
    try:
        await asyncio.wait({pump, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (pump, gone):
            if not task.done():
                task.cancel()
        await asyncio.gather(pump, gone, return_exceptions=True)
        response.close()
    if not pump.done() or pump.cancelled():
        return "client_gone"
    exc = pump.exception()
    if exc is None:
        await send({"type": "http.response.body", "body": b""})
        return "complete"
    if isinstance(exc, (StreamBroken, TimeoutError)):
        outcome = "broken" if isinstance(exc, StreamBroken) else "timeout"
        if sse:
            detail = (
                f"the runner's stream broke off: {exc}"
                if outcome == "broken"
                else f"no event within {idle_timeout:g}s"
            )
            error_type = "stream_broken" if outcome == "broken" else "timeout"
            body = error_event(detail, error_type, request_id)
            await send({"type": "http.response.body", "body": body})
            return outcome
        # Not an event stream: no way to say "error" in-band; end without the last chunk.
        raise exc
    raise exc


async def _pump(send: Send, response: RunnerResponse, idle_timeout: float) -> None:
    async for chunk in response.chunks(idle_timeout):
        if chunk:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})


async def _until_disconnect(receive: Receive) -> None:
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            return


async def read_stream(response: RunnerResponse, idle_timeout: float) -> tuple[bytes, str | None]:
    """A streamed body read whole for the queue: (bytes, None) or (bytes so far, why it broke)."""
    parts: list[bytes] = []
    try:
        async for chunk in response.chunks(idle_timeout):
            parts.append(chunk)
    except StreamBroken as exc:
        return b"".join(parts), f"the runner's stream broke off: {exc}"
    except TimeoutError:
        return b"".join(parts), f"no event within {idle_timeout:g}s"
    finally:
        response.close()
    return b"".join(parts), None


def stored_events(body: bytes, broke: str | None = None) -> bytes:
    """An event stream as the queue stores it: `{"events": [...], "error"?: {...}}`."""
    events: list[Any] = []
    error: Any = None
    for block in body.replace(b"\r\n", b"\n").split(b"\n\n"):
        name, data = "message", []
        for line in block.split(b"\n"):
            field, _, value = line.partition(b":")
            value = value[1:] if value.startswith(b" ") else value
            if field == b"event":
                name = value.decode(errors="replace")
            elif field == b"data":
                data.append(value)
        if not data:
            continue
        raw = b"\n".join(data)
        try:
            parsed: Any = json.loads(raw)
        except ValueError:
            parsed = raw.decode(errors="replace")
        if name == "error":
            error = parsed
        else:
            events.append(parsed)
    if broke is not None and error is None:
        error = {"detail": broke, "error_type": "stream_broken"}
    out: dict[str, Any] = {"events": events}
    if error is not None:
        out["error"] = error
    return json.dumps(out).encode()
