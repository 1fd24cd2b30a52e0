"""Finding, checking, stopping and probing processes on this machine, through psutil.

Why psutil and not `/proc`: the same calls work on Linux and macOS (a laptop
running the local provider has no `/proc`), and a `psutil.Process` remembers
the start time of the process it was made for, so a pid the kernel hands to
another process while a stop is under way is never signalled by mistake.

A zombie counts as gone everywhere here: it no longer runs and only waits to
be reaped (our own zombie children are reaped on sight).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Callable, Sequence

import psutil

# How often a stop checks whether the process is gone.
_POLL_S = 0.05
# How long a stop waits after SIGKILL (the kernel needs a moment to tear a process down).
KILL_WAIT_S = 5.0
# States of a process that no longer runs.
_GONE = (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)


def command_output(cmd: Sequence[str], timeout: float = 30) -> str | None:
    """`cmd`'s standard output, or None when it cannot run, fails or outlives `timeout`.

    For probes whose failure only means "not here" (no `nvidia-smi`, an
    interpreter that does not start): the caller falls back, it does not fail.
    """
    try:
        result = subprocess.run(
            list(cmd), capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout if result.returncode == 0 else None


def pid_alive(pid: int | None) -> bool:
    """True when `pid` runs and is not a zombie (reaping it if it is our zombie child)."""
    if not pid:
        return False
    try:
        process = psutil.Process(pid)
    except (psutil.NoSuchProcess, ValueError):
        return False
    return _running(process)


def command_lines() -> list[tuple[int, list[str]]]:
    """(pid, argv) of every live process whose command line can be read, this one included.

    Processes whose command line cannot be read (another user's, on macOS)
    are left out: they are not ours to find.
    """
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        argv = process.info["cmdline"]
        if argv and process.info["status"] not in _GONE:
            found.append((process.pid, list(argv)))
    return found


def find(match: Callable[[Sequence[str]], bool]) -> list[int]:
    """Pids of live processes, other than this one, whose argv satisfies `match`."""
    me = os.getpid()
    return sorted(pid for pid, argv in command_lines() if pid != me and match(argv))


def terminate(pid: int, grace: float, alive: Callable[[], bool] | None = None) -> None:
    """SIGTERM `pid`; SIGKILL it when still alive after `grace` seconds; then wait up to 5 s.

    `alive` says whether it still runs (default: `pid_alive`); a caller that
    holds the child's `Popen` passes `proc.poll() is None`, which also reaps it.
    """
    try:
        process = psutil.Process(pid)
    except (psutil.NoSuchProcess, ValueError):
        return
    still = alive if alive is not None else lambda: _running(process)
    for send, wait in ((process.terminate, grace), (process.kill, KILL_WAIT_S)):
        try:
            send()
        except psutil.NoSuchProcess:
            return
        deadline = time.monotonic() + wait
        while still():
            if time.monotonic() >= deadline:
                break
            time.sleep(_POLL_S)
        else:
            return


def _running(process: psutil.Process) -> bool:
    try:
        if not process.is_running():  # gone, or its pid now belongs to another process
            return False
        if process.status() not in _GONE:
            return True
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True  # it exists; we may just not read it
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(process.pid, os.WNOHANG)  # our zombie child: reap it
    return False
