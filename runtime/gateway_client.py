"""An HTTP/1.1 client with keep-alive for gateway -> runner calls.

The gateway forwards every request to a runner on 127.0.0.1 (or a private
address). This client does only what that hop needs: one request per
connection at a time, a pool of idle connections per runner, and responses
that can be read whole (`request`) or chunk by chunk as the runner produces
them (`open`, then `RunnerResponse.chunks`): a streaming endpoint's events
reach the caller as they are yielded, and a caller that reads slowly slows
the runner down (the next chunk is read only when the last one was sent on).

Two parsers, each where it is best: the response head and `Content-Length`
bodies (every non-streaming answer: the hot path) by a few lines here, which
cost a third of what a general parser does per request; chunked and
close-delimited bodies (streams) by h11, fed the head already read and then
the socket's bytes as they come. Every connection opens through
`open_connection`, the one place a TLS context would be passed.

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
from collections.abc import AsyncIterator, Awaitable

import h11

# Idle connections older than this are not reused: the runner's server closes
# idle keep-alive connections after a few seconds, and reusing one it is
# closing would look like the runner dying mid-request.
_MAX_IDLE_S = 2.0
_MAX_POOL = 32
_READ_SIZE = 65536


class RunnerConnectionError(ConnectionError):
    """The runner refused the connection or closed it before answering."""


class RunnerTLSError(RunnerConnectionError):
    """The runner's certificate is not one the gateway trusts (not signed by the stack CA)."""


class StreamBroken(ConnectionError):
    """The runner's response stopped before its end (after its head had arrived)."""


Response = tuple[int, dict[str, str], bytes]


