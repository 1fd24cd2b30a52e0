"""Helpers for the CI and install tests: fresh copies of example projects, free
ports, and a last-resort sweep of processes a failed test left behind."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fresh_checkout(example: str, dest: Path, *, port: int) -> Path:
    """A copy of `examples/<example>` as a fresh clone has it: no `.skyform/`, no caches.

    The gateway's port becomes `port`, so parallel tests never compete for 8765.
    """
    shutil.copytree(
        EXAMPLES / example,
        dest,
        ignore=shutil.ignore_patterns(".skyform", "__pycache__", ".github"),
    )
    stackfile = dest / "skyform.yaml"
    text, count = re.subn(r"port: \d+", f"port: {port}", stackfile.read_text())
    assert count == 1, f"{stackfile}: expected one gateway port"
    stackfile.write_text(text)
    return dest


def processes_under(root: Path) -> list[int]:
    """Live skyform runtime processes (gateways, runners) whose command line mentions `root`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if str(root) in cmdline and "skyform.runtime" in cmdline and state not in ("Z", "X"):
            found.append(int(entry.name))
    return found


def kill_all_under(root: Path) -> None:
    """Nothing a test started may outlive it, even when the test failed half-way."""
    for pid in processes_under(root):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
