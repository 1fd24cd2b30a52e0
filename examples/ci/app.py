"""The CI example's app: small on purpose; the workflow is what this example shows."""

from pydantic import BaseModel

from skyform import App, endpoint


class EchoIn(BaseModel):
    text: str


class Echo(App):
    machine_type = "CPU"
    min_runners = 0  # scale from zero: apply registers the revision, the first call starts a runner
    max_runners = 2

    @endpoint("/")
    def echo(self, req: EchoIn) -> dict[str, str]:
        return {"echo": req.text}
