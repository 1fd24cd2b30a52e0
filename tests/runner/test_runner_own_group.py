"""A runner that leads its own process group stops the group's other members on its way out.

The local provider starts each runner as a group leader; when the runner
exits on its own (a 503, a failed setup), whatever its endpoints spawned in
that group must not outlive it, while a process that left the group is not
the runner's to stop and the runner's own exit status is kept.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

from support.procs import pid_alive
from support.waiting import wait_for, wait_until

# Leads its own group (start_new_session), starts one child in its group and
# one in a new session, writes their pids, then leaves through the runner's exit.
_LEADER = """
import subprocess, sys, time
from pathlib import Path
from skyform.runtime import runner
sleep = [sys.executable, "-c", "import time; time.sleep(600)"]
member = subprocess.Popen(sleep)
escaped = subprocess.Popen(sleep, start_new_session=True)
Path(sys.argv[1]).write_text(f"{member.pid} {escaped.pid}")
runner._stop_own_group()
raise SystemExit(7)
"""


def test_exit_kills_the_group_members_and_keeps_the_exit_status(tmp_path: Path) -> None:
    pids_file = tmp_path / "pids"
    leader = subprocess.Popen(
        [sys.executable, "-c", _LEADER, str(pids_file)], start_new_session=True
    )
    escaped = 0
    try:
        assert leader.wait(timeout=60) == 7
        member, escaped = (int(p) for p in wait_for(pids_file.read_text, 5, "the pids").split())
        assert wait_until(lambda: not pid_alive(member), 15), "a group member outlived the runner"
        assert pid_alive(escaped), "a process in another session is not the runner's to stop"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(leader.pid, signal.SIGKILL)  # the leader and any member it left
        leader.wait()
        if escaped and pid_alive(escaped):
            os.kill(escaped, signal.SIGKILL)
