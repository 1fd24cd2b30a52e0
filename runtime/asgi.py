"""Plain-ASGI pieces shared by the runner and the gateway.

Both serve their hot paths without a framework: a response is two `send`
calls with the headers built once, and JSON bodies are `json.dumps` bytes.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any, Literal

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

JSON = b"application/json"


async def send_response(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes = JSON,
    extra: Sequence[tuple[bytes, bytes]] = (),
) -> None:
    """Send a whole response: status, content type and length, `extra` headers, body."""
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    if extra:
        headers.extend(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def dump(value: Any) -> bytes:
    """`value` as a JSON body."""
    return json.dumps(value).encode()


def websocket_protocol() -> Literal["websockets-sansio", "websockets"]:
    """uvicorn's websocket implementation to use: the sans-I/O one where this uvicorn has it.

    (It needs no deprecated `websockets` API; uvicorn before 0.35 only has the older one.)
    """
    from uvicorn.config import WS_PROTOCOLS

    return "websockets-sansio" if "websockets-sansio" in WS_PROTOCOLS else "websockets"
