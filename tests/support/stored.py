"""Helpers for the state tests that look at, or damage, what a backend stored."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg

from skyform.state import StateBackend


class Worker:
    """A `state_worker.py` process; killed at the end of the test whatever happens."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc

    @classmethod
    def start(cls, mode: str, config: Any, stack: str, workdir: Path, *args: str) -> Worker:
        """Run `state_worker.py MODE ...` on `stack` with the backend `config`."""
        script = Path(__file__).resolve().parents[1] / "state" / "state_worker.py"
        proc = subprocess.Popen(
            [sys.executable, str(script), mode, json.dumps(config), stack, str(workdir), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        return cls(proc)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate(timeout=30)

    def line(self) -> dict[str, Any]:
        """The next JSON line it prints (fails the test if it exits first)."""
        assert self.proc.stdout is not None
        text = self.proc.stdout.readline()
        if not text:
            self.proc.wait(timeout=30)
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise AssertionError(f"worker exited {self.proc.returncode}: {err}")
        return json.loads(text)

    def tell(self, text: str = "go") -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def finish(self, timeout: float = 60) -> tuple[int, str, str]:
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out, err


def stored_bytes(backend: StateBackend) -> bytes:
    """Everything the backend has stored for its stack, as raw bytes."""
    from skyform.state.local import LocalBackend
    from skyform.state.postgres import PostgresBackend

    if isinstance(backend, LocalBackend):
        return b"".join(p.read_bytes() for p in sorted(backend.directory.iterdir()) if p.is_file())
    assert isinstance(backend, PostgresBackend)
    with psycopg.connect(backend.url, autocommit=True) as conn:
        if backend.schema:
            conn.execute(f'SET search_path TO "{backend.schema}"')
        rows = conn.execute(
            "SELECT s.data, coalesce(l.info, '') FROM skyform_states s"
            " LEFT JOIN skyform_state_locks l USING (stack) WHERE s.stack = %s",
            (backend.stack,),
        ).fetchall()
    return "".join(a + b for a, b in rows).encode()


def set_stored_text(backend: StateBackend, text: str) -> None:
    """Overwrite what is stored behind the backend's back (to simulate damage)."""
    from skyform.state.local import LocalBackend
    from skyform.state.postgres import PostgresBackend

    if isinstance(backend, LocalBackend):
        backend.path.parent.mkdir(parents=True, exist_ok=True)
        backend.path.write_text(text)
        return
    assert isinstance(backend, PostgresBackend)
    with psycopg.connect(backend.url, autocommit=True) as conn:
        if backend.schema:
            conn.execute(f'SET search_path TO "{backend.schema}"')
        conn.execute("UPDATE skyform_states SET data = %s WHERE stack = %s", (text, backend.stack))


def stored_text(backend: StateBackend) -> str | None:
    """The stored document exactly as stored, None when nothing is."""
    from skyform.state.local import LocalBackend
    from skyform.state.postgres import PostgresBackend

    if isinstance(backend, LocalBackend):
        return backend.path.read_text() if backend.path.exists() else None
    assert isinstance(backend, PostgresBackend)
    with psycopg.connect(backend.url, autocommit=True) as conn:
        if backend.schema:
            conn.execute(f'SET search_path TO "{backend.schema}"')
        row = conn.execute(
            "SELECT data FROM skyform_states WHERE stack = %s", (backend.stack,)
        ).fetchone()
    return row[0] if row else None
