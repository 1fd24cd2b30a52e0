"""examples/embeddings for real: the packaged MiniLM model behind `skyform apply`, offline.

One environment build (torch from the local wheel cache, the model from its
PyPI package) and one apply (with `tls: auto`, as the README's fal-client step
needs) serve every test here. The checks are about meaning, not shape:
paraphrases must score a higher cosine similarity than unrelated sentences,
and one text sent alone through the batched endpoint gets the same vector as
in a batch.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import ssl
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support.cli import cleanup, keys_of, sky, state_of
from support.procs import free_port, processes_under

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
    text = (root / "skyform.yaml").read_text()
    text = text.replace("port: 8766}", f"port: {free_port()}, tls: auto}}")
    assert "tls: auto" in text
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


def ca_file(root: Path) -> str:
    return str(root / ".skyform" / "tls" / "embeddings" / "ca.pem")


def client(root: Path, headers: dict) -> httpx.Client:
    """Verifies the gateway against the stack's own CA (never verify=False)."""
    context = ssl.create_default_context(cafile=ca_file(root))
    return httpx.Client(headers=headers, timeout=120, verify=context)


def embed(root: Path, base: str, headers: dict, texts: list[str]) -> list[list[float]]:
    with client(root, headers) as c:
        answer = c.post(f"{base}/embed/", json={"texts": texts})
    assert answer.status_code == 200, answer.text
    return answer.json()["vectors"]


def meaning_holds(vectors: list[list[float]]) -> None:
    """PARAPHRASES + UNRELATED, flattened: paraphrase pairs score well above unrelated ones."""
    pairs = len(PARAPHRASES) + len(UNRELATED)
    assert len(vectors) == 2 * pairs and {len(v) for v in vectors} == {384}
    scores = [cosine(vectors[2 * i], vectors[2 * i + 1]) for i in range(pairs)]
    close, far = scores[: len(PARAPHRASES)], scores[len(PARAPHRASES) :]
    assert min(close) > 0.5, close
    assert max(far) < 0.3, far
    assert min(close) > max(far) + 0.3, (close, far)


def test_paraphrases_are_closer_than_unrelated_sentences(stack: tuple[Path, str, dict]) -> None:
    root, base, headers = stack
    vectors = embed(root, base, headers, [t for pair in PARAPHRASES + UNRELATED for t in pair])
    assert all(abs(math.sqrt(sum(x * x for x in v)) - 1) < 1e-3 for v in vectors), "unit length"
    meaning_holds(vectors)


def test_fal_client_run_and_subscribe_as_the_readme_says(stack: tuple[Path, str, dict]) -> None:
    """The real fal-client, configured only by its environment, by owner/alias id."""
    root, base, headers = stack
    host = base.split("://", 1)[1]
    env = dict(
        os.environ,
        FAL_RUN_HOST=host,
        FAL_QUEUE_RUN_HOST=f"{host}/queue",
        FAL_KEY=headers["Authorization"].split(" ", 1)[1],
        SSL_CERT_FILE=ca_file(root),
    )
    texts = [t for pair in PARAPHRASES + UNRELATED for t in pair]
    script = f"""
        import json, fal_client
        texts = {texts!r}
        run = fal_client.run("embeddings/embed", arguments={{"texts": texts}})
        queued = fal_client.subscribe("embeddings/embed", arguments={{"texts": texts[:2]}})
        print(json.dumps({{"run": run["vectors"], "queued": queued["vectors"]}}))
        """
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    meaning_holds(out["run"])
    assert len(out["queued"]) == 2
    assert all(cosine(a, b) > 0.999 for a, b in zip(out["queued"], out["run"][:2], strict=True))


def test_the_batched_endpoint_gives_each_caller_its_own_vector(
    stack: tuple[Path, str, dict],
) -> None:
    root, base, headers = stack
    texts = [t for pair in PARAPHRASES for t in pair]
    expected = embed(root, base, headers, texts)
    got: list[list[float] | None] = [None] * len(texts)
    barrier = threading.Barrier(len(texts))

    def one(i: int) -> None:
        with client(root, headers) as c:
            barrier.wait()
            answer = c.post(f"{base}/embed/one", json={"text": texts[i]})
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
    root, base, headers = stack
    with client(root, headers) as c:
        assert c.post(f"{base}/embed/", json={"texts": []}).status_code == 422
        assert c.post(f"{base}/embed/one", json={}).status_code == 422
    assert len(embed(root, base, headers, ["still here"])) == 1


def test_destroy_leaves_nothing_running(stack: tuple[Path, str, dict]) -> None:
    root, _, _ = stack
    proc = sky(root, "destroy", "--auto-approve", timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert processes_under(root) == []
