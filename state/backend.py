"""The rules every state backend keeps, written once.

A backend only knows how to take and release its lock, and how to load and
store one document. This base class turns those into the contract callers
rely on: `lock()` as a context manager naming the holder when refused,
`read()` that always returns a document, and `write()` that refuses another
lineage or an older serial, bumps the serial only when something changed, and
never writes while someone else holds the lock.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterator

from skyform.state.errors import StateError
from skyform.state.lock import LockInfo
from skyform.state.model import (
    StateDocument,
    check_outputs,
    find_secret_values,
    validate_resources,
)
from skyform.workdir import KEY_ENV_NAMES

ALWAYS_SECRET = frozenset(KEY_ENV_NAMES.values())
"""The stack's own keys and tokens: never in state, whether or not a resource names them."""

GRACE = 0.25
"""Even a timeout of 0 retries this long: a holder that has just taken the lock
may not have written who it is yet, and a `state` command may be peeking."""


class StateBackend(ABC):
    """Where one stack's state lives, and its lock."""

    kind: str = ""

    def __init__(self, stack: str) -> None:
        self.stack = stack
        self._held: LockInfo | None = None

    # -- what each backend provides ------------------------------------------------

    @property
    @abstractmethod
    def location(self) -> str:
        """Where the state is, for messages (a path, a redacted URL)."""

    @abstractmethod
    def _acquire(self, info: LockInfo, timeout: float) -> None:
        """Take the lock as `info`, waiting up to `timeout`; raise StateLockedError."""

    @abstractmethod
    def _release(self, info: LockInfo) -> None:
        """Give the lock back; must not raise when the holder's resources are already gone."""

    @abstractmethod
    def _holder(self) -> LockInfo | None:
        """Lock info of a *live* holder (stale info of a dead one is ignored)."""

    @abstractmethod
    def _load(self, for_update: bool = False) -> StateDocument | None:
        """The stored document, None when there is none; StateError when unreadable."""

    @abstractmethod
    def _store(self, doc: StateDocument, text: str, previous: StateDocument | None) -> None:
        """Replace the stored document atomically: afterwards it is either all new or all old."""

    @abstractmethod
    def force_unlock(self, lock_id: str) -> LockInfo:
        """Remove the lock `lock_id` (`skyform state unlock`); returns what was removed."""

    def _transaction(self) -> contextlib.AbstractContextManager[None]:
        """Scope in which `_load(for_update=True)` and `_store` happen as one."""
        return contextlib.nullcontext()

    def close(self) -> None:
        """Release the lock, if held, and any connection."""
        if self._held is not None:
            info, self._held = self._held, None
            self._release(info)

    # -- the contract --------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, operation: str = "apply", timeout: float = 0.0) -> Iterator[LockInfo]:
        """Hold the stack's lock for the block; `timeout` seconds to wait (0: fail at once)."""
        if self._held is not None:
            raise StateError(
                f"state of stack {self.stack!r} is already locked by this process "
                f"for {self._held.operation!r}"
            )
        if not timeout >= 0:
            raise StateError(f"lock timeout must be 0 or more seconds, not {timeout:g}")
        info = LockInfo.new(operation, self.location)
        self._acquire(info, timeout)
        self._held = info
        try:
            yield info
        finally:
            self._held = None
            self._release(info)

    @property
    def held(self) -> LockInfo | None:
        """The lock this backend object holds right now, if any."""
        return self._held

    def current_lock(self) -> LockInfo | None:
        """Who holds the lock now (this process included), None when nobody does."""
        return self._held or self._holder()

    def read(self) -> StateDocument:
        """The stored state, or a fresh one (new lineage, serial 0) when none is stored."""
        return self._load() or StateDocument.new(self.stack)

    def write(self, doc: StateDocument) -> StateDocument:
        """Store `doc` and return what is stored now.

        Refused (StateError, nothing written) when the stored state has another
        lineage or a newer serial than `doc`, when `doc` carries a secret's
        value, or (StateLockedError) when another process holds the lock. When
        `doc`'s content equals what is stored, nothing is written and the
        serial stays.
        """
        if doc.stack != self.stack:
            raise StateError(
                f"refusing to write state of stack {doc.stack!r} into the state of {self.stack!r}"
            )
        names = validate_resources(doc.resources)
        check_outputs(doc.outputs)
        guard = (
            contextlib.nullcontext() if self._held is not None else self.lock("write", timeout=0)
        )
        with guard, self._transaction():
            stored = self._load(for_update=True)
            if stored is None:
                serial = doc.serial + 1
            else:
                if stored.lineage != doc.lineage:
                    raise StateError(
                        f"refusing to write state of stack {self.stack!r}: its lineage "
                        f"{doc.lineage} differs from the stored lineage {stored.lineage} "
                        f"({self.location}); it belongs to another state"
                    )
                if doc.serial < stored.serial:
                    raise StateError(
                        f"refusing to write state of stack {self.stack!r}: it was read at serial "
                        f"{doc.serial} but the stored state is at serial {stored.serial}; "
                        "someone else changed it since: read it again and retry"
                    )
                if doc.same_content(stored):
                    return stored
                serial = max(doc.serial, stored.serial) + 1
            new = doc.with_serial(serial)
            text = new.to_json()
            leaked = find_secret_values(text, names | ALWAYS_SECRET)
            if leaked:
                raise StateError(
                    f"refusing to write state of stack {self.stack!r}: it contains the value of "
                    f"secret {leaked[0]}; state keeps secret names only"
                )
            self._store(new, text, stored)
            return new

    def _check_stack(self, doc: StateDocument, source: str) -> StateDocument:
        if doc.stack != self.stack:
            raise StateError(f"{source} holds stack {doc.stack!r}, not {self.stack!r}")
        return doc

    def __enter__(self) -> StateBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.location}>"
