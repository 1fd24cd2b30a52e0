"""An app asking for one H100: it reports the GPUs its runner was given."""

import os
import time

from pydantic import BaseModel

from skyform import App, endpoint


class Hold(BaseModel):
    seconds: float = 0.0


class OneGpu(App):
    machine_type = "GPU-H100"
    max_runners = 2
    keep_alive = 30
    startup_timeout = 30

    @endpoint("/")
    def devices(self, req: Hold) -> dict:
        time.sleep(req.seconds)
        return {"cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"), "pid": os.getpid()}
