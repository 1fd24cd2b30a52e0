"""A small HTTP/1.1 client with keep-alive, for gateway -> runner calls.

The gateway forwards every request to a runner on 127.0.0.1 (or a private
address); a general-purpose client adds more per-call overhead than the whole
proxy budget allows, so this one does only what that hop needs: one request
per connection at a time, `Content-Length` or chunked bodies, a pool of idle
connections per runner.

It tells apart "the runner could not be reached / dropped the connection"
(`RunnerConnectionError`: retried elsewhere) from a timeout (`TimeoutError`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time

# Idle connections older than this are not reused: the runner's server closes
# idle keep-alive connections after a few seconds, and reusing one it is
# closing would look like the runner dying mid-request.
_MAX_IDLE_S = 2.0
_MAX_POOL = 32


class RunnerConnectionError(ConnectionError):
    """The runner refused the connection or closed it before answering."""


class RunnerTLSError(RunnerConnectionError):
    """The runner's certificate is not one the gateway trusts (not signed by the stack CA)."""


Response = tuple[int, dict[str, str], bytes]


class _Conn:
    __slots__ = ("reader", "used", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.used = time.monotonic()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


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
        self._ssl = ssl
        self._server_hostname = server_hostname if ssl is not None else None
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
        head = self._head(method, path, body, headers)
        conn, reused = self._take()
        async with asyncio.timeout(timeout):
            while True:
                if conn is None:
                    conn = await self._connect()
                try:
                    result, keep = await _exchange(conn, head, body)
                    break
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
        if keep and len(self._idle) < _MAX_POOL:
            conn.used = time.monotonic()
            self._idle.append(conn)
        else:
            conn.close()
        return result

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

    async def _connect(self) -> _Conn:
        try:
            reader, writer = await asyncio.open_connection(
                self.host, self.port, ssl=self._ssl, server_hostname=self._server_hostname
            )
        except ssl.SSLCertVerificationError as exc:
            raise RunnerTLSError(
                f"its TLS certificate is not trusted: {exc.verify_message or exc.reason}"
            ) from None
        except OSError as exc:
            raise RunnerConnectionError(_describe(exc)) from None
        return _Conn(reader, writer)

    def _head(self, method: str, path: str, body: bytes, headers: dict[str, str] | None) -> bytes:
        lines = [f"{method} {path} HTTP/1.1\r\n".encode("latin-1"), self._fixed]
        if headers:
            lines.append("".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode("latin-1"))
        lines.append(b"content-length: %d\r\n\r\n" % len(body))
        return b"".join(lines)


async def _exchange(conn: _Conn, head: bytes, body: bytes) -> tuple[Response, bool]:
    conn.writer.write(head + body if len(body) < 65536 else head)
    if len(body) >= 65536:
        conn.writer.write(body)
    await conn.writer.drain()
    return await _read_response(conn.reader)


async def _read_response(reader: asyncio.StreamReader) -> tuple[Response, bool]:
    raw = await reader.readuntil(b"\r\n\r\n")
    lines = raw.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    version, status = parts[0], int(parts[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
    if status in (204, 304) or 100 <= status < 200:
        return (status, headers, b""), keep
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif "chunked" in headers.get("transfer-encoding", "").lower():
        body = await _read_chunked(reader)
    else:
        body = await reader.read()
        keep = False
    return (status, headers, body), keep


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    chunks: list[bytes] = []
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            # trailers, until an empty line
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass
            return b"".join(chunks)
        chunks.append(await reader.readexactly(size))
        await reader.readexactly(2)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.IncompleteReadError):
        return "runner closed the connection before answering"
    if isinstance(exc, ConnectionRefusedError):
        return "runner refused the connection"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
