"""Apps the gateway tests run on real runners.

Call counts go to files under $GW_COUNT_DIR (one line per handler run, with the
runner's pid), because each runner is its own process.
"""

import asyncio
import os
import time
from pathlib import Path

from fastapi import HTTPException
from pydantic import BaseModel

from skyform import App, endpoint


class EchoIn(BaseModel):
    text: str
    times: int = 1


class StatusIn(BaseModel):
    key: str
    code: int = 200
    fail_times: int = 0
    sleep: float = 0.0
    # Hold the call until the test creates this file under $GW_COUNT_DIR (at
    # most RELEASE_WAIT_S): what a test waits for then never races a timer.
    release: str = ""


RELEASE_WAIT_S = 15.0


def _released(req: StatusIn) -> bool:
    return not req.release or (Path(os.environ["GW_COUNT_DIR"]) / req.release).exists()


def _record(key: str) -> int:
    """Append this call to the key's file; return how many calls it has seen."""
    path = Path(os.environ["GW_COUNT_DIR"]) / key
    with open(path, "a") as fh:
        fh.write(f"{os.getpid()}\n")
    return len(path.read_text().splitlines())


class Echo(App):
    max_runners = 2
    keep_alive = 30
    request_timeout = 20
    startup_timeout = 30

    @endpoint("/")
    def echo(self, req: EchoIn) -> dict:
        """Repeat the text."""
        return {"echo": req.text * req.times, "pid": os.getpid()}

    @endpoint("/status")
    def status(self, req: StatusIn) -> dict:
        """Record the call; answer `code` for the first `fail_times` calls of `key`."""
        n = _record(req.key)
        if req.sleep:
            time.sleep(req.sleep)
        deadline = time.monotonic() + RELEASE_WAIT_S
        while not _released(req) and time.monotonic() < deadline:
            time.sleep(0.02)
        if n <= req.fail_times:
            raise HTTPException(status_code=req.code, detail=f"planned {req.code} (call {n})")
        return {"pid": os.getpid(), "calls": n}

    @endpoint("/busy")
    async def busy(self, req: StatusIn) -> dict:
        """Sleep `sleep` seconds; report how many calls this runner had in flight."""
        Echo._in_flight = getattr(Echo, "_in_flight", 0) + 1
        peak = Echo._in_flight
        try:
            await asyncio.sleep(req.sleep)
            deadline = time.monotonic() + RELEASE_WAIT_S
            while not _released(req) and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            peak = max(peak, Echo._in_flight)
        finally:
            Echo._in_flight -= 1
        return {"pid": os.getpid(), "peak": peak}

    @endpoint("/wedge")
    async def wedge(self, req: StatusIn) -> dict:
        """Block the runner's event loop (a bug in user code): it cannot even time out."""
        _record(req.key)
        time.sleep(req.sleep)
        return {"pid": os.getpid()}

    @endpoint("/version", method="GET")
    def version(self) -> dict:
        return {"version": 1, "pid": os.getpid(), "greeting": os.environ.get("GREETING", "")}


class Broken(App):
    max_runners = 1
    startup_timeout = 20

    def setup(self) -> None:
        raise RuntimeError("model weights not found (planned failure)")

    @endpoint("/")
    def run(self) -> dict:
        return {"ok": True}
