"""An HTTP/1.1 client with keep-alive for gateway -> runner calls, on h11.

The gateway forwards every request to a runner on 127.0.0.1 (or a private
address). This client does only what that hop needs: one request per
connection at a time, a pool of idle connections per runner, and responses
that can be read whole (`request`) or chunk by chunk as the runner produces
them (`open`, then `RunnerResponse.chunks`): a streaming endpoint's events
reach the caller as they are yielded, and a caller that reads slowly slows
the runner down (the next chunk is read only when the last one was sent on).

h11 does the protocol (framing, chunked encoding, keep-alive rules); this
module does the sockets. Every connection opens through `open_connection`,
the one place a TLS context would be passed.

It tells apart "the runner could not be reached / dropped the connection
before answering" (`RunnerConnectionError`: retried elsewhere) from a
timeout (`TimeoutError`) and from a stream cut after its head arrived
(`StreamBroken`: too late to retry).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import AsyncIterator

import h11

# Idle connections older than this are not reused: the runner's server closes
# idle keep-alive connections after a few seconds, and reusing one it is
# closing would look like the runner dying mid-request.
_MAX_IDLE_S = 2.0
_MAX_POOL = 32
_READ_SIZE = 65536


class RunnerConnectionError(ConnectionError):
    """The runner refused the connection or closed it before answering."""


class StreamBroken(ConnectionError):
    """The runner's response stopped before its end (after its head had arrived)."""


Response = tuple[int, dict[str, str], bytes]


