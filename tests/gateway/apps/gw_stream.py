"""Apps the streaming tests run on real runners behind a real gateway.

The tests steer the handlers through files under $GW_COUNT_DIR: a gated
handler waits for `<key>.go<i>` before producing item i, and writes
`<key>.closed` when its caller went away (GeneratorExit / cancellation), so a
test can observe from outside what the handler saw.
"""

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Annotated

from fastapi import File, Form, HTTPException, Query, Request, UploadFile, WebSocket
from fastapi.responses import PlainTextResponse, StreamingResponse
from pydantic import BaseModel

from skyform import App, endpoint


class TokensIn(BaseModel):
    key: str
    n: int = 3
    gate: bool = False
    fail_at: int = -1


class ItemIn(BaseModel):
    name: str
    size: int = 1


def _dir() -> Path:
    return Path(os.environ["GW_COUNT_DIR"])


def _wait(name: str, limit: float = 60.0) -> None:
    deadline = time.monotonic() + limit
    while not (_dir() / name).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name} never appeared")
        time.sleep(0.01)


async def _await(name: str, limit: float = 60.0) -> None:
    deadline = time.monotonic() + limit
    while not (_dir() / name).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name} never appeared")
        await asyncio.sleep(0.01)


def _mark(name: str) -> None:
    (_dir() / name).write_text(str(os.getpid()))


class Streamer(App):
    max_runners = 1
    max_multiplexing = 4
    keep_alive = 30
    request_timeout = 30
    startup_timeout = 30

    @endpoint("/tokens")
    def tokens(self, req: TokensIn) -> Iterator[dict]:
        """Yield n tokens; gated ones wait for the test before each after the first."""
        try:
            for i in range(req.n):
                if req.gate and i > 0:
                    _wait(f"{req.key}.go{i}")
                if i == req.fail_at:
                    raise ValueError(f"failed at {i}")
                yield {"i": i, "token": f"t{i}"}
        except GeneratorExit:
            _mark(f"{req.key}.closed")
            raise

    @endpoint("/atokens")
    async def atokens(self, req: TokensIn) -> AsyncIterator[dict]:
        """The async generator form of /tokens."""
        try:
            for i in range(req.n):
                if req.gate and i > 0:
                    await _await(f"{req.key}.go{i}")
                yield {"i": i, "token": f"a{i}"}
        except (GeneratorExit, asyncio.CancelledError):
            _mark(f"{req.key}.closed")
            raise

    @endpoint("/flaky")
    def flaky(self, req: TokensIn) -> Iterator[dict]:
        """The first call of a key fails with a CUDA error before its first event (503)."""
        marker = _dir() / f"{req.key}.calls"
        calls = len(marker.read_text().splitlines()) + 1 if marker.exists() else 1
        marker.write_text("x\n" * calls)
        if calls == 1:
            raise RuntimeError("CUDA error: out of memory")
        yield {"pid": os.getpid(), "calls": calls}

    @endpoint("/die")
    def die(self, req: TokensIn) -> Iterator[dict]:
        """One event, then the runner process dies (once the test says go1)."""
        yield {"pid": os.getpid()}
        _wait(f"{req.key}.go1")
        os._exit(1)

    @endpoint("/big")
    def big(self, req: TokensIn) -> Iterator[dict]:
        """n events of 64 KiB each; `<key>.progress` says how many were produced."""
        pad = "x" * 65536
        for i in range(req.n):
            (_dir() / f"{req.key}.progress").write_text(str(i))
            yield {"i": i, "pad": pad}

    @endpoint("/refuse")
    def refuse(self, req: TokensIn) -> Iterator[dict]:
        """Fails before its first event: an ordinary HTTP error."""
        raise HTTPException(status_code=400, detail=f"refused {req.key}")
        yield {}

    @endpoint("/raw")
    async def raw(self, key: str, n: int = 2) -> StreamingResponse:
        """A starlette StreamingResponse passed through as it is."""

        async def body() -> AsyncIterator[bytes]:
            for i in range(n):
                if i > 0:
                    await _await(f"{key}.go{i}")
                yield f"chunk{i};".encode()

        return StreamingResponse(body(), media_type="text/plain", headers={"x-raw": "yes"})

    @endpoint("/upload")
    async def upload(
        self, f: Annotated[UploadFile, File()], note: Annotated[str, Form()] = ""
    ) -> dict:
        data = await f.read()
        return {"filename": f.filename, "size": len(data), "note": note, "head": data[:5].decode()}

    @endpoint("/items/{item_id}")
    def item(self, item_id: int, item: ItemIn, q: Annotated[str, Query()] = "none") -> dict:
        return {"item_id": item_id, "name": item.name, "size": item.size, "q": q}

    @endpoint("/whoami", method="GET")
    async def whoami(self, request: Request) -> PlainTextResponse:
        return PlainTextResponse(f"path={request.url.path}")

    @endpoint("/ws", websocket=True)
    async def ws(self, ws: WebSocket) -> None:
        """Echo frames; "boom" raises (1011), "cuda" is a CUDA failure (1013)."""
        await ws.accept()
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("bytes") or (message.get("text") or "").encode()
            if data == b"boom":
                raise ValueError("boom")
            if data == b"cuda":
                raise RuntimeError("CUDA error: an illegal memory access was encountered")
            if message.get("bytes") is not None:
                await ws.send_bytes(data)
            else:
                await ws.send_text(f"echo:{data.decode()}:{os.getpid()}")
