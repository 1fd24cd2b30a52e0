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

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS apps (
    name TEXT PRIMARY KEY,
    revision TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    auth TEXT NOT NULL,
    env TEXT NOT NULL,
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
-- fal-compatible options and logs of a queued request (only for requests that have any)
CREATE TABLE IF NOT EXISTS request_fal (
    id TEXT PRIMARY KEY,
    webhook_url TEXT,
    hint TEXT,
    start_deadline REAL,
    logs TEXT
);
-- webhook POSTs still to make; written with the result they report
CREATE TABLE IF NOT EXISTS webhook_outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL,
    url TEXT NOT NULL,
    body BLOB NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS webhook_due ON webhook_outbox(next_at) WHERE state = 'pending';
"""


@dataclass
class StoredApp:
    name: str
    revision: str
    fingerprint: str
    auth: str
    env: dict[str, str]
    bundle_path: Path


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
    # fal-compatible extras, kept in `request_fal`
    webhook_url: str | None = None
    hint: str | None = None
    start_deadline: float | None = None  # epoch seconds by which it must have started
    logs: list[dict[str, str]] | None = None

    @property
    def has_fal_extras(self) -> bool:
        return bool(self.webhook_url or self.hint or self.start_deadline or self.logs)


_REQUEST_COLUMNS = (
    "id, app, path, method, body, content_type, no_retry, status, attempts, created, "
    "started, completed, result_status, result_body, result_type, error, error_type"
)


class QueueStore:
    """SQLite-backed apps and requests. Open one per gateway process."""

    def __init__(self, path: Path, *, fsync: bool | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Apps' env (secrets included) lives here: readable by the owner only.
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

    def close(self) -> None:
        self._db.close()

    # --- apps -------------------------------------------------------------

    def save_app(self, app: StoredApp) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO apps (name, revision, fingerprint, auth, env, bundle_path, "
            "updated) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                app.name,
                app.revision,
                app.fingerprint,
                app.auth,
                json.dumps(app.env, sort_keys=True),
                str(app.bundle_path),
                time.time(),
            ),
        )

    def delete_app(self, name: str) -> None:
        self._db.execute("DELETE FROM apps WHERE name = ?", (name,))

    def load_apps(self) -> list[StoredApp]:
        rows = self._db.execute(
            "SELECT name, revision, fingerprint, auth, env, bundle_path FROM apps ORDER BY name"
        ).fetchall()
        return [StoredApp(r[0], r[1], r[2], r[3], json.loads(r[4]), Path(r[5])) for r in rows]

    # --- requests ---------------------------------------------------------

    def add_request(self, req: StoredRequest) -> None:
        """Record a new queued request; durable (against a process crash) once this returns."""
        if req.has_fal_extras:
            with self._transaction():
                self._add_request(req)
                self._save_fal(req)
        else:
            self._add_request(req)

    def _add_request(self, req: StoredRequest) -> None:
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

    def complete_request(self, req: StoredRequest, webhook_body: bytes | None = None) -> None:
        """Store the result; with `webhook_body`, queue its webhook POST in the same commit."""
        if req.has_fal_extras or webhook_body is not None:
            with self._transaction():
                self._complete_request(req)
                self._save_fal(req)
                if webhook_body is not None and req.webhook_url:
                    self._db.execute(
                        "INSERT INTO webhook_outbox (request_id, url, body, next_at) "
                        "VALUES (?, ?, ?, ?)",
                        (req.id, req.webhook_url, webhook_body, time.time()),
                    )
        else:
            self._complete_request(req)

    def _complete_request(self, req: StoredRequest) -> None:
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
        return self._with_fal(_request(row)) if row else None

    def open_requests(self) -> list[StoredRequest]:
        """Requests accepted but not completed, oldest first: what a restart must run."""
        rows = self._db.execute(
            f"SELECT {_REQUEST_COLUMNS} FROM requests WHERE status != 'COMPLETED' ORDER BY seq"
        ).fetchall()
        return [self._with_fal(_request(r)) for r in rows]

    def prune_completed(self, older_than: float) -> int:
        """Forget results completed before `older_than` (epoch seconds)."""
        cur = self._db.execute(
            "DELETE FROM requests WHERE status = 'COMPLETED' AND completed < ?", (older_than,)
        )
        self._db.execute("DELETE FROM request_fal WHERE id NOT IN (SELECT id FROM requests)")
        self._db.execute(
            "DELETE FROM webhook_outbox WHERE state != 'pending' AND next_at < ?", (older_than,)
        )
        return cur.rowcount

    # --- fal extras and the webhook outbox ----------------------------------

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _save_fal(self, req: StoredRequest) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO request_fal (id, webhook_url, hint, start_deadline, logs) "
            "VALUES (?, ?, ?, ?, ?)",
            (
                req.id,
                req.webhook_url,
                req.hint,
                req.start_deadline,
                json.dumps(req.logs) if req.logs else None,
            ),
        )

    def _with_fal(self, req: StoredRequest) -> StoredRequest:
        row = self._db.execute(
            "SELECT webhook_url, hint, start_deadline, logs FROM request_fal WHERE id = ?",
            (req.id,),
        ).fetchone()
        if row is not None:
            req.webhook_url, req.hint, req.start_deadline = row[0], row[1], row[2]
            req.logs = json.loads(row[3]) if row[3] else None
        return req

    def due_webhooks(self, now: float, limit: int = 50) -> list[tuple[int, str, str, bytes, int]]:
        """Pending webhook POSTs due by `now`: (seq, request_id, url, body, attempts)."""
        rows = self._db.execute(
            "SELECT seq, request_id, url, body, attempts FROM webhook_outbox "
            "WHERE state = 'pending' AND next_at <= ? ORDER BY next_at LIMIT ?",
            (now, limit),
        ).fetchall()
        return [(r[0], r[1], r[2], bytes(r[3]), r[4]) for r in rows]

    def next_webhook_in(self, now: float) -> float | None:
        """Seconds until the next pending webhook is due (None: none pending)."""
        row = self._db.execute(
            "SELECT MIN(next_at) FROM webhook_outbox WHERE state = 'pending'"
        ).fetchone()
        return None if row[0] is None else max(0.0, row[0] - now)

    def webhook_delivered(self, seq: int) -> None:
        self._db.execute(
            "UPDATE webhook_outbox SET state = 'delivered', attempts = attempts + 1, "
            "next_at = ?, body = x'' WHERE seq = ?",
            (time.time(), seq),
        )

    def webhook_retry(self, seq: int, attempts: int, next_at: float, error: str) -> None:
        self._db.execute(
            "UPDATE webhook_outbox SET attempts = ?, next_at = ?, last_error = ? WHERE seq = ?",
            (attempts, next_at, error, seq),
        )

    def webhook_failed(self, seq: int, attempts: int, error: str) -> None:
        self._db.execute(
            "UPDATE webhook_outbox SET state = 'failed', attempts = ?, next_at = ?, "
            "last_error = ? WHERE seq = ?",
            (attempts, time.time(), error, seq),
        )


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
