"""Processes and ports a test starts: find them, check them, and make sure none outlives it.

Everything reads `/proc` directly (no psutil): a zombie counts as gone, since
it no longer runs and only waits to be reaped.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from pathlib import Path

# Gateways started by tests carry this variable; runners inherit it from their gateway.
TAG_VAR = "SKYFORM_GATEWAY_TEST_TAG"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_free(port: int) -> bool:
    """Whether a server could bind `port` on 127.0.0.1 now (nothing holds it any more)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _state(stat: str) -> str:
    """The one-letter state in a `/proc/PID/stat` line (the command may hold spaces and parens)."""
    return stat.rsplit(")", 1)[1].split()[0]


def pid_alive(pid: int) -> bool:
    """Whether `pid` exists and is not a zombie."""
    try:
        state = _state(Path(f"/proc/{pid}/stat").read_text())
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def processes_under(root: Path) -> list[tuple[int, str]]:
    """Live skyform runtime processes (gateways, runners) whose command line mentions `root`."""
    target = str(root)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = _state((entry / "stat").read_text())
        except (OSError, IndexError):
            continue
        if target in cmdline and "skyform.runtime" in cmdline and state not in ("Z", "X"):
            found.append((int(entry.name), cmdline.strip()))
    return found


def kill_all_under(root: Path) -> None:
    """Last-resort cleanup, also for a test that failed half-way: nothing it started outlives it."""
    for pid, _cmd in processes_under(root):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def descendants(pid: int) -> set[int]:
    """Every live process below `pid` in the process tree."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] in ("Z", "X"):
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    out: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


def tagged_pids(tag: str) -> list[int]:
    """Processes of this user whose environment carries `TAG_VAR=tag`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if f"{TAG_VAR}={tag}".encode() in environ.split(b"\0") and ") Z" not in stat:
            found.append(int(entry.name))
    return found


def assert_none_left(tag: str, what: str) -> None:
    """Wait a little for tagged processes to end; kill and report any that remain."""
    deadline = time.monotonic() + 15
    while tagged_pids(tag) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = tagged_pids(tag)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"processes left running after {what}: {left}"
