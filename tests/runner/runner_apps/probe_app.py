"""Apps the runner tests serve. Behaviour that varies per test comes from env vars.

PROBE_DIR: a folder the app and the test share (gate files, marks).
PROBE_SETUP: "" (quick), "gate" (wait for PROBE_DIR/setup-gate), "raise".
"""

import asyncio
import logging
import os
import sys
import threading
import time
from pathlib import Path

from fastapi import HTTPException
from pydantic import BaseModel
from starlette.responses import JSONResponse

from skyform import App, endpoint

log = logging.getLogger("probe")


class Num(BaseModel):
    x: int


class Doubled(BaseModel):
    y: int


class Status(BaseModel):
    code: int


def _probe_dir() -> Path:
    return Path(os.environ["PROBE_DIR"])


def _wait_for(path: Path, limit: float = 60.0) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if path.exists():
            return True
        time.sleep(0.02)
    return False


class Probe(App):
    request_timeout = 60

    def setup(self) -> None:
        mode = os.environ.get("PROBE_SETUP", "")
        if mode == "raise":
            raise ValueError("setup exploded on purpose")
        if mode == "gate":
            (_probe_dir() / "setup-started").write_text("1")
            _wait_for(_probe_dir() / "setup-gate")
        self.factor = 2
        self.waiting = threading.Event()
        self.release = threading.Event()

    def teardown(self) -> None:
        (_probe_dir() / "teardown-mark").write_text("teardown ran")

    @endpoint("/")
    def double(self, req: Num) -> Doubled:
        return Doubled(y=req.x * self.factor)

    @endpoint("/async")
    async def double_async(self, req: Num) -> Doubled:
        await asyncio.sleep(0)
        return Doubled(y=req.x * self.factor)

    @endpoint("/info")
    def info(self) -> dict:
        return {"pid": os.getpid(), "torch_loaded": "torch" in sys.modules}

    @endpoint("/status")
    def status(self, req: Status) -> dict:
        """Raise HTTPException with the asked status."""
        raise HTTPException(req.code, f"asked for {req.code}")

    @endpoint("/return-status")
    async def return_status(self, req: Status) -> dict:
        """Return a Response with the asked status (no exception)."""
        return JSONResponse({"returned": req.code}, status_code=req.code)

    @endpoint("/boom")
    def boom(self) -> dict:
        raise ValueError("boom on purpose")

    @endpoint("/runtime-error")
    def runtime_error(self) -> dict:
        raise RuntimeError("a plain runtime error, nothing to do with the GPU")

    @endpoint("/cuda-error")
    def cuda_error(self) -> dict:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    @endpoint("/torch-oom")
    def torch_oom(self) -> dict:
        import torch

        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    @endpoint("/bad-output")
    def bad_output(self) -> Doubled:
        return {"nope": 1}  # type: ignore[return-value]

    @endpoint("/log")
    def log_line(self) -> dict:
        log.warning("hello from a sync handler")
        return {"logged": True}

    @endpoint("/wait")
    def wait(self) -> dict:
        """Blocks its thread until /release; proves sync handlers leave the loop free."""
        self.waiting.set()
        return {"released": self.release.wait(30)}

    @endpoint("/waiting")
    async def is_waiting(self) -> dict:
        return {"waiting": self.waiting.is_set()}

    @endpoint("/release")
    async def do_release(self) -> dict:
        self.release.set()
        return {"ok": True}

    @endpoint("/slow")
    def slow(self) -> dict:
        """Marks that it started, then waits for PROBE_DIR/slow-gate."""
        (_probe_dir() / "slow-started").write_text("1")
        return {"finished": _wait_for(_probe_dir() / "slow-gate")}

    @endpoint("/hang")
    async def hang(self) -> dict:
        await asyncio.sleep(3600)
        return {}


class NoSetup(App):
    @endpoint("/")
    async def hello(self) -> dict:
        return {"hello": "world"}
