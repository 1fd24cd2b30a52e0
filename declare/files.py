"""Writing a file so that a reader sees the old or the new contents, never a mix."""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path


def temp_name(path: Path) -> Path:
    """A fresh hidden temp file beside `path` (`.NAME.<random>.tmp`)."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")


def write_atomic(
    path: Path | str, data: str | bytes, *, mode: int = 0o666, fsync: bool = False
) -> None:
    """Write `data` to a temp file beside `path`, then rename it over `path`.

    The temp file is created with `mode` (less the umask), so a private file
    is never readable by others, not even for a moment. `fsync` makes the new
    contents durable before the rename, and the rename after it. On failure
    the temp file is removed and the OSError propagates.
    """
    path = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    tmp = temp_name(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if fsync:
        fsync_dir(path.parent)


def private_dir(path: Path | str) -> Path:
    """`path` as a directory only its owner may enter (0700), created with its parents.

    Why: `.skyform/` holds keys, state, bundles (code) and logs; other users of
    the machine, and runners that run as another user, must not read them.
    Missing parents are made 0700 too; an existing `path` is tightened.
    """
    path = Path(path)
    for folder in [*reversed(path.parents), path]:
        if not folder.exists():
            with contextlib.suppress(FileExistsError):
                folder.mkdir(mode=0o700)
    if (path.stat().st_mode & 0o777) != 0o700:
        os.chmod(path, 0o700)
    return path


def fsync_dir(directory: Path) -> None:
    """Make a rename in `directory` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
