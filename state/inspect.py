"""What `skyform state list|show|unlock` do, apart from printing.

Kept here, beside the backends, so the CLI only formats: every rule about
addresses and locks lives with the state.
"""

from __future__ import annotations

from typing import Any

from skyform.state.backend import StateBackend
from skyform.state.errors import StateError
from skyform.state.lock import LockInfo
from skyform.state.model import StateDocument
from skyform.suggest import did_you_mean


def list_addresses(doc: StateDocument) -> list[str]:
    """Every resource address in `doc`, sorted."""
    return sorted(doc.resources)


def show(doc: StateDocument, address: str | None = None) -> dict[str, Any]:
    """One resource (`address` given) or the whole document, as JSON-ready data."""
    if address is None:
        return doc.to_dict()
    if address not in doc.resources:
        if not doc.resources:
            raise StateError(f"no resource {address!r}: the state of stack {doc.stack!r} is empty")
        raise StateError(
            f"no resource {address!r} in the state of stack {doc.stack!r}"
            f"{did_you_mean(address, doc.resources)}"
        )
    return doc.resources[address]


def unlock(backend: StateBackend, lock_id: str) -> LockInfo:
    """Remove lock `lock_id` from `backend` (see each backend's `force_unlock`)."""
    if not lock_id.strip():
        raise StateError("a lock id is required (it is printed in the 'locked' error)")
    return backend.force_unlock(lock_id.strip())
