"""A batched app for the dynamic-batching tests: each result says which batch it was in.

x < 0: that item alone fails (an exception instance in its slot);
x == 418: that item alone gets an HTTPException(418) in its slot;
x == 999: the handler raises, so its whole batch fails;
x == 777: the handler returns one result too few, so its whole batch fails.
"""

import asyncio
import itertools
import threading

from fastapi import HTTPException
from pydantic import BaseModel

from skyform import App, endpoint


class Num(BaseModel):
    x: int


class Out(BaseModel):
    y: int
    batch: int  # which batch (a number per endpoint) served this item
    size: int  # how many items that batch had


class Batched(App):
    max_multiplexing = 8

    def setup(self) -> None:
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._in_handler = 0
        self.max_concurrent_batches = 0

    def _results(self, reqs: list[Num]) -> list[object]:
        if any(r.x == 999 for r in reqs):
            raise RuntimeError("this batch cannot be served")
        batch = next(self._ids)
        out: list[object] = []
        for r in reqs:
            if r.x < 0:
                out.append(ValueError(f"negative input {r.x}"))
            elif r.x == 418:
                out.append(HTTPException(418, "this item is a teapot"))
            else:
                out.append(Out(y=2 * r.x, batch=batch, size=len(reqs)))
        if any(r.x == 777 for r in reqs):
            out.pop()
        return out

    @endpoint("/double", batch_size=4, batch_wait_ms=2000)
    def double(self, reqs: list[Num]) -> list[Out]:
        with self._lock:
            self._in_handler += 1
            self.max_concurrent_batches = max(self.max_concurrent_batches, self._in_handler)
        try:
            return self._results(reqs)  # type: ignore[return-value]
        finally:
            with self._lock:
                self._in_handler -= 1

    @endpoint("/async-double", batch_size=8, batch_wait_ms=2000)
    async def async_double(self, reqs: list[Num]) -> list[Out]:
        await asyncio.sleep(0)
        return self._results(reqs)  # type: ignore[return-value]

    @endpoint("/quick", batch_size=8, batch_wait_ms=0)
    def quick(self, reqs: list[Num]) -> list[Out]:
        return self._results(reqs)  # type: ignore[return-value]

    @endpoint("/overlap")
    def overlap(self) -> dict:
        return {"max_concurrent_batches": self.max_concurrent_batches}
