"""Fixtures for the state tests: a real PostgreSQL server, and backends on both kinds.

The server is started once per test session from the system's PostgreSQL
binaries (or taken from SKYFORM_TEST_PG_URL, where each session works in its
own schema and drops it at the end).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from support.pg import temp_postgres
from support.stored import Worker

from skyform.state import StateBackend, StateError, open_backend


@pytest.fixture(scope="session")
def pg_config() -> Iterator[dict[str, Any]]:
    """`{"url": ..., ["schema": ...]}` for a real server that lives for the whole session."""
    external = os.environ.get("SKYFORM_TEST_PG_URL")
    if external:
        schema = f"skyform_test_{uuid.uuid4().hex[:10]}"
        try:
            yield {"url": external, "schema": schema}
        finally:
            with psycopg.connect(external, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        return
    try:
        server = temp_postgres()
        url = server.__enter__()
    except StateError as exc:
        pytest.fail(f"{exc} (`make system-deps` installs it), or set SKYFORM_TEST_PG_URL")
    try:
        yield {"url": url}
    finally:
        server.__exit__(None, None, None)


@pytest.fixture
def stack() -> str:
    """A stack name no other test uses, so tests on one server never meet."""
    return f"s{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=["local", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend_config(request: pytest.FixtureRequest) -> Any:
    """The `state:` value of a stack file, for each backend."""
    if request.param == "local":
        return "local"
    return {"postgres": request.getfixturevalue("pg_config")}


@pytest.fixture
def make_backend(
    backend_config: Any, stack: str, tmp_path: Path
) -> Iterator[Callable[[], StateBackend]]:
    """Opens backends on the same stack (each one like a separate user); closes them after."""
    opened: list[StateBackend] = []

    def make() -> StateBackend:
        backend = open_backend(backend_config, stack, tmp_path)
        opened.append(backend)
        return backend

    yield make
    for backend in opened:
        backend.close()


@pytest.fixture
def spawn(backend_config: Any, stack: str, tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    """Starts `state_worker.py MODE ...` on this test's stack and backend."""
    workers: list[Worker] = []

    def start(mode: str, *args: str) -> Worker:
        worker = Worker.start(mode, backend_config, stack, tmp_path, *args)
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()
