"""The runner's HTTP server: uvicorn, configured for the runner and without its signal capture.

A module of its own so that the runner imports uvicorn only once the App's
`setup()` has started: uvicorn (with click, watchfiles and logging.config,
which its package imports) is a few tens of milliseconds that would
otherwise come before the app's own imports on every cold start.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Iterator
from pathlib import Path

import uvicorn

from skyform.runtime.asgi import ASGIApp, websocket_protocol

# Longest wait for an unhealthy runner's last response to leave its buffers.
FLUSH_WAIT_S = 0.5


class RunnerServer(uvicorn.Server):
    """uvicorn's server without its signal capture: the runner handles signals itself.

    (uvicorn re-raises a captured SIGTERM after shutdown, which would end the
    process by the signal instead of with exit code 0.)
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def make_server(
    asgi: ASGIApp, websockets: bool, grace: float, tls: tuple[Path, Path] | None
) -> RunnerServer:
    """The server for `asgi`: no lifespan, access log or server header; `grace` bounds a drain."""
    return RunnerServer(
        uvicorn.Config(
            asgi,
            lifespan="off",
            access_log=False,
            log_config=None,
            server_header=False,
            proxy_headers=False,
            # Websocket endpoints need a server side (the `websockets` package).
            ws=websocket_protocol() if websockets else "none",
            # uvicorn takes whole seconds: round up, never cutting the drain short.
            timeout_graceful_shutdown=math.ceil(grace),
            ssl_certfile=str(tls[0]) if tls else None,
            ssl_keyfile=str(tls[1]) if tls else None,
        )
    )


async def let_responses_leave(server: RunnerServer) -> None:
    """Wait (briefly) until every connection's write buffer is empty."""
    deadline = time.monotonic() + FLUSH_WAIT_S
    await asyncio.sleep(0)
    while time.monotonic() < deadline:
        pending = 0
        for connection in list(server.server_state.connections):
            transport = getattr(connection, "transport", None)
            if transport is not None and not transport.is_closing():
                pending += transport.get_write_buffer_size()
        if not pending:
            return
        await asyncio.sleep(0.01)
