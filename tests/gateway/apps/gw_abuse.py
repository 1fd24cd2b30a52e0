"""Apps for the gateway's abuse tests: hostile docstrings, a request in flight
when its gateway is killed, and an app whose runner never becomes ready (so requests stay queued)."""

import os
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
    """Each call records itself and then hangs: the test SIGKILLs the gateway that
    dispatched it while it runs (a runner, dropped to another user when the
    gateway runs as root, may not signal its gateway itself)."""

    max_runners = 1
    startup_timeout = 30

    @endpoint("/")
    def kill(self, req: KillerIn) -> dict:
        counts = Path(os.environ["GW_COUNT_DIR"])
        with open(counts / req.key, "a") as fh:
            fh.write(f"{os.getpid()}\n")
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