async def open_connection(
    host: str, port: int, ssl_context: ssl.SSLContext | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open one connection to a runner (TLS when `ssl_context` is given)."""
    try:
        return await asyncio.open_connection(host, port, ssl=ssl_context)
    except OSError as exc:
        raise RunnerConnectionError(_describe(exc)) from None


class _Conn:
    __slots__ = ("h11", "reader", "used", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.h11 = h11.Connection(h11.CLIENT)
        self.used = time.monotonic()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()

    async def next_event(self) -> object:
        """The next h11 event (or h11.PAUSED), reading from the socket as needed."""
        while True:
            event = self.h11.next_event()
            if event is not h11.NEED_DATA:
                return event
            data = await self.reader.read(_READ_SIZE)
            self.h11.receive_data(data)  # b"" means EOF: h11 then reports it


class RunnerResponse:
    """A response whose head has arrived; read its body whole or chunk by chunk.

    Exactly one of `read()` or `chunks()` is used, then the response is
    finished: the connection goes back to the pool if the body arrived whole,
    else it is closed (which is how a caller that went away reaches the runner).
    """

    def __init__(
        self, client: RunnerClient, conn: _Conn, status: int, headers: dict[str, str]
    ) -> None:
        self.status = status
        self.headers = headers
        self._client = client
        self._conn: _Conn | None = conn
        self._started = False

    @property
    def streaming(self) -> bool:
        """True when the runner did not say the body's length up front (a stream)."""
        return "content-length" not in self.headers and self.status not in (204, 304)

    async def chunks(self, idle_timeout: float | None = None) -> AsyncIterator[bytes]:
        """Each piece of the body as it arrives; `idle_timeout` bounds each wait."""
        conn = self._conn
        if conn is None:
            return
        self._started = True
        ok = False
        try:
            while True:
                try:
                    if idle_timeout is None:
                        event = await conn.next_event()
                    else:
                        async with asyncio.timeout(idle_timeout):
                            event = await conn.next_event()
                except (OSError, h11.ProtocolError, ValueError) as exc:
                    raise StreamBroken(_describe(exc)) from None
                if isinstance(event, h11.Data):
                    yield bytes(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    ok = True
                    return
                elif isinstance(event, h11.ConnectionClosed):
                    if "content-length" in self.headers or "chunked" in self.headers.get(
                        "transfer-encoding", ""
                    ):
                        raise StreamBroken("runner closed the connection mid-response")
                    ok = True  # body delimited by the connection's end
                    return
        finally:
            self._finish(ok)

    async def read(self, timeout: float | None = None) -> bytes:
        """The whole body (within `timeout` in all)."""
        parts = []
        async with asyncio.timeout(timeout):
            async for chunk in self.chunks():
                parts.append(chunk)
        return b"".join(parts)

    def close(self) -> None:
        """Abandon the response: its connection is closed, so the runner sees the caller leave."""
        self._finish(False)

    def _finish(self, complete: bool) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            self._client._release(conn, complete)


class RunnerClient:
    """Calls one runner at `host:port`; reuses connections between calls."""

    def __init__(
        self,
        host: str,
        port: int,
        headers: dict[str, str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self._idle: list[_Conn] = []
        self._fixed = [("host", f"{host}:{port}"), *(headers or {}).items()]

    async def request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        timeout: float = 60.0,
    ) -> Response:
        """Send one request and return (status, lower-cased headers, body)."""
        async with asyncio.timeout(timeout):
            response = await self.open(method, path, body, headers)
            try:
                data = await response.read()
            except StreamBroken as exc:
                raise RunnerConnectionError(str(exc)) from None
            finally:
                response.close()
        return response.status, response.headers, data

    async def open(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> RunnerResponse:
        """Send one request; return once the response's head has arrived (within `timeout`)."""
        all_headers = [*self._fixed, *(headers or {}).items(), ("content-length", str(len(body)))]
        request = h11.Request(method=method, target=path, headers=all_headers)
        conn, reused = self._take()
        async with asyncio.timeout(timeout):
            while True:
                if conn is None:
                    conn = _Conn(*await open_connection(self.host, self.port, self.ssl_context))
                try:
                    status, head = await _exchange(conn, request, body)
                    return RunnerResponse(self, conn, status, head)
                except (OSError, h11.ProtocolError, ValueError) as exc:
                    conn.close()
                    if not reused:
                        raise RunnerConnectionError(_describe(exc)) from None
                    # A pooled connection the runner had already closed: try once
                    # on a fresh one; a dead runner refuses that one too.
                    conn, reused = None, False
                except BaseException:
                    conn.close()
                    raise

    def close(self) -> None:
        for conn in self._idle:
            conn.close()
        self._idle.clear()

    def _take(self) -> tuple[_Conn | None, bool]:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if now - conn.used < _MAX_IDLE_S and not conn.reader.at_eof():
                return conn, True
            conn.close()
        return None, False

    def _release(self, conn: _Conn, complete: bool) -> None:
        if (
            complete
            and conn.h11.our_state is h11.DONE
            and conn.h11.their_state is h11.DONE
            and len(self._idle) < _MAX_POOL
        ):
            conn.h11.start_next_cycle()
            conn.used = time.monotonic()
            self._idle.append(conn)
        else:
            conn.close()


async def _exchange(conn: _Conn, request: h11.Request, body: bytes) -> tuple[int, dict[str, str]]:
    """Write the request, read the response's head; 1xx interim responses are skipped."""
    out = conn.h11.send(request) or b""
    if body:
        out += conn.h11.send(h11.Data(data=body)) or b""
    out += conn.h11.send(h11.EndOfMessage()) or b""
    conn.writer.write(out)
    await conn.writer.drain()
    while True:
        event = await conn.next_event()
        if isinstance(event, h11.InformationalResponse):
            continue
        if isinstance(event, h11.Response):
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in event.headers}
            return event.status_code, headers
        if isinstance(event, h11.ConnectionClosed):
            raise ConnectionResetError("runner closed the connection before answering")
        raise ValueError(f"unexpected {type(event).__name__} before the response")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, (asyncio.IncompleteReadError, ConnectionResetError)) and not str(exc):
        return "runner closed the connection before answering"
    if isinstance(exc, ConnectionRefusedError):
        return "runner refused the connection"
    if isinstance(exc, h11.RemoteProtocolError):
        return f"runner broke the HTTP protocol: {exc}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
