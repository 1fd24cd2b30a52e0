"""Serving the gateway's ASGI app: uvicorn, tuned for a proxy's hot path.

Three adjustments to stock uvicorn:
- Responses leave in one `send()` system call. uvicorn writes the status line
  and headers, then the body, as two writes; on loopback each write costs
  about as much as the rest of the proxying, so writes made within one
  event-loop turn are coalesced into one.
- SIGTERM/SIGINT stop the server and the process then exits 0 (uvicorn's own
  capture re-raises the signal after shutdown).
- A request head (request line + headers) is bounded in size and in time,
  and a body in how long it may stall (`GatewayLimits.max_header_bytes`,
  `header_timeout`, `body_timeout`): httptools buffers a header whole before
  uvicorn sees it, and uvicorn's keep-alive timeout is not armed until a first
  response, so without this one caller can make the gateway hold a 60 MB
  header, or hundreds of connections that never finish a request.

With TLS, the certificate files are checked every second and reloaded
into the live context when they change: `apply` renews a certificate before
it expires, and new connections get the new one without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvicorn

from skyform.runtime.asgi import websocket_protocol
from skyform.runtime.limits import GatewayLimits

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


def coalescing_httptools_protocol() -> type[asyncio.Protocol] | None:
    """uvicorn's httptools protocol writing each response with one system call.

    None when httptools is not importable (a platform without its wheels): the
    gateway then serves on uvicorn's pure-Python h11 protocol instead of
    failing to start. httptools is a core dependency, so installs get the fast path.
    """
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:
        return None

    class CoalescingHttpToolsProtocol(HttpToolsProtocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self.transport = _CoalescingTransport(transport, self.loop)  # type: ignore[assignment]

    return CoalescingHttpToolsProtocol


# After refusing a request head, incoming bytes are read and dropped this long
# before the connection closes: closing at once, with the rest of the caller's
# upload unread, makes the kernel reset the connection and the caller would
# not see the refusal.
LINGER_S = 1.0
SWEEP_S = 0.5  # how often connections are checked against the time bounds
_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


_SWEEPS: dict[int, asyncio.TimerHandle] = {}  # per server (its connections set)


def guarded_httptools_protocol(limits: GatewayLimits) -> type[asyncio.Protocol] | None:
    """The coalescing httptools protocol, bounding what one connection can make
    the gateway hold within `limits`; None without httptools (the h11 fallback
    then bounds heads in size only).

    - A request head larger than `max_header_bytes`: 431.
    - A request head not complete `header_timeout` seconds after its first
      byte (or the connection's start): 408 (slowloris).
    - A request body that sends nothing for `body_timeout` seconds: 408.

    Time bounds are checked by one sweep over the server's connections every
    `SWEEP_S`, not by a timer per request: the per-request cost stays a few
    attribute writes on the hot path.
    """
    base = coalescing_httptools_protocol()
    if base is None:
        return None

    class GuardedHttpToolsProtocol(base):  # type: ignore[valid-type,misc]
        max_header_bytes = limits.max_header_bytes
        header_timeout = limits.header_timeout
        body_timeout = limits.body_timeout

        def connection_made(self, transport: asyncio.Transport) -> None:
            super().connection_made(transport)
            self._head_bytes = 0
            self._head_tail = b""
            self._awaiting_head = True
            self._refused = False
            self._head_started: float | None = self.loop.time()
            self._body_seen = 0.0
            self._in_body = False
            if id(self.connections) not in _SWEEPS:
                _schedule_sweep(self.loop, self.connections)

        def data_received(self, data: bytes) -> None:
            if self._refused:
                return  # dropped while the refusal reaches the caller
            if self._awaiting_head:
                if self._head_started is None:
                    self._head_started = self.loop.time()
                window = self._head_tail + data
                end = window.find(b"\r\n\r\n")
                self._head_bytes += len(data) if end < 0 else end + 4 - len(self._head_tail)
                if self._head_bytes > self.max_header_bytes:
                    self._refuse(431, f"request head is larger than {self.max_header_bytes} bytes")
                    return
                self._head_tail = window[-3:]
            elif self._in_body:
                self._body_seen = self.loop.time()
            super().data_received(data)

        def on_headers_complete(self) -> None:
            self._awaiting_head, self._head_started = False, None
            self._in_body, self._body_seen = True, self.loop.time()
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._in_body = False
            self._awaiting_head, self._head_bytes, self._head_tail = True, 0, b""

        def check_time(self, now: float) -> None:
            if self._refused or self.transport is None or self.transport.is_closing():
                return
            started = self._head_started
            if self._awaiting_head and started is not None and now - started > self.header_timeout:
                self._refuse(408, f"request head not complete within {self.header_timeout:g}s")
            elif self._in_body and now - self._body_seen > self.body_timeout:
                cycle = self.cycle
                if cycle is not None and cycle.response_started:
                    self.transport.close()  # answered already; the caller just stopped sending
                    return
                if cycle is not None:
                    cycle.disconnected = True  # the app's own answer goes nowhere
                    cycle.message_event.set()
                self._refuse(408, f"request body stalled for {self.body_timeout:g}s")

        def _refuse(self, status: int, detail: str) -> None:
            self._refused = True
            self._unset_keepalive_if_required()
            body = json.dumps({"detail": detail, "error_type": "bad_request"}).encode()
            self.transport.write(
                b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\nconnection: close\r\n\r\n%s"
                % (status, _REASONS[status], len(body), body)
            )
            log.warning("refused a request from %s: %s", self.client, detail)
            self.loop.call_later(LINGER_S, self.transport.close)

    def _schedule_sweep(loop: asyncio.AbstractEventLoop, connections: set[Any]) -> None:
        def sweep() -> None:
            now = loop.time()
            for conn in list(connections):
                if isinstance(conn, GuardedHttpToolsProtocol):
                    conn.check_time(now)
            _SWEEPS[id(connections)] = loop.call_later(SWEEP_S, sweep)

        _SWEEPS[id(connections)] = loop.call_later(SWEEP_S, sweep)

    return GuardedHttpToolsProtocol


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
        from skyform.tlscontext import TLSError, load_cert_chain

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
    app: Any,
    host: str,
    port: int,
    limits: GatewayLimits | None = None,
    tls: tuple[Path, Path] | None = None,
) -> GatewayServer:
    """The server for the gateway's ASGI `app` on `host:port`, within `limits`;
    https with `tls` (cert, key)."""
    limits = limits or GatewayLimits()
    options: dict[str, Any] = {}
    if tls is not None:
        options["ssl_certfile"] = str(tls[0])
        options["ssl_keyfile"] = str(tls[1])
    protocol = guarded_httptools_protocol(limits)
    if protocol is not None:
        options["http"] = protocol
    else:
        log.warning("httptools is not installed: serving on uvicorn's slower h11 protocol")
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
        ws=websocket_protocol(),  # websocket endpoints (ws_proxy)
        h11_max_incomplete_event_size=limits.max_header_bytes,
        **options,
    )
    server = GatewayServer(config)
    if tls is not None:
        server.tls_files = (Path(tls[0]), Path(tls[1]))
        server._reload_certificate()  # records the files' current state
    return server
