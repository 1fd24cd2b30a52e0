"""The app the fal-client tests call: it prints and logs, so each request has its own log lines."""

import asyncio
import logging
import os

from pydantic import BaseModel

from skyform import App, endpoint

log = logging.getLogger("fal_echo")


class PromptIn(BaseModel):
    prompt: str
    sleep: float = 0.0


class FalEcho(App):
    max_runners = 1
    keep_alive = 30
    request_timeout = 30
    startup_timeout = 30

    @endpoint("/")
    async def generate(self, req: PromptIn) -> dict:
        """Echo the prompt after `sleep` seconds; print and log on the way."""
        print("printing", req.prompt)  # several writes: captured as one line
        log.warning("logging %s", req.prompt)
        if req.sleep:
            await asyncio.sleep(req.sleep)
        return {"text": req.prompt.upper(), "pid": os.getpid()}

    @endpoint("/fail")
    def fail(self, req: PromptIn) -> dict:
        """Answer 500 (an app error), for the webhook's ERROR payload."""
        raise RuntimeError(f"planned failure for {req.prompt}")
