"""The errors a state backend raises: each one a single line the user can act on."""

from __future__ import annotations

from typing import TYPE_CHECKING

from skyform.errors import SkyformError

if TYPE_CHECKING:
    from skyform.state.lock import LockInfo


class StateError(SkyformError):
    """The state could not be read, written or unlocked; nothing stored was changed."""


class StateLockedError(StateError):
    """Another process holds the stack's lock; `info` names it when it could be read."""

    def __init__(self, message: str, info: LockInfo | None = None) -> None:
        super().__init__(message)
        self.info = info
