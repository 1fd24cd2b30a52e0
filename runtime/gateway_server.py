"""Serving the gateway's ASGI app: uvicorn, tuned for a proxy's hot path.

Two adjustments to stock uvicorn:
- Responses leave in one `send()` system call. uvicorn writes the status line
  and headers, then the body, as two writes; on loopback each write costs
  about as much as the rest of the proxying, so writes made within one
  event-loop turn are coalesced into one.
- SIGTERM/SIGINT stop the server and the process then exits 0 (uvicorn's own
  capture re-raises the signal after shutdown).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("skyform.gateway")


class _CoalescingTransport:
    """Buffers writes until the end of the current event-loop turn, then writes once."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._buffer: list[bytes] = []
        self._scheduled = False

    def write(self, data: bytes) -> None:
        self._buffer.append(data)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        if self._buffer:
            data = b"".join(self._buffer)
            self._buffer.clear()
            if not self._transport.is_closing():
                self._transport.write(data)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol writing each response with one system call."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.transport = _CoalescingTransport(transport, self.loop)  # type: ignore[assignment]


class GatewayServer(uvicorn.Server):
    """uvicorn's server, stopping on SIGTERM/SIGINT and then letting the process exit 0."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            yield
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        if self.should_exit:
            self.force_exit = True
            return
        log.info("%s: stopping; runners drain and stop, the queue is kept", sig.name)
        self.should_exit = True


def make_server(
    app: Any, host: str, port: int, tls_cert: Path | None = None, tls_key: Path | None = None
) -> GatewayServer:
    """The server for the gateway's ASGI `app` on `host:port` (TLS with a cert and key)."""
    options: dict[str, Any] = {}
    if tls_cert is not None and tls_key is not None:
        options["ssl_certfile"] = str(tls_cert)
        options["ssl_keyfile"] = str(tls_key)
    try:
        import httptools  # noqa: F401

        options["http"] = CoalescingHttpToolsProtocol
    except ImportError:
        pass
    try:
        import uvloop  # noqa: F401

        options["loop"] = "uvloop"
    except ImportError:
        pass
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="on",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=5,
        timeout_keep_alive=30,
        proxy_headers=False,
        server_header=False,
        **options,
    )
    return GatewayServer(config)
