"""The gateway's durable memory: registered apps, queued requests and their results.

Embedded SQLite in WAL mode with `synchronous=NORMAL`. A commit in that mode
is a `write()` into the WAL file, without an fsync: the row is in the kernel's
page cache when `commit()` returns, so it survives the gateway process being
killed (SIGKILL, OOM, a crash) — which is the promise the queue makes: a
request that got a 202 is never lost. It does not survive a power loss or a
kernel crash between the commit and the next checkpoint; set
`SKYFORM_QUEUE_FSYNC=1` to trade throughput for that (`synchronous=FULL`).

The store is used from the gateway's event-loop thread only; each call is a
few tens of microseconds, so it runs inline rather than in a thread pool.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skyform.errors import SkyformError
from skyform.runtime.sealing import Sealer

SCHEMA = """
CREATE TABLE IF NOT EXISTS apps (
    name TEXT PRIMARY KEY,
    revision TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    auth TEXT NOT NULL,
    env TEXT NOT NULL,
    secrets TEXT NOT NULL DEFAULT '',
    bundle_path TEXT NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS requests (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    app TEXT NOT NULL,
    path TEXT NOT NULL,
    method TEXT NOT NULL,
    body BLOB NOT NULL,
    content_type TEXT NOT NULL,
    no_retry INTEGER NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    started REAL,
    completed REAL,
    result_status INTEGER,
    result_body BLOB,
    result_type TEXT,
    error TEXT,
    error_type TEXT
);
CREATE INDEX IF NOT EXISTS requests_open ON requests(status) WHERE status != 'COMPLETED';
"""


@dataclass
class StoredApp:
    name: str
    revision: str
    fingerprint: str
    auth: str
    env: dict[str, str]
    bundle_path: Path
    secrets: dict[str, str] = field(default_factory=dict)  # sealed at rest


@dataclass
class StoredRequest:
    """One request as the store knows it (results included once completed)."""

    id: str
    app: str
    path: str
    method: str
    body: bytes
    content_type: str
    no_retry: bool
    status: str
    attempts: int
    created: float
    started: float | None = None
    completed: float | None = None
    result_status: int | None = None
    result_body: bytes | None = None
    result_type: str | None = None
    error: str | None = None
    error_type: str | None = None


_REQUEST_COLUMNS = (
    "id, app, path, method, body, content_type, no_retry, status, attempts, created, "
    "started, completed, result_status, result_body, result_type, error, error_type"
)


class QueueStore:
    """SQLite-backed apps and requests. Open one per gateway process."""

    def __init__(
        self, path: Path, *, fsync: bool | None = None, sealer: Sealer | None = None
    ) -> None:
        self.path = Path(path)
        self.sealer = sealer
        self.load_errors: dict[str, str] = {}  # apps `load_apps` could not open
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Results and apps' env live here: readable by the owner only (secrets
        # are sealed besides, see `skyform.runtime.sealing`).
        # SQLite gives its -wal and -shm files the database file's mode.
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        os.chmod(self.path, 0o600)
        if fsync is None:
            fsync = os.environ.get("SKYFORM_QUEUE_FSYNC") == "1"
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={'FULL' if fsync else 'NORMAL'}")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(apps)")}
        if "secrets" not in columns:  # a store written before secrets were sealed
            self._db.execute("ALTER TABLE apps ADD COLUMN secrets TEXT NOT NULL DEFAULT ''")

    def close(self) -> None:
        self._db.close()

    # --- apps -------------------------------------------------------------

    def save_app(self, app: StoredApp) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO apps (name, revision, fingerprint, auth, env, secrets, "
            "bundle_path, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                app.name,
                app.revision,
                app.fingerprint,
                app.auth,
                json.dumps(app.env, sort_keys=True),
                self._seal(app),
                str(app.bundle_path),
                time.time(),
            ),
        )

    def delete_app(self, name: str) -> None:
        self._db.execute("DELETE FROM apps WHERE name = ?", (name,))

    def load_apps(self) -> list[StoredApp]:
        """Every registered app, its secrets opened (an app whose secrets do not open is skipped
        with `SkyformError` recorded in `load_errors`)."""
        rows = self._db.execute(
            "SELECT name, revision, fingerprint, auth, env, bundle_path, secrets FROM apps "
            "ORDER BY name"
        ).fetchall()
        apps = []
        self.load_errors = {}
        for r in rows:
            try:
                secrets = self._open(r[0], r[6])
            except SkyformError as exc:
                self.load_errors[r[0]] = str(exc)
                continue
            apps.append(StoredApp(r[0], r[1], r[2], r[3], json.loads(r[4]), Path(r[5]), secrets))
        return apps

    def _seal(self, app: StoredApp) -> str:
        if not app.secrets:
            return ""
        if self.sealer is None:
            raise SkyformError(f"app {app.name}: no key to seal its secrets with")
        return self.sealer.seal(app.secrets, f"app {app.name}")

    def _open(self, name: str, text: str) -> dict[str, str]:
        if not text:
            return {}
        if self.sealer is None:
            raise SkyformError(f"app {name}: no key to open its sealed secrets with")
        return self.sealer.open(text, f"app {name}")

    # --- requests ---------------------------------------------------------

    def add_request(self, req: StoredRequest) -> None:
        """Record a new queued request; durable (against a process crash) once this returns."""
        self._db.execute(
            "INSERT INTO requests (id, app, path, method, body, content_type, no_retry, status, "
            "attempts, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                req.id,
                req.app,
                req.path,
                req.method,
                req.body,
                req.content_type,
                int(req.no_retry),
                req.status,
                req.attempts,
                req.created,
            ),
        )

    def complete_request(self, req: StoredRequest) -> None:
        self._db.execute(
            "UPDATE requests SET status = 'COMPLETED', attempts = ?, started = ?, completed = ?, "
            "result_status = ?, result_body = ?, result_type = ?, error = ?, error_type = ?, "
            "body = x'' WHERE id = ?",
            (
                req.attempts,
                req.started,
                req.completed,
                req.result_status,
                req.result_body,
                req.result_type,
                req.error,
                req.error_type,
                req.id,
            ),
        )

    def get_request(self, request_id: str) -> StoredRequest | None:
        row = self._db.execute(
            f"SELECT {_REQUEST_COLUMNS} FROM requests WHERE id = ?", (request_id,)
        ).fetchone()
        return _request(row) if row else None

    def open_requests(self) -> list[StoredRequest]:
        """Requests accepted but not completed, oldest first: what a restart must run."""
        rows = self._db.execute(
            f"SELECT {_REQUEST_COLUMNS} FROM requests WHERE status != 'COMPLETED' ORDER BY seq"
        ).fetchall()
        return [_request(r) for r in rows]

    def prune_completed(self, older_than: float) -> int:
        """Forget results completed before `older_than` (epoch seconds)."""
        cur = self._db.execute(
            "DELETE FROM requests WHERE status = 'COMPLETED' AND completed < ?", (older_than,)
        )
        return cur.rowcount


def _request(row: tuple[Any, ...]) -> StoredRequest:
    return StoredRequest(
        id=row[0],
        app=row[1],
        path=row[2],
        method=row[3],
        body=bytes(row[4]),
        content_type=row[5],
        no_retry=bool(row[6]),
        status=row[7],
        attempts=row[8],
        created=row[9],
        started=row[10],
        completed=row[11],
        result_status=row[12],
        result_body=bytes(row[13]) if row[13] is not None else None,
        result_type=row[14],
        error=row[15],
        error_type=row[16],
    )
