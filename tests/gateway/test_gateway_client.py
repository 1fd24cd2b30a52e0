"""The gateway's runner client against a raw socket server on 127.0.0.1 that says exactly what
each test needs (framings, cuts), so every branch of the parser is driven for real."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from skyform.runtime.gateway_client import RunnerClient, RunnerConnectionError, StreamBroken

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _with_server(handler: Handler, body: Callable[[RunnerClient], Awaitable[None]]) -> int:
    """Run `body` against a server calling `handler` per connection; the connections seen."""
    seen = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal seen
        seen += 1
        try:
            await handler(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = RunnerClient("127.0.0.1", port)
    try:
        await body(client)
    finally:
        client.close()
        server.close()
        await server.wait_closed()
    return seen


async def _request_head(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            await reader.readexactly(int(line.split(b":")[1]))
    return head


def test_chunked_stream_arrives_chunk_by_chunk_and_the_connection_is_reused() -> None:
    release = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                await _request_head(reader)
            except asyncio.IncompleteReadError:
                return
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n")
            await writer.drain()
            await release.wait()
            writer.write(b"6\r\nsecond\r\n0\r\n\r\n")
            await writer.drain()

    async def body(client: RunnerClient) -> None:
        for _ in range(2):
            release.clear()
            response = await client.open("POST", "/s", b"{}", timeout=5)
            assert response.streaming and response.status == 200
            chunks = response.chunks(idle_timeout=5)
            assert await chunks.__anext__() == b"first"  # before the server sent the rest
            release.set()
            assert [c async for c in chunks] == [b"second"]

    assert asyncio.run(_with_server(handler, body)) == 1


def test_a_stream_cut_mid_chunk_is_stream_broken_and_the_connection_dropped() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _request_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfir")
        await writer.drain()

    async def body(client: RunnerClient) -> None:
        response = await client.open("POST", "/s", b"", timeout=5)
        with pytest.raises(StreamBroken):
            [c async for c in response.chunks(idle_timeout=5)]
        assert client._idle == []

    asyncio.run(_with_server(handler, body))


def test_close_delimited_bodies_and_fixed_length_reads() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await _request_head(reader)
        if b"/fixed" in head:
            writer.write(b"HTTP/1.1 201 Created\r\ncontent-length: 4\r\nx-a: b\r\n\r\nbody")
            await writer.drain()
            await _request_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil the end")
        await writer.drain()

    async def body(client: RunnerClient) -> None:
        assert await client.request("POST", "/fixed", b"x") == (
            201,
            {"content-length": "4", "x-a": "b"},
            b"body",
        )
        status, _headers, data = await client.request("POST", "/close")
        assert (status, data) == (200, b"until the end")
        assert client._idle == []  # connection: close is honoured

    asyncio.run(_with_server(handler, body))


def test_a_runner_that_answers_nothing_is_a_connection_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _request_head(reader)

    async def body(client: RunnerClient) -> None:
        with pytest.raises(RunnerConnectionError, match="closed the connection before answering"):
            await client.request("POST", "/x")

    asyncio.run(_with_server(handler, body))
