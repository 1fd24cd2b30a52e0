"""Serving the gateway's ASGI app: uvicorn, tuned for a proxy's hot path.

Two adjustments to stock uvicorn:
- Responses leave in one `send()` system call. uvicorn writes the status line
  and headers, then the body, as two writes; on loopback each write costs
  about as much as the rest of the proxying, so writes made within one
  event-loop turn are coalesced into one.
- SIGTERM/SIGINT stop the server and the process then exits 0 (uvicorn's own
  capture re-raises the signal after shutdown).

With TLS, the certificate files are checked every second and reloaded
into the live context when they change: `apply` renews a certificate before
it expires, and new connections get the new one without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("skyform.gateway")

# uvicorn ticks every 0.1 s; the certificate files are looked at (two stats) every second.
_CERT_CHECK_TICKS = 10


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

    tls_files: tuple[Path, Path] | None = None
    _tls_stamp: tuple[float, float] | None = None

    async def on_tick(self, counter: int) -> bool:
        if self.tls_files is not None and counter % _CERT_CHECK_TICKS == 0:
            self._reload_certificate()
        return await super().on_tick(counter)

    def _reload_certificate(self) -> None:
        """Load renewed certificate files into the live TLS context (new connections use them)."""
        from skyform.tls import TLSError, load_cert_chain

        assert self.tls_files is not None
        cert, key = self.tls_files
        try:
            stamp = (os.stat(cert).st_mtime, os.stat(key).st_mtime)
        except OSError:
            return
        if self._tls_stamp is None:
            self._tls_stamp = stamp
        if stamp == self._tls_stamp or self.config.ssl is None:
            return
        try:
            load_cert_chain(self.config.ssl, cert, key)
        except TLSError as exc:  # a half-renewed pair: the old certificate stays in use
            log.warning("certificate not reloaded: %s", exc)
            return
        self._tls_stamp = stamp
        log.info("reloaded the TLS certificate from %s", cert)

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
    app: Any, host: str, port: int, tls: tuple[Path, Path] | None = None
) -> GatewayServer:
    """The server for the gateway's ASGI `app` on `host:port`; https with `tls` (cert, key)."""
    options: dict[str, Any] = {}
    if tls is not None:
        options["ssl_certfile"] = str(tls[0])
        options["ssl_keyfile"] = str(tls[1])
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
    server = GatewayServer(config)
    if tls is not None:
        server.tls_files = (Path(tls[0]), Path(tls[1]))
        server._reload_certificate()  # records the files' current state
    return server
