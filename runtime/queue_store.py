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
CREATE TABLE IF NOT EXISTS bodies (
    seq INTEGER PRIMARY KEY,
    body BLOB NOT NULL
);
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

# Columns added after the first release: added to an older database on open.
# `deaths`: gateway deaths the request was in flight at (status IN_PROGRESS in
# the store when the gateway starts); `idem_key`: the caller's idempotency key.
ADDED_COLUMNS = {
    "deaths": "INTEGER NOT NULL DEFAULT 0",
    "idem_key": "TEXT",
}
IDEM_INDEX = (
    "CREATE UNIQUE INDEX IF NOT EXISTS requests_idem ON requests(app, idem_key) "
    "WHERE idem_key IS NOT NULL"
)
# Free pages given back to the file system per compaction pass (4 KiB pages: 32 MiB),
# so one pass never holds the event loop for long.
COMPACT_PAGES = 8192
BLOB_SLICE = 1024 * 1024


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
    deaths: int = 0
    idem_key: str | None = None
    size: int = 0  # the body's length, also while the body itself stays on disk
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
    "started, completed, result_status, result_body, result_type, error, error_type, "
    "deaths, idem_key"
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
        # Incremental auto-vacuum lets `compact()` hand freed pages (bodies of
        # finished requests, pruned results) back to the disk. It must be set
        # before the first table exists; an older database is converted once.
        self._db.execute("PRAGMA auto_vacuum=INCREMENTAL")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={'FULL' if fsync else 'NORMAL'}")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(apps)")}
        if "secrets" not in columns:  # a store written before secrets were sealed
            self._db.execute("ALTER TABLE apps ADD COLUMN secrets TEXT NOT NULL DEFAULT ''")
        if self._db.execute("PRAGMA auto_vacuum").fetchone()[0] != 2:
            self._db.execute("VACUUM")
        have = {row[1] for row in self._db.execute("PRAGMA table_info(requests)")}
        for name, decl in ADDED_COLUMNS.items():
            if name not in have:
                self._db.execute(f"ALTER TABLE requests ADD COLUMN {name} {decl}")
        self._db.execute(IDEM_INDEX)

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
        """Record a new queued request; durable (against a process crash) once this returns.

        A large body goes to the `bodies` table, written in slices (SQLite's
        blob I/O into a `zeroblob`, which stays lazy only as a row's last
        column) rather than bound whole, which would copy it: storing a 60 MB
        body costs no second 60 MB of memory. One transaction either way.
        """
        size = len(req.body)
        streamed = size > BLOB_SLICE
        insert = (
            "INSERT INTO requests (id, app, path, method, body, content_type, no_retry, status, "
            "attempts, created, idem_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )
        values = (
            req.id,
            req.app,
            req.path,
            req.method,
            b"" if streamed else req.body,
            req.content_type,
            int(req.no_retry),
            req.status,
            req.attempts,
            req.created,
            req.idem_key,
        )
        extras = req.has_fal_extras
        if not streamed and not extras:
            self._db.execute(insert, values)
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            rowid = self._db.execute(insert, values).lastrowid
            assert rowid is not None
            if extras:
                self._save_fal(req)
            if streamed:
                view = memoryview(req.body)
                self._db.execute(
                    "INSERT INTO bodies (seq, body) VALUES (?, zeroblob(?))", (rowid, size)
                )
                with self._db.blobopen("bodies", "body", rowid) as blob:
                    for start in range(0, size, BLOB_SLICE):
                        blob.write(view[start : start + BLOB_SLICE])
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def start_attempt(self, req: StoredRequest) -> None:
        """Record an attempt before it is dispatched (committed when this returns).

        A gateway that dies while the attempt runs finds the request
        IN_PROGRESS, with the attempt counted, when it starts again: the
        attempt bound holds across restarts, and the death is counted.
        """
        self._db.execute(
            "UPDATE requests SET status = 'IN_PROGRESS', attempts = ?, started = ? WHERE id = ?",
            (req.attempts, req.started, req.id),
        )

    def requeue(self, req: StoredRequest) -> None:
        """Back to IN_QUEUE after an attempt that ended (a retry), or after a gateway death."""
        self._db.execute(
            "UPDATE requests SET status = 'IN_QUEUE', deaths = ? WHERE id = ?",
            (req.deaths, req.id),
        )

    def find_by_idempotency_key(self, app: str, key: str) -> str | None:
        """The id of `app`'s request submitted with idempotency `key`, while it is kept."""
        row = self._db.execute(
            "SELECT id FROM requests WHERE app = ? AND idem_key = ?", (app, key)
        ).fetchone()
        return str(row[0]) if row else None

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
        if req.size > BLOB_SLICE:  # its body is in `bodies` (one left by a crash here: pruned)
            self._db.execute(
                "DELETE FROM bodies WHERE seq = (SELECT seq FROM requests WHERE id = ?)", (req.id,)
            )

    def get_request(self, request_id: str) -> StoredRequest | None:
        row = self._db.execute(
            f"SELECT {_REQUEST_COLUMNS} FROM requests WHERE id = ?", (request_id,)
        ).fetchone()
        return self._with_fal(_request(row)) if row else None

    def open_requests(self) -> list[StoredRequest]:
        """Requests accepted but not completed, oldest first: what a restart must run.

        Without their bodies (`size` says how large each is): a restart with a
        full queue must not read every queued body into memory at once.
        """
        columns = _REQUEST_COLUMNS.replace("body,", "x'',", 1)
        rows = self._db.execute(
            f"SELECT {columns}, length(body) + coalesce((SELECT length(b.body) FROM bodies b "
            "WHERE b.seq = requests.seq), 0) FROM requests WHERE status != 'COMPLETED' ORDER BY seq"
        ).fetchall()
        out = []
        for row in rows:
            req = _request(row)
            req.size = row[-1] or 0
            out.append(self._with_fal(req))
        return out

    def get_body(self, request_id: str) -> bytes:
        """A queued request's body, read when it is dispatched."""
        row = self._db.execute(
            "SELECT coalesce(b.body, r.body) FROM requests r LEFT JOIN bodies b ON b.seq = r.seq "
            "WHERE r.id = ?",
            (request_id,),
        ).fetchone()
        return bytes(row[0]) if row else b""

    def prune_completed(self, older_than: float) -> int:
        """Forget results completed before `older_than` (epoch seconds)."""
        cur = self._db.execute(
            "DELETE FROM requests WHERE status = 'COMPLETED' AND completed < ?", (older_than,)
        )
        self._db.execute(
            "DELETE FROM bodies WHERE seq NOT IN "
            "(SELECT seq FROM requests WHERE status != 'COMPLETED')"
        )
        self._db.execute("DELETE FROM request_fal WHERE id NOT IN (SELECT id FROM requests)")
        self._db.execute(
            "DELETE FROM webhook_outbox WHERE state != 'pending' AND next_at < ?", (older_than,)
        )
        return cur.rowcount

    def compact(self, min_free_pages: int = 256) -> bool:
        """Give free pages back to the disk (a bounded pass); True when there was work.

        Without this the file only grows: a burst of large queued bodies would
        keep its size long after the requests finished and their results expired.
        """
        free = self._db.execute("PRAGMA freelist_count").fetchone()[0]
        if free < min_free_pages:
            return False
        # executescript steps the pragma to its end; execute() would free one page.
        self._db.executescript(f"PRAGMA incremental_vacuum({COMPACT_PAGES});")
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        return True

    def disk_bytes(self) -> int:
        """The database's size on disk, its write-ahead log included."""
        total = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(OSError):
                total += os.path.getsize(f"{self.path}{suffix}")
        return total

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
        deaths=row[17],
        idem_key=row[18],
    )
