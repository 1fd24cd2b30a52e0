"""Calls a skyform gateway with the real, unmodified fal-client; prints one JSON line.

    python fal_driver.py SCENARIO APP_ID [ARGS...]

Configured only by the environment a fal-client user sets: FAL_RUN_HOST,
FAL_QUEUE_RUN_HOST, FAL_KEY and SSL_CERT_FILE (see support.fal.run_fal).
Each scenario returns what the tests assert on; fal-client's own objects are
turned into plain JSON (`describe`).
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import fal_client as fc


def describe(status: Any) -> dict[str, Any]:
    """A fal-client Status as JSON: its class name and its fields."""
    return {"type": type(status).__name__, **status.__dict__}


def http_error(call: Any) -> dict[str, Any]:
    """Run `call`; it must raise FalClientHTTPError, described as JSON."""
    try:
        call()
    except fc.FalClientHTTPError as exc:
        return {"status": exc.status_code, "error_type": exc.error_type, "message": str(exc)}
    raise AssertionError("expected FalClientHTTPError")


async def async_http_error(call: Any) -> dict[str, Any]:
    try:
        await call()
    except fc.FalClientHTTPError as exc:
        return {"status": exc.status_code, "error_type": exc.error_type, "message": str(exc)}
    raise AssertionError("expected FalClientHTTPError")


def sync_suite(app: str) -> dict[str, Any]:
    out: dict[str, Any] = {"run": fc.run(app, {"prompt": "hi"})}
    handle = fc.submit(app, {"prompt": "queued"})
    out["submit"] = {"request_id": handle.request_id, "status_url": handle.status_url}
    out["get"] = handle.get()
    out["status_with_logs"] = describe(handle.status(with_logs=True))
    out["status_by_id"] = describe(fc.status(app, handle.request_id, with_logs=True))
    out["status_by_id_no_logs"] = describe(fc.status(app, handle.request_id))
    out["result_by_id"] = fc.result(app, handle.request_id)
    updates: list[Any] = []
    out["subscribe"] = fc.subscribe(
        app,
        {"prompt": "sub", "sleep": 0.5},
        with_logs=True,
        on_queue_update=updates.append,
        interval=0.05,
    )
    out["updates"] = [describe(u) for u in updates]
    events = fc.submit(app, {"prompt": "events", "sleep": 0.3})
    out["events"] = [describe(e) for e in events.iter_events(with_logs=True, interval=0.05)]
    out["validation_error"] = http_error(lambda: fc.run(app, {"wrong": 1}))
    # The app has one runner: `busy` holds it while the rest queue behind it.
    busy = fc.submit(app, {"prompt": "busy", "sleep": 6})
    victim = fc.submit(app, {"prompt": "victim"})
    fc.cancel(app, victim.request_id)
    out["cancelled"] = describe(fc.status(app, victim.request_id))
    out["start_timeout_run"] = http_error(
        lambda: fc.run(app, {"prompt": "late"}, start_timeout=1.5)
    )
    out["start_timeout_subscribe"] = http_error(
        lambda: fc.subscribe(app, {"prompt": "late too"}, start_timeout=1.5, interval=0.05)
    )
    out["busy"] = busy.get()
    return out


async def async_suite(app: str) -> dict[str, Any]:
    client = fc.AsyncClient()
    out: dict[str, Any] = {"run": await client.run(app, {"prompt": "async"})}
    handle = await client.submit(app, {"prompt": "async queued"})
    out["get"] = await handle.get()
    out["status_by_id"] = describe(await client.status(app, handle.request_id, with_logs=True))
    out["result_by_id"] = await client.result(app, handle.request_id)
    updates: list[Any] = []
    out["subscribe"] = await client.subscribe(
        app,
        {"prompt": "async sub", "sleep": 0.5},
        with_logs=True,
        on_queue_update=updates.append,
        interval=0.05,
    )
    out["updates"] = [describe(u) for u in updates]
    events = await client.submit(app, {"prompt": "async events", "sleep": 0.3})
    out["events"] = [describe(e) async for e in events.iter_events(with_logs=True, interval=0.05)]
    out["validation_error"] = await async_http_error(lambda: client.run(app, {"wrong": 1}))
    busy = await client.submit(app, {"prompt": "busy", "sleep": 4})
    victim = await client.submit(app, {"prompt": "victim"})
    await client.cancel(app, victim.request_id)
    out["cancelled"] = describe(await client.status(app, victim.request_id))
    out["start_timeout_run"] = await async_http_error(
        lambda: client.run(app, {"prompt": "late"}, start_timeout=1.5)
    )
    out["busy"] = await busy.get()
    return out


def run(app: str, arguments: str) -> Any:
    return fc.run(app, json.loads(arguments))


def hints(app: str, *names: str) -> dict[str, Any]:
    """Each named hint in turn, one request at a time: which runner served it."""
    return {"pids": [[h, fc.run(app, {"prompt": h}, hint=h)["pid"]] for h in names]}


def webhook(app: str, url: str, path: str = "") -> dict[str, Any]:
    handle = fc.submit(app, {"prompt": "hooked"}, webhook_url=url, path=path)
    return {"request_id": handle.request_id}


def submit_error(app: str, url: str) -> dict[str, Any]:
    return http_error(lambda: fc.submit(app, {"prompt": "refused"}, webhook_url=url))


def main() -> None:
    scenario, *args = sys.argv[1:]
    if scenario == "sync":
        result = sync_suite(*args)
    elif scenario == "async":
        result = asyncio.run(async_suite(*args))
    elif scenario == "run":
        result = run(*args)
    elif scenario == "hints":
        result = hints(*args)
    elif scenario == "webhook":
        result = webhook(*args)
    elif scenario == "submit_error":
        result = submit_error(*args)
    else:
        raise SystemExit(f"unknown scenario {scenario}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
