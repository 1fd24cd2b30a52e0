"""Benchmark: read and write a state of 10, 100 and 1000 apps on both backends.

    python bench/state.py [--reps N] [--json]

Each write changes every app's record (so a real write happens, serial +1)
and is timed while the lock is already held, i.e. what `apply` pays per
state update: serialise, secret scan, fsync'd atomic replace (local) or one
transaction (postgres). Reads parse and validate the whole document. The
postgres server is a throwaway one from the system's binaries with fsync on
(or SKYFORM_TEST_PG_URL, in a scratch schema). Growth compares each size with
the previous one: 10x the apps should cost about 10x the time (linear).
Target: 1000 apps written locally in <= 100 ms.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from skyform.state import StateBackend, open_backend

# The throwaway PostgreSQL server is test support (tests/support/pg.py), not part of the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support.pg import find_binaries, temp_postgres

SIZES = (10, 100, 1000)
TARGET_MS = 100.0
WARMUP = 3


def app_record(i: int, round_: int) -> dict[str, Any]:
    """A record shaped like what apply keeps per app."""
    return {
        "type": "app",
        "name": f"app-{i}",
        "status": "ready",
        "revision": f"{i:08x}{abs(round_):056x}",
        "bundle": f".skyform/bundles/app-{i}-{abs(round_)}.skyb",
        "url": f"http://127.0.0.1:8765/app-{i}",
        "spec": {
            "app": f"apps/app_{i}.py::App{i}",
            "machine_type": ["GPU-H100", "GPU-B200"],
            "requirements": ["torch==2.13.0", "numpy>=2"],
            "min_runners": 0,
            "max_runners": 4,
            "keep_alive": 300,
            "max_multiplexing": 1,
            "request_timeout": 120,
            "startup_timeout": 600,
            "auth": "private",
            "env": {"GREETING": "hi", "LOG_LEVEL": "info"},
            "secrets": ["HF_TOKEN"],
        },
        "endpoints": [{"method": "POST", "path": "/"}, {"method": "POST", "path": "/batch"}],
        "updated": round_,
    }


def measure(backend: StateBackend, size: int, reps: int) -> dict[str, float]:
    """Median write and read times (ms) of a `size`-app state on `backend`."""
    writes, reads = [], []
    with backend.lock(operation="bench"):
        doc = backend.read()
        for warmup in range(WARMUP):  # first writes also pay for creating files and tables
            doc = backend.write(doc.evolve(resources=_resources(size, -1 - warmup)))
        for round_ in range(1, reps + 1):
            new = doc.evolve(resources=_resources(size, round_))
            start = time.perf_counter()
            stored = backend.write(new)
            writes.append(time.perf_counter() - start)
            assert stored.serial == doc.serial + 1
            doc = stored
            start = time.perf_counter()
            backend.read()
            reads.append(time.perf_counter() - start)
    return {"write_ms": statistics.median(writes) * 1e3, "read_ms": statistics.median(reads) * 1e3}


def _resources(size: int, round_: int) -> dict[str, dict[str, Any]]:
    records: dict[str, dict[str, Any]] = {"gateway": {"type": "gateway", "port": 8765}}
    records.update({f"app.app-{i}": app_record(i, round_) for i in range(size)})
    return records


@contextlib.contextmanager
def local_backends() -> Iterator[Callable[[str], StateBackend]]:
    with tempfile.TemporaryDirectory(prefix="skyform-bench-") as tmp:
        yield lambda stack: open_backend("local", stack, Path(tmp))


@contextlib.contextmanager
def postgres_backends() -> Iterator[Callable[[str], StateBackend]]:
    external = os.environ.get("SKYFORM_TEST_PG_URL")
    if external:
        schema = f"skyform_bench_{uuid.uuid4().hex[:8]}"
        try:
            yield lambda stack: open_backend(
                {"postgres": {"url": external, "schema": schema}}, stack, "."
            )
        finally:
            import psycopg

            with psycopg.connect(external, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        return
    with temp_postgres(durable=True) as url:
        yield lambda stack: open_backend({"postgres": {"url": url}}, stack, ".")


def run(reps: int) -> dict[str, dict[int, dict[str, float]]]:
    results: dict[str, dict[int, dict[str, float]]] = {}
    kinds: list[tuple[str, Any]] = [("local", local_backends)]
    if os.environ.get("SKYFORM_TEST_PG_URL") or find_binaries() is not None:
        kinds.append(("postgres", postgres_backends))
    else:
        print("postgres: skipped (no PostgreSQL binaries; install Debian's postgresql)")
    for kind, factory in kinds:
        results[kind] = {}
        with factory() as make:
            for size in SIZES:
                backend = make(f"bench-{size}")
                try:
                    results[kind][size] = measure(backend, size, reps)
                finally:
                    backend.close()
    return results


def report(results: dict[str, dict[int, dict[str, float]]]) -> bool:
    print(f"{'backend':<9} {'apps':>5} {'write ms':>9} {'growth':>7} {'read ms':>8} {'growth':>7}")
    for kind, by_size in results.items():
        previous: dict[str, float] | None = None
        for size in SIZES:
            row = by_size[size]
            growth_w = f"{row['write_ms'] / previous['write_ms']:.1f}x" if previous else "-"
            growth_r = f"{row['read_ms'] / previous['read_ms']:.1f}x" if previous else "-"
            print(
                f"{kind:<9} {size:>5} {row['write_ms']:>9.2f} {growth_w:>7} "
                f"{row['read_ms']:>8.2f} {growth_r:>7}"
            )
            previous = row
    local_1000 = results["local"][1000]["write_ms"]
    met = local_1000 <= TARGET_MS
    verdict = "met" if met else "MISSED"
    print(
        f"target: 1000 apps written locally in <= {TARGET_MS:g} ms: {local_1000:.1f} ms ({verdict})"
    )
    print("growth: time at this size / time at the previous (10x fewer apps); ~10x is linear")
    return met


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=15, help="timed writes/reads per size")
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    parser.add_argument("--strict", action="store_true", help="exit 1 when the target is missed")
    args = parser.parse_args()
    results = run(args.reps)
    met = report(results)
    if args.json:
        print(json.dumps(results))
    return 0 if met or not args.strict else 1


if __name__ == "__main__":
    sys.exit(main())
