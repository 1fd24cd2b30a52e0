"""`skyform.providers.processes`: finding, checking and stopping processes through psutil.

Real processes throughout: a zombie child counts as gone (and is reaped), the
command-line search finds exactly the marked processes, and a stop sends
SIGTERM first and SIGKILL only to a process that ignores it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.waiting import wait_for

from skyform.providers import processes

# Exits on SIGTERM after writing the file named by argv[1]; else sleeps.
_POLITE = (
    "import signal, sys, time, pathlib\n"
    "def bye(*_):\n"
    "    pathlib.Path(sys.argv[1]).write_text('term')\n"
    "    sys.exit(0)\n"
    "signal.signal(signal.SIGTERM, bye)\n"
    "pathlib.Path(sys.argv[1] + '.ready').write_text('')\n"
    "time.sleep(600)\n"
)
# Ignores SIGTERM.
_STUBBORN = (
    "import signal, sys, time, pathlib\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "pathlib.Path(sys.argv[1] + '.ready').write_text('')\n"
    "time.sleep(600)\n"
)


@pytest.fixture
def spawn() -> Iterator:
    started: list[subprocess.Popen[bytes]] = []

    def start(code: str, *args: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([sys.executable, "-c", code, *args])
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_pid_alive_sees_a_zombie_as_gone_and_reaps_it(spawn) -> None:
    proc = spawn("import sys; sys.exit(3)")
    pid = proc.pid
    # Not reaped yet: it stays a zombie until someone waits for it.
    wait_for(lambda: _state(pid) == "Z", 30, "the child to become a zombie")
    assert not processes.pid_alive(pid)
    assert _state(pid) is None, "pid_alive reaps our own zombie child"
    assert not processes.pid_alive(None)
    assert not processes.pid_alive(0)


def test_pid_alive_for_a_running_process(spawn, tmp_path: Path) -> None:
    proc = spawn(_STUBBORN, str(tmp_path / "s"))
    assert processes.pid_alive(proc.pid)
    assert processes.pid_alive(os.getpid())


def test_find_matches_argv_and_skips_this_process_and_zombies(spawn, tmp_path: Path) -> None:
    marker = f"marker-{uuid.uuid4().hex}"
    live = spawn(_STUBBORN, str(tmp_path / "s"), marker)
    dead = spawn("import sys; sys.exit(0)", marker)
    wait_for(lambda: _state(dead.pid) == "Z", 30, "the second child to become a zombie")
    assert processes.find(lambda argv: marker in argv) == [live.pid]
    assert os.getpid() not in processes.find(lambda argv: True)
    assert any(pid == os.getpid() for pid, _argv in processes.command_lines())


def test_terminate_sends_sigterm_first(spawn, tmp_path: Path) -> None:
    note = tmp_path / "polite"
    proc = spawn(_POLITE, str(note))
    wait_for(lambda: Path(f"{note}.ready").exists(), 30, "the child to install its handler")
    processes.terminate(proc.pid, grace=60, alive=lambda: proc.poll() is None)
    assert proc.poll() == 0, "it exited by its own SIGTERM handler, not by SIGKILL"
    assert note.read_text() == "term"


def test_terminate_kills_a_process_that_ignores_sigterm(spawn, tmp_path: Path) -> None:
    note = tmp_path / "stubborn"
    proc = spawn(_STUBBORN, str(note))
    wait_for(lambda: Path(f"{note}.ready").exists(), 30, "the child to ignore SIGTERM")
    processes.terminate(proc.pid, grace=0.2)  # default check: pid_alive, which reaps it
    # It ignores SIGTERM, so only the SIGKILL after the grace can have ended it.
    assert _state(proc.pid) is None, "killed and reaped"
    processes.terminate(proc.pid, grace=0.2)  # gone: nothing to do, no error


def _state(pid: int) -> str | None:
    """The one-letter state of `pid` from `/proc` (None: no such process)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None
