"""Version 2 of the echo app: a new revision for the rolling-update test."""

import os

from skyform import App, endpoint


class EchoV2(App):
    max_runners = 2
    keep_alive = 30
    request_timeout = 20
    startup_timeout = 30

    @endpoint("/version", method="GET")
    def version(self) -> dict:
        return {"version": 2, "pid": os.getpid(), "greeting": os.environ.get("GREETING", "")}
