"""Credentials handed to a child process on a pipe, never through its environment.

Why: a process's initial environment stays readable in `/proc/<pid>/environ`
for as long as it runs, by anyone who may trace it (the same user, root). Keys,
tokens and secret values that travel in the environment therefore leak to
every other process of that user, app code included. Instead the parent writes
one JSON object on the child's stdin and closes it; the child reads it to EOF
before it does anything else (`read_credentials`) and stdin becomes /dev/null.
Values a child then puts into `os.environ` for its own use (an app's secrets)
live on its heap, not in the kernel's copy of its start-up environment.

`harden_process` makes the calling process non-dumpable: its `/proc/<pid>/`
files (environ, mem, fd) become root's and it cannot be ptraced, so another
process of the same user cannot read what it holds in memory.

It sits at the top of `skyform`, not in the runtime: the writer is a provider
(`send_credentials`, from `skyform.providers.local`) and the readers are the
runner and the gateway it starts, and providers never import the runtime.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import subprocess
from typing import Any

from skyform.errors import SkyformError

CREDENTIALS_FLAG = "--credentials-fd"
_PR_SET_DUMPABLE = 4
_MAX_BYTES = 16 * 1024 * 1024


def read_credentials(fd: int) -> dict[str, Any]:
    """The JSON object a parent wrote on `fd`, read to EOF; `fd` is then closed.

    When `fd` is stdin, stdin is re-pointed at /dev/null so that nothing later
    (app code) reads from the pipe.
    """
    chunks: list[bytes] = []
    size = 0
    try:
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            size += len(chunk)
            if size > _MAX_BYTES:
                raise SkyformError(f"credentials on fd {fd} exceed {_MAX_BYTES} bytes")
            chunks.append(chunk)
    except OSError as exc:
        raise SkyformError(f"cannot read credentials from fd {fd}: {exc.strerror}") from None
    finally:
        _close(fd)
    try:
        data = json.loads(b"".join(chunks) or b"null")
    except ValueError:
        raise SkyformError(f"credentials on fd {fd} are not JSON") from None
    if not isinstance(data, dict):
        raise SkyformError(f"credentials on fd {fd} are not a JSON object")
    return data


def _close(fd: int) -> None:
    if fd == 0:
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
    else:
        with contextlib.suppress(OSError):
            os.close(fd)


def send_credentials(proc: subprocess.Popen[bytes], credentials: dict[str, Any]) -> None:
    """Write `credentials` on the stdin pipe of `proc` (opened with stdin=PIPE) and close it.

    A child that died before reading them is not an error here: the caller
    sees it exit and reports its log.
    """
    assert proc.stdin is not None
    with contextlib.suppress(BrokenPipeError, OSError):
        proc.stdin.write(json.dumps(credentials).encode())
    with contextlib.suppress(BrokenPipeError, OSError):
        proc.stdin.close()


def harden_process() -> None:
    """Make this process non-dumpable (Linux): its memory and environ are closed to its peers."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)
