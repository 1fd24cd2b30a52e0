"""What only the postgres backend does: its tables, its rows, its advisory lock, its errors."""

from __future__ import annotations

import socket
import uuid
from typing import Any

import psycopg
import pytest
from support.stored import Worker

from skyform.state import StateError, open_backend
from skyform.state.postgres import STATES_TABLE

pytestmark = pytest.mark.postgres


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_database_is_one_clear_error(tmp_path) -> None:
    url = f"postgresql://me:hunter2-password@127.0.0.1:{_closed_port()}/db"
    backend = open_backend({"postgres": {"url": url}}, "demo", tmp_path)
    for action in (backend.read, backend.current_lock):
        with pytest.raises(StateError) as err:
            action()
        message = str(err.value)
        assert message.startswith("cannot reach the postgres state backend at postgresql://me:***@")
        assert "hunter2" not in message and "\n" not in message
    with pytest.raises(StateError, match="cannot reach"), backend.lock():
        pass


def test_tables_are_created_on_first_use_one_row_per_stack(pg_config: dict[str, Any]) -> None:
    schema = f"fresh_{uuid.uuid4().hex[:8]}"
    config = {"postgres": {**pg_config, "schema": schema}}
    with psycopg.connect(pg_config["url"], autocommit=True) as conn:
        count = "SELECT count(*) FROM information_schema.tables WHERE table_schema = %s"
        assert conn.execute(count, (schema,)).fetchone()[0] == 0
        a, b = open_backend(config, "a", "."), open_backend(config, "b", ".")
        try:
            assert a.read().serial == 0
            assert conn.execute(count, (schema,)).fetchone()[0] == 2
            for backend in (a, b, a, a):
                backend.write(backend.read().evolve(outputs={"n": str(uuid.uuid4())}))
            rows = conn.execute(
                f'SELECT stack, serial FROM "{schema}".{STATES_TABLE} ORDER BY stack'
            ).fetchall()
            assert rows == [("a", 3), ("b", 1)]
        finally:
            a.close()
            b.close()
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def test_stacks_have_separate_locks(pg_config: dict[str, Any]) -> None:
    config = {"postgres": pg_config}
    a, b = (
        open_backend(config, f"a{uuid.uuid4().hex[:6]}", "."),
        open_backend(config, "b" + uuid.uuid4().hex[:6], "."),
    )
    try:
        with a.lock(), b.lock():
            assert a.current_lock() != b.current_lock()
    finally:
        a.close()
        b.close()


def test_unlock_ends_a_stuck_holders_session(
    pg_config: dict[str, Any], stack: str, tmp_path
) -> None:
    config = {"postgres": pg_config}
    holder = Worker.start("hold", config, stack, tmp_path, "apply", "write")
    other = open_backend(config, stack, tmp_path)
    try:
        info = holder.line()["locked"]
        removed = other.force_unlock(info["id"])
        assert removed.id == info["id"]
        assert other.current_lock() is None
        with other.lock(timeout=0) as mine:
            stored = other.write(other.read().evolve(outputs={"by": "other"}))
        assert mine.id != info["id"]
        # the stuck holder wakes up: its lock is gone, so its write is refused
        holder.tell()
        result = holder.line()
        assert "lost the connection" in result["error"] and "lock" in result["error"]
        assert other.read() == stored
    finally:
        other.close()
        holder.stop()