async def open_connection(
    host: str,
    port: int,
    ssl_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open one connection to a runner: TLS when `ssl_context` is given, the runner's
    certificate verified by it against `server_hostname` (default: `host`)."""
    try:
        return await asyncio.open_connection(
            host,
            port,
            ssl=ssl_context,
            server_hostname=server_hostname if ssl_context is not None else None,
        )
    except ssl.SSLCertVerificationError as exc:
        raise RunnerTLSError(
            f"its TLS certificate is not trusted: {exc.verify_message or exc.reason}"
        ) from None
    except OSError as exc:
        raise RunnerConnectionError(_describe(exc)) from None


class _Conn:
    __slots__ = ("reader", "used", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.used = time.monotonic()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


class RunnerResponse:
    """A response whose head has arrived; read its body whole or chunk by chunk.

    Exactly one of `read()` or `chunks()` is used, then the response is
    finished: the connection goes back to the pool if the body arrived whole
    and the runner keeps it open, else it is closed (which is how a caller
    that went away reaches the runner).
    """

    def __init__(
        self,
        client: RunnerClient,
        conn: _Conn,
        status: int,
        headers: dict[str, str],
        head: bytes,
        keep: bool,
    ) -> None:
        self.status = status
        self.headers = headers
        self._client = client
        self._conn: _Conn | None = conn
        self._head = head
        self._keep = keep

    @property
    def streaming(self) -> bool:
        """True when the runner did not say the body's length up front (a stream)."""
        return "content-length" not in self.headers and self.status not in (204, 304)

    async def chunks(self, idle_timeout: float | None = None) -> AsyncIterator[bytes]:
        """Each piece of the body as it arrives; `idle_timeout` bounds each wait."""
        conn = self._conn
        if conn is None:
            return
        ok = False
        try:
            if self.status in (204, 304):
                ok = True
            elif "content-length" in self.headers:
                left = int(self.headers["content-length"])
                while left > 0:
                    data = await _wait(conn.reader.read(min(left, _READ_SIZE)), idle_timeout)
                    if not data:
                        raise StreamBroken("runner closed the connection mid-response")
                    left -= len(data)
                    yield data
                ok = True
            else:
                async for data in self._framed(conn, idle_timeout):
                    yield data
                ok = True
        except (OSError, h11.ProtocolError, ValueError) as exc:
            raise StreamBroken(_describe(exc)) from None
        finally:
            self._finish(ok)

    async def _framed(self, conn: _Conn, idle_timeout: float | None) -> AsyncIterator[bytes]:
        """A chunked or close-delimited body, parsed by h11."""
        parser = h11.Connection(h11.CLIENT)
        # h11 follows the exchange from the request on; the real one was already sent.
        parser.send(h11.Request(method="GET", target="/", headers=[("host", "runner")]))
        parser.send(h11.EndOfMessage())
        parser.receive_data(self._head)
        while True:
            event = parser.next_event()
            if event is h11.NEED_DATA:
                parser.receive_data(await _wait(conn.reader.read(_READ_SIZE), idle_timeout))
            elif isinstance(event, h11.Data):
                yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                self._keep = self._keep and parser.their_state is h11.DONE
                return
            elif isinstance(event, h11.ConnectionClosed):
                if "chunked" in self.headers.get("transfer-encoding", "").lower():
                    raise StreamBroken("runner closed the connection mid-response")
                self._keep = False
                return  # the body ends with the connection (no length, not chunked)

    async def read(self, timeout: float | None = None) -> bytes:
        """The whole body (within `timeout` in all)."""
        conn = self._conn
        if conn is not None and "content-length" in self.headers and self.status not in (204, 304):
            # The hot path: one read of a known length.
            ok = False
            try:
                async with asyncio.timeout(timeout):
                    body = await conn.reader.readexactly(int(self.headers["content-length"]))
                ok = True
                return body
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                raise StreamBroken(_describe(exc)) from None
            finally:
                self._finish(ok)
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
            self._client._release(conn, complete and self._keep)


class RunnerClient:
    """Calls one runner at `host:port`; reuses connections between calls.

    With `ssl`, connections are TLS, the runner's certificate verified by that
    context against `server_hostname` (default: `host`).
    """

    def __init__(
        self,
        host: str,
        port: int,
        headers: dict[str, str] | None = None,
        ssl: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.ssl_context = ssl
        self.server_hostname = server_hostname if ssl is not None else None
        self._idle: list[_Conn] = []
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self._fixed = f"host: {host}:{port}\r\n{extra}".encode("latin-1")

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
        head = self._head(method, path, body, headers)
        conn, reused = self._take()
        async with asyncio.timeout(timeout):
            while True:
                if conn is None:
                    conn = _Conn(
                        *await open_connection(
                            self.host, self.port, self.ssl_context, self.server_hostname
                        )
                    )
                try:
                    return await self._exchange(conn, head, body)
                except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as exc:
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

    def _release(self, conn: _Conn, reusable: bool) -> None:
        if reusable and len(self._idle) < _MAX_POOL:
            conn.used = time.monotonic()
            self._idle.append(conn)
        else:
            conn.close()

    def _head(self, method: str, path: str, body: bytes, headers: dict[str, str] | None) -> bytes:
        lines = [f"{method} {path} HTTP/1.1\r\n".encode("latin-1"), self._fixed]
        if headers:
            lines.append("".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode("latin-1"))
        lines.append(b"content-length: %d\r\n\r\n" % len(body))
        return b"".join(lines)

    async def _exchange(self, conn: _Conn, head: bytes, body: bytes) -> RunnerResponse:
        """Write the request, read the response's head (1xx interim responses skipped)."""
        conn.writer.write(head + body if len(body) < 65536 else head)
        if len(body) >= 65536:
            conn.writer.write(body)
        await conn.writer.drain()
        while True:
            raw = await conn.reader.readuntil(b"\r\n\r\n")
            lines = raw.decode("latin-1").split("\r\n")
            parts = lines[0].split(" ", 2)
            version, status = parts[0], int(parts[1])
            if 100 <= status < 200:
                continue
            headers: dict[str, str] = {}
            for line in lines[1:]:
                if line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
            return RunnerResponse(self, conn, status, headers, raw, keep)


async def _wait(read: Awaitable[bytes], timeout: float | None) -> bytes:
    if timeout is None:
        return await read
    async with asyncio.timeout(timeout):
        return await read


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.IncompleteReadError) or (
        isinstance(exc, ConnectionResetError) and not str(exc)
    ):
        return "runner closed the connection before answering"
    if isinstance(exc, ConnectionRefusedError):
        return "runner refused the connection"
    if isinstance(exc, h11.RemoteProtocolError):
        return f"runner broke the HTTP protocol: {exc}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
