"""The `local` backend: `.skyform/<stack>.state.json` beside the stack file.

Crash safety: a write goes to a temp file that is fsynced and then renamed
over the state, so an interrupt or a power cut leaves either the old or the
new state, never half of one. The previous version stays as `.backup` (a hard
link to the old file, so keeping it costs no copy).

Locking: `flock` on `.skyform/<stack>.state.lock`. The kernel drops a flock
when its holder dies, however it dies, so a killed CI job cannot leave the
stack locked. While held, `<stack>.state.lock.info` says who holds it; that
file is only a label: if its writer was killed, the free flock shows it stale.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
from pathlib import Path

from skyform.files import private_dir, temp_name, write_atomic
from skyform.state.backend import GRACE, StateBackend
from skyform.state.errors import StateError
from skyform.state.lock import LockInfo, locked_error, wait_for
from skyform.state.model import StateDocument
from skyform.workdir import SKYFORM_DIR

LOCK_HINT = "Wait for it to finish, or pass --lock-timeout SECS to wait."


class LocalBackend(StateBackend):
    kind = "local"

    def __init__(self, directory: Path, stack: str) -> None:
        super().__init__(stack)
        self.directory = Path(directory)
        self.path = self.directory / f"{stack}.state.json"
        self.backup_path = self.directory / f"{stack}.state.json.backup"
        self.lock_path = self.directory / f"{stack}.state.lock"
        self.info_path = self.directory / f"{stack}.state.lock.info"
        self._fd: int | None = None

    @property
    def location(self) -> str:
        return str(self.path)

    # -- lock ----------------------------------------------------------------------

    def _try_flock(self, mode: int = fcntl.LOCK_EX) -> int | None:
        """An fd holding the flock in `mode`, or None when another holder has it."""
        self._ensure_dir()
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StateError(f"cannot open lock file {self.lock_path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return None
            raise StateError(f"cannot lock {self.lock_path}: {exc.strerror}") from None
        return fd

    def _acquire(self, info: LockInfo, timeout: float) -> None:
        def give_up(_: float) -> Exception:
            return locked_error(self.stack, self._holder(), timeout, LOCK_HINT)

        fd = wait_for(self._try_flock, max(timeout, GRACE), give_up)
        try:
            write_atomic(self.info_path, json.dumps(info.to_dict(), indent=2) + "\n", mode=0o600)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def _release(self, info: LockInfo) -> None:
        try:
            if _read_info(self.info_path) == info:
                with contextlib.suppress(FileNotFoundError):
                    self.info_path.unlink()
        finally:
            if self._fd is not None:
                os.close(self._fd)  # closing the only fd drops the flock
                self._fd = None

    def _holder(self) -> LockInfo | None:
        info = _read_info(self.info_path)
        if info is None:
            return None
        probe = self._try_flock(fcntl.LOCK_SH)
        if probe is None:
            return info
        os.close(probe)  # nobody holds it: the info is left over from a killed holder
        return None

    def force_unlock(self, lock_id: str) -> LockInfo:
        """Clear a lock label left by a dead holder; a live holder cannot be unlocked.

        A flock belongs to its process until that process exits, so for a
        live holder this names it and says to stop it.
        """
        if self._held is not None:
            raise StateError(f"this process holds lock {self._held.id}; it is released on exit")
        info = _read_info(self.info_path)
        if info is None or info.id != lock_id:
            current = self._holder()
            what = f"it is locked with id {current.id}" if current else "it is not locked"
            raise StateError(f"no lock {lock_id} on the state of stack {self.stack!r}: {what}")
        fd = self._try_flock()
        if fd is None:
            pid = f"pid {info.pid} on " if info.pid is not None else ""
            raise StateError(
                f"lock {lock_id} is held by a live process ({pid}{info.who}, {info.operation!r}); "
                "a local lock is released when that process exits: stop it instead"
            )
        try:
            with contextlib.suppress(FileNotFoundError):
                self.info_path.unlink()
        finally:
            os.close(fd)
        return info

    # -- document ------------------------------------------------------------------

    def _load(self, for_update: bool = False) -> StateDocument | None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateError(f"cannot read state file {self.path}: {exc.strerror}") from None
        source = f"state file {self.path}"
        if self.backup_path.exists():
            source += f" (previous version in {self.backup_path.name})"
        return self._check_stack(StateDocument.from_json(data, source), f"state file {self.path}")

    def _store(self, doc: StateDocument, text: str, previous: StateDocument | None) -> None:
        self._ensure_dir()
        self._remove_stale_temps()
        try:
            if previous is not None:
                _keep_backup(self.path, self.backup_path)
            write_atomic(self.path, text, mode=0o600, fsync=True)
        except OSError as exc:
            raise StateError(
                f"cannot write state file {self.path}: {exc.strerror or exc}; "
                "the previous state is unchanged"
            ) from None

    def _ensure_dir(self) -> None:
        try:
            private_dir(self.directory)  # state, backups and lock info: the owner's only
        except OSError as exc:
            raise StateError(f"cannot create {self.directory}: {exc.strerror}") from None

    def _remove_stale_temps(self) -> None:
        """Temp files a killed writer left behind (we hold the lock: none is in use)."""
        for stale in self.directory.glob(f".{self.path.name}*.tmp"):
            with contextlib.suppress(OSError):
                stale.unlink()


def default_directory(workdir: Path) -> Path:
    return Path(workdir) / SKYFORM_DIR


def _read_info(path: Path) -> LockInfo | None:
    try:
        return LockInfo.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return None


def _keep_backup(path: Path, backup: Path) -> None:
    """Make `backup` the current contents of `path`, atomically (a hard link when possible)."""
    if not path.exists():
        return
    tmp = temp_name(backup)
    try:
        try:
            os.link(path, tmp)
        except OSError:  # a filesystem without hard links: copy instead
            write_atomic(tmp, path.read_bytes(), mode=0o600, fsync=True)
        os.replace(tmp, backup)
        # When `backup` already was this very file (a writer killed between keeping the
        # backup and replacing the state), rename(2) does nothing and leaves `tmp`.
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
