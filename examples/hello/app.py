"""The hello example: a CPU app whose endpoint uses a helper module of the project."""

import os

from greeting import greet
from pydantic import BaseModel

from skyform import App, endpoint


class HelloIn(BaseModel):
    name: str = "world"


class HelloOut(BaseModel):
    message: str
    runner: int


class Hello(App):
    machine_type = "CPU"
    min_runners = 1
    max_runners = 2
    keep_alive = 60

    def setup(self) -> None:
        # Runs once per runner, before it takes requests (load models here).
        self.greeting = os.environ.get("GREETING", "Hello")

    @endpoint("/")
    def hello(self, req: HelloIn) -> HelloOut:
        return HelloOut(message=greet(req.name, self.greeting), runner=os.getpid())
