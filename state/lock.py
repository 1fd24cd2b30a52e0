"""Lock info and the waiting policy shared by every backend.

A lock is only as useful as the message a blocked user gets, so every lock
carries `{id, operation, who, created}` (Terraform's shape) and a blocked
caller's error names all four. The lock itself is always something the OS or
the database releases when the holder dies (a `flock`, a session advisory
lock): a killed CI job cannot leave a stack locked.
"""

from __future__ import annotations

import getpass
import os
import random
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from skyform.state.errors import StateLockedError

T = TypeVar("T")

FIRST_DELAY = 0.05
MAX_DELAY = 1.0


@dataclass(frozen=True)
class LockInfo:
    """Who holds a stack's lock, and for what."""

    id: str
    operation: str
    who: str
    created: str  # ISO 8601, UTC
    pid: int | None = None
    path: str = ""  # where the state lives, for messages

    @classmethod
    def new(cls, operation: str, path: str = "") -> LockInfo:
        return cls(
            id=str(uuid.uuid4()),
            operation=operation,
            who=_who(),
            created=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            pid=os.getpid(),
            path=path,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: Any) -> LockInfo | None:
        """The lock info in `raw`, or None when it is not lock info (torn, foreign)."""
        if not isinstance(raw, dict):
            return None
        try:
            return cls(
                id=str(raw["id"]),
                operation=str(raw.get("operation", "")),
                who=str(raw.get("who", "")),
                created=str(raw.get("created", "")),
                pid=raw["pid"] if isinstance(raw.get("pid"), int) else None,
                path=str(raw.get("path", "")),
            )
        except KeyError:
            return None

    def describe(self) -> str:
        pid = f" (pid {self.pid})" if self.pid is not None else ""
        return f"held by {self.who}{pid} for {self.operation!r} since {self.created}, lock id {self.id}"


def _who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def locked_error(stack: str, info: LockInfo | None, waited: float, hint: str) -> StateLockedError:
    """The one-line error for a lock someone else holds."""
    holder = info.describe() if info else "held by another process (it did not say who)"
    waited_text = f" after waiting {waited:g}s" if waited > 0 else ""
    if info is not None:
        hint = hint.replace("LOCK_ID", info.id)
    return StateLockedError(
        f"state of stack {stack!r} is locked{waited_text}: {holder}. {hint}", info
    )


def wait_for(
    attempt: Callable[[], T | None], timeout: float, on_timeout: Callable[[float], Exception]
) -> T:
    """Call `attempt` until it returns something, backing off up to `timeout` seconds.

    Delays double from 50 ms to 1 s with jitter, so many waiting CI jobs do
    not poll in step. Backends pass at least a short grace period even for a
    user's timeout of 0 (see `backend.GRACE`); `StateBackend.lock` refuses a negative one.
    """
    deadline = time.monotonic() + timeout
    delay = FIRST_DELAY
    while True:
        got = attempt()
        if got is not None:
            return got
        now = time.monotonic()
        if now >= deadline:
            raise on_timeout(timeout)
        time.sleep(min(delay * random.uniform(0.8, 1.2), max(deadline - now, 0.0)))
        delay = min(delay * 2, MAX_DELAY)
