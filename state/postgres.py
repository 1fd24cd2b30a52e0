"""The `postgres` backend: one row per stack in a table it creates on first use.

Locking uses a session-level advisory lock per stack. PostgreSQL releases it
the moment the holder's connection ends, however the holder died, so a killed
CI job never leaves the stack locked. Who holds it is recorded in a lock
table, checked against `pg_locks` so a row left by a dead holder is ignored.

A live but stuck holder (a hung CI job) is what `force_unlock` is for: since an
advisory lock can only be released by its own session, unlocking ends that
session with `pg_terminate_backend`; its open transaction, if any, rolls back,
so the stored state stays whole.

Every read and write is one transaction; a write re-reads the row `FOR
UPDATE` before replacing it, so the serial and lineage checks and the update
are atomic.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from skyform.state.backend import GRACE, StateBackend
from skyform.state.errors import StateError
from skyform.state.lock import LockInfo, locked_error, wait_for
from skyform.state.model import StateDocument

if TYPE_CHECKING:
    import psycopg

STATES_TABLE = "skyform_states"
LOCKS_TABLE = "skyform_state_locks"
SCHEMA_SETUP_KEY = 0x736B79666F726D  # "skyform": serialises first-use table creation
CONNECT_TIMEOUT = 10
SERVER_KEEPALIVE = {
    "tcp_keepalives_idle": 30,
    "tcp_keepalives_interval": 10,
    "tcp_keepalives_count": 3,
}
"""Per-session: the server notices a holder whose whole machine vanished (a CI VM torn
down, a network cut) within about a minute, instead of the OS default of two hours,
and frees its lock."""
TERMINATE_WAIT = 10.0

LOCK_HINT = (
    "Wait for it to finish, pass --lock-timeout SECS to wait, or, if that run is stuck, "
    "end its session with `skyform state unlock LOCK_ID`."
)


def redact_url(url: str) -> str:
    """`url` with any password replaced by `***`, fit for messages and logs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        if ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":***"
        netloc = f"{userinfo}@{host}"
    query = urlencode(
        [(k, "***" if k == "password" else v) for k, v in parse_qsl(parts.query)], safe="/*"
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def advisory_key(schema: str | None, stack: str) -> int:
    """A stable signed 64-bit advisory lock key for one stack."""
    digest = hashlib.sha256(f"skyform-state:{schema or ''}:{stack}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class PostgresBackend(StateBackend):
    kind = "postgres"

    def __init__(self, url: str, stack: str, schema: str | None = None) -> None:
        super().__init__(stack)
        if not url.startswith(("postgresql://", "postgres://")):
            raise StateError(
                f"postgres state backend: url must start with postgresql://, got {redact_url(url)!r}"
            )
        self.url = url
        self.schema = schema
        self.key = advisory_key(schema, stack)
        self._conn: psycopg.Connection[Any] | None = None

    @property
    def location(self) -> str:
        where = f"{self.schema}.{STATES_TABLE}" if self.schema else STATES_TABLE
        return f"{redact_url(self.url)} ({where}, stack {self.stack})"

    # -- connection ----------------------------------------------------------------

    def _table(self, name: str) -> Any:
        from psycopg import sql

        if self.schema:
            return sql.Identifier(self.schema, name)
        return sql.Identifier(name)

    @contextlib.contextmanager
    def _db(self, action: str) -> Iterator[psycopg.Connection[Any]]:
        """The connection, with database errors turned into one-line StateErrors."""
        import psycopg

        conn = self._connection()
        try:
            yield conn
        except psycopg.Error as exc:
            lost = conn.closed or isinstance(exc, psycopg.OperationalError)
            detail = _first_line(exc)
            if lost and self._held is not None:
                raise StateError(
                    f"lost the connection to the postgres state backend at "
                    f"{redact_url(self.url)} while {action}, and with it the lock: {detail}"
                ) from None
            raise StateError(
                f"postgres state backend at {redact_url(self.url)}: {action} failed: {detail}"
            ) from None

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        if self._held is not None:
            raise StateError(
                f"lost the connection to the postgres state backend at {redact_url(self.url)}, "
                "and with it the lock"
            )
        import psycopg
        from psycopg import sql
        from psycopg.conninfo import conninfo_to_dict

        try:
            given = conninfo_to_dict(self.url)
        except psycopg.Error as exc:
            raise StateError(
                f"invalid postgres URL {redact_url(self.url)}: {_first_line(exc)}"
            ) from None
        extra: dict[str, Any] = {"autocommit": True}
        if "connect_timeout" not in given:
            extra["connect_timeout"] = CONNECT_TIMEOUT
        if "application_name" not in given:
            extra["application_name"] = f"skyform:{self.stack}"
        if "keepalives_idle" not in given:  # and we notice a vanished server
            extra |= {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10}
        try:
            conn = psycopg.connect(self.url, **extra)
        except psycopg.Error as exc:
            raise StateError(
                f"cannot reach the postgres state backend at {redact_url(self.url)}: "
                f"{_first_line(exc)}"
            ) from None
        self._conn = conn
        try:
            for name, value in SERVER_KEEPALIVE.items():
                conn.execute(
                    sql.SQL("SET {} = {}").format(sql.Identifier(name), sql.Literal(value))
                )
            self._create_schema(conn)
        except psycopg.Error as exc:
            self._conn = None
            conn.close()
            raise StateError(
                f"postgres state backend at {redact_url(self.url)}: cannot create its tables: "
                f"{_first_line(exc)}"
            ) from None
        return conn

    def _create_schema(self, conn: psycopg.Connection[Any]) -> None:
        """Create the tables on first use; concurrent first users wait for each other."""
        from psycopg import sql

        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_SETUP_KEY,))
            if self.schema:
                conn.execute(
                    sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema))
                )
            conn.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} ("
                    " stack text PRIMARY KEY,"
                    " lineage text NOT NULL,"
                    " serial bigint NOT NULL,"
                    " data text NOT NULL,"
                    " updated_at timestamptz NOT NULL DEFAULT now())"
                ).format(self._table(STATES_TABLE))
            )
            conn.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} ("
                    " stack text PRIMARY KEY,"
                    " lock_id text NOT NULL,"
                    " info text NOT NULL,"
                    " backend_pid integer NOT NULL)"
                ).format(self._table(LOCKS_TABLE))
            )

    def close(self) -> None:
        super().close()
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    # -- lock ----------------------------------------------------------------------

    def _acquire(self, info: LockInfo, timeout: float) -> None:
        from psycopg import sql

        with self._db("taking the lock") as conn:

            def attempt() -> bool | None:
                row = conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()
                return True if row and row[0] else None

            def give_up(_: float) -> Exception:
                return locked_error(self.stack, self._holder(), timeout, LOCK_HINT)

            wait_for(attempt, max(timeout, GRACE), give_up)
            try:
                conn.execute(
                    sql.SQL(
                        "INSERT INTO {} (stack, lock_id, info, backend_pid)"
                        " VALUES (%s, %s, %s, pg_backend_pid())"
                        " ON CONFLICT (stack) DO UPDATE SET lock_id = EXCLUDED.lock_id,"
                        " info = EXCLUDED.info, backend_pid = EXCLUDED.backend_pid"
                    ).format(self._table(LOCKS_TABLE)),
                    (self.stack, info.id, json.dumps(info.to_dict())),
                )
            except BaseException:
                with contextlib.suppress(Exception):
                    conn.execute("SELECT pg_advisory_unlock(%s)", (self.key,))
                raise

    def _release(self, info: LockInfo) -> None:
        from psycopg import sql

        conn = self._conn
        if conn is None or conn.closed:
            return  # the server dropped the session, and the lock with it
        with contextlib.suppress(Exception):
            conn.execute(
                sql.SQL("DELETE FROM {} WHERE stack = %s AND lock_id = %s").format(
                    self._table(LOCKS_TABLE)
                ),
                (self.stack, info.id),
            )
        with contextlib.suppress(Exception):
            conn.execute("SELECT pg_advisory_unlock(%s)", (self.key,))

    def _lock_row(self) -> tuple[LockInfo | None, int | None, bool]:
        """(recorded info, its backend pid, whether that backend holds the lock now)."""
        from psycopg import sql

        with self._db("reading the lock") as conn:
            row = conn.execute(
                sql.SQL("SELECT info, backend_pid FROM {} WHERE stack = %s").format(
                    self._table(LOCKS_TABLE)
                ),
                (self.stack,),
            ).fetchone()
            if row is None:
                return None, None, False
            try:
                info = LockInfo.from_dict(json.loads(row[0]))
            except ValueError:
                info = None
            return info, row[1], self._pid_holds_lock(conn, row[1])

    def _pid_holds_lock(self, conn: psycopg.Connection[Any], pid: int) -> bool:
        unsigned = self.key & 0xFFFFFFFFFFFFFFFF
        found = conn.execute(
            "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND pid = %s AND classid = %s::bigint::oid AND objid = %s::bigint::oid"
            " AND objsubid = 1",
            (pid, unsigned >> 32, unsigned & 0xFFFFFFFF),
        ).fetchone()
        return found is not None

    def _holder(self) -> LockInfo | None:
        info, _, live = self._lock_row()
        return info if live else None

    def force_unlock(self, lock_id: str) -> LockInfo:
        """Remove lock `lock_id`: clear a dead holder's row, or end a live holder's session."""
        from psycopg import sql

        if self._held is not None:
            raise StateError(f"this process holds lock {self._held.id}; it is released on exit")
        info, pid, live = self._lock_row()
        if info is None or info.id != lock_id:
            current = info if live else None
            what = f"it is locked with id {current.id}" if current else "it is not locked"
            raise StateError(f"no lock {lock_id} on the state of stack {self.stack!r}: {what}")
        with self._db("unlocking") as conn:
            if live and pid is not None:
                row = conn.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()
                if not row or not row[0]:
                    raise StateError(
                        f"could not end the session holding lock {lock_id} (backend pid {pid})"
                    )
                deadline = time.monotonic() + TERMINATE_WAIT
                while self._pid_holds_lock(conn, pid):
                    if time.monotonic() >= deadline:
                        raise StateError(
                            f"the session holding lock {lock_id} (backend pid {pid}) did not end"
                        )
                    time.sleep(0.05)
            conn.execute(
                sql.SQL("DELETE FROM {} WHERE stack = %s AND lock_id = %s").format(
                    self._table(LOCKS_TABLE)
                ),
                (self.stack, lock_id),
            )
        return info

    # -- document ------------------------------------------------------------------

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        with self._db("writing the state") as conn, conn.transaction():
            yield

    def _load(self, for_update: bool = False) -> StateDocument | None:
        from psycopg import sql

        query = sql.SQL(
            "SELECT data FROM {} WHERE stack = %s" + (" FOR UPDATE" if for_update else "")
        )
        with self._db("reading the state") as conn:
            row = conn.execute(query.format(self._table(STATES_TABLE)), (self.stack,)).fetchone()
        if row is None:
            return None
        source = f"the state row of stack {self.stack!r} at {self.location}"
        return self._check_stack(StateDocument.from_json(row[0], source), source)

    def _store(self, doc: StateDocument, text: str, previous: StateDocument | None) -> None:
        from psycopg import sql

        with self._db("writing the state") as conn:
            conn.execute(
                sql.SQL(
                    "INSERT INTO {} (stack, lineage, serial, data) VALUES (%s, %s, %s, %s)"
                    " ON CONFLICT (stack) DO UPDATE SET lineage = EXCLUDED.lineage,"
                    " serial = EXCLUDED.serial, data = EXCLUDED.data, updated_at = now()"
                ).format(self._table(STATES_TABLE)),
                (self.stack, doc.lineage, doc.serial, text),
            )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
