"""The streaming example: a token-by-token text generator.

The "model" is a word-level Markov chain built in setup() from a short text,
so the example runs anywhere in a second; swap in a real LLM's token loop and
nothing else changes. `/stream` is a generator endpoint: each yielded value is
one server-sent event, forwarded by runner and gateway the moment it is
yielded. `/` returns the whole completion at once.
"""

import itertools
import random
import time
from collections.abc import Iterator

from pydantic import BaseModel, Field

from skyform import App, endpoint

CORPUS = """
the gateway queues the request and the runner serves it and the model streams
each token as soon as it is ready and the client reads each token as it
arrives and the stack scales from zero when the first request comes and the
runner stops when the stack is idle and the model loads once per runner
"""


class GenerateIn(BaseModel):
    prompt: str = "the"
    max_tokens: int = Field(16, ge=1, le=512)
    seed: int = 0
    delay: float = Field(0.05, ge=0, le=2, description="seconds per token (a model's pace)")


class Token(BaseModel):
    index: int
    token: str


class Completion(BaseModel):
    text: str


class TextGen(App):
    machine_type = "CPU"
    max_runners = 2
    max_multiplexing = 8
    keep_alive = 120

    def setup(self) -> None:
        words = CORPUS.split()
        self.chain: dict[str, list[str]] = {}
        for current, following in itertools.pairwise(words):
            self.chain.setdefault(current, []).append(following)

    def _tokens(self, req: GenerateIn) -> Iterator[str]:
        rng = random.Random(req.seed)
        word = req.prompt.split()[-1] if req.prompt.split() else "the"
        for _ in range(req.max_tokens):
            word = rng.choice(self.chain.get(word) or list(self.chain))
            yield word

    @endpoint("/stream")
    def stream(self, req: GenerateIn) -> Iterator[Token]:
        """One event per token, as the model produces it."""
        for i, token in enumerate(self._tokens(req)):
            time.sleep(req.delay)
            yield Token(index=i, token=token)

    @endpoint("/")
    def generate(self, req: GenerateIn) -> Completion:
        """The whole completion at once."""
        return Completion(text=" ".join(self._tokens(req)))
