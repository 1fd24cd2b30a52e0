"""Apps for the gateway's abuse tests: hostile docstrings, a request that kills
its gateway, and an app whose runner never becomes ready (so requests stay queued)."""

import contextlib
import os
import signal
import time
from pathlib import Path

from pydantic import BaseModel

from skyform import App, endpoint

HOSTILE_DOC = (
    "Hostile </script><script>window.pwned = 1</script> <!--<script> {{script}} {{config}} "
    "{{title}} & <b>bold</b> \u2028 end"
)


class NoteIn(BaseModel):
    note: str = ""


class Hostile(App):
    max_runners = 1

    @endpoint("/")
    def run(self, req: NoteIn) -> dict:
        return {"note": req.note}

    run.__doc__ = HOSTILE_DOC


class KillerIn(BaseModel):
    key: str


class Killer(App):
    """Each call SIGKILLs the gateway that dispatched it: the runner's parent process.

    Where runners run as another user (skyform as root) the app may not signal its
    gateway: the test kills it once the call is recorded, as the app would have.
    """

    max_runners = 1
    startup_timeout = 30

    @endpoint("/")
    def kill(self, req: KillerIn) -> dict:
        counts = Path(os.environ["GW_COUNT_DIR"])
        with open(counts / req.key, "a") as fh:
            fh.write(f"{os.getpid()}\n")
        with contextlib.suppress(PermissionError):
            os.kill(os.getppid(), signal.SIGKILL)
        time.sleep(30)  # the runner dies with its gateway first
        return {"survived": True}


class Sleepy(App):
    """A runner that stays in setup(): requests to it wait in the queue."""

    max_runners = 1
    startup_timeout = 300

    def setup(self) -> None:
        time.sleep(300)

    @endpoint("/")
    def run(self, req: NoteIn) -> dict:
        return {"note": req.note}
