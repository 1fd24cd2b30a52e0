"""Dynamic batching on one real runner: batches form from concurrent one-item calls.

The app (`runner_apps/batch_app.py`) reports, with each result, which batch
served it and how big that batch was, so the tests see the batches the
runner really formed. Waits are generous (2 s for a batch of 4 to fill) and
batches start as soon as they are full, so nothing here depends on timing.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
from support.runner import APPS_DIR, KEY, RunnerProcess, running

from skyform.bundle import build_bundle

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunnerProcess]:
    out = tmp_path_factory.mktemp("batch")
    bundle = build_bundle("batch_app.py::Batched", APPS_DIR, KEY).write(out / "batch.skyb")
    with running(bundle, out / "probe") as proc:
        proc.wait_ready()
        yield proc


def call_together(runner: RunnerProcess, path: str, xs: list[int]) -> list[httpx.Response]:
    """POST `{"x": x}` for every x at the same moment, one connection each; answers in order."""
    answers: list[httpx.Response | None] = [None] * len(xs)
    barrier = threading.Barrier(len(xs))

    def call(i: int) -> None:
        with runner.client(timeout=30) as client:
            barrier.wait()
            answers[i] = client.post(path, json={"x": xs[i]})

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(a is not None for a in answers), "a call did not finish"
    return answers  # type: ignore[return-value]


@pytest.mark.parametrize("path", ["/double", "/async-double"])
def test_concurrent_single_calls_are_served_in_batches_in_order(
    runner: RunnerProcess, path: str
) -> None:
    xs = list(range(16))
    answers = call_together(runner, path, xs)
    assert [a.status_code for a in answers] == [200] * 16, [a.text for a in answers]
    bodies = [a.json() for a in answers]
    assert [b["y"] for b in bodies] == [2 * x for x in xs]  # each caller got its own result
    limit = 4 if path == "/double" else 8
    sizes = Counter(b["batch"] for b in bodies)
    assert all(b["size"] == sizes[b["batch"]] for b in bodies), "sizes agree with the batches"
    assert max(sizes.values()) == limit and all(n <= limit for n in sizes.values()), sizes
    assert len(sizes) < 16, "16 calls, fewer batches"


def test_one_batch_runs_at_a_time(runner: RunnerProcess) -> None:
    call_together(runner, "/double", list(range(12)))
    with runner.client() as client:
        assert client.post("/overlap").json() == {"max_concurrent_batches": 1}


def test_an_exception_in_a_slot_fails_that_item_alone(runner: RunnerProcess) -> None:
    answers = call_together(runner, "/double", [1, -1, 418, 2])
    assert [a.status_code for a in answers] == [200, 500, 418, 200], [a.text for a in answers]
    assert answers[1].json()["error_type"] == "internal_error"
    assert answers[2].json()["detail"] == "this item is a teapot"
    ok = [answers[0].json(), answers[3].json()]
    assert ok[0]["batch"] == ok[1]["batch"] and ok[0]["size"] == 4, "one batch of four"
    assert "ValueError" in runner.log() and "negative input -1" in runner.log()


@pytest.mark.parametrize(
    ("bad", "says"),
    [(999, "this batch cannot be served"), (777, "returned 3 results for a batch of 4 inputs")],
)
def test_a_failing_handler_fails_its_whole_batch_and_the_runner_serves_on(
    runner: RunnerProcess, bad: int, says: str
) -> None:
    answers = call_together(runner, "/double", [1, 2, bad, 3])
    assert [a.status_code for a in answers] == [500] * 4, [a.text for a in answers]
    assert {a.json()["error_type"] for a in answers} == {"internal_error"}
    assert says in runner.log()
    assert runner.health().status_code == 200
    assert call_together(runner, "/double", [5])[0].json()["y"] == 10  # next batch is fine


def test_no_wait_serves_a_lone_call_at_once_as_a_batch_of_one(runner: RunnerProcess) -> None:
    with runner.client() as client:
        for x in (3, 4):
            body = client.post("/quick", json={"x": x}).json()
            assert (body["y"], body["size"]) == (2 * x, 1)


def test_one_item_is_validated_and_the_schema_shows_one_item(runner: RunnerProcess) -> None:
    with runner.client() as client:
        bad = client.post("/double", json=[{"x": 1}, {"x": 2}])  # a list is not the contract
        assert bad.status_code == 422
        assert client.post("/double", json={"x": "nope"}).status_code == 422
        schema = client.get("/openapi.json").json()
    post = schema["paths"]["/double"]["post"]
    body = post["requestBody"]["content"]["application/json"]["schema"]
    answer = post["responses"]["200"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/Num"}
    assert answer == {"$ref": "#/components/schemas/Out"}
