"""The README's main job: plan, apply, call the app for real, destroy.

    python examples/hello/demo.py      (or: make demo)

Runs the same commands a user types, in this folder, then makes one real
HTTP call through the gateway with the stack's API key. Whatever happens
(a failure, Ctrl-C), it destroys the stack before exiting, so nothing is left
running.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
SKYFORM = [sys.executable, "-m", "skyform.cli"]


def skyform(*args: str, capture: bool = False) -> str:
    """Run one skyform command here, showing it like a shell would."""
    print(f"\n$ skyform {' '.join(args)}", flush=True)
    proc = subprocess.run(
        [*SKYFORM, *args], cwd=HERE, text=True, capture_output=capture, check=False
    )
    if proc.returncode not in (0, 2):  # plan --detailed-exitcode says 2 for "changes"
        if capture:
            sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"demo failed: skyform {' '.join(args)} exited {proc.returncode}")
    return proc.stdout if capture else ""


def call_hello() -> None:
    from skyform.engine.keys import stack_secret

    outputs = json.loads(skyform("output", "--json", capture=True))
    url = outputs["apps"]["hello"]["url"]
    api_key = stack_secret("api_key", HERE, "hello")  # $SKYFORM_API_KEY, or .skyform/
    print(f"\n$ curl -X POST {url} -H 'Authorization: Bearer ***' -d '{{\"name\": \"skyform\"}}'")
    response = httpx.post(
        url,
        json={"name": "skyform"},
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=120,
        trust_env=False,
    )
    print(f"HTTP {response.status_code}: {response.text}")
    if response.status_code != 200 or "Hello, skyform!" not in response.text:
        raise SystemExit("demo failed: the app did not answer as expected")
    print(f"\nTry it in a browser: {outputs['apps']['hello']['playground_url']}")


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        skyform("plan")
        skyform("apply", "--auto-approve")
        call_hello()
        skyform("status")
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        # Always tear down: what the demo started, the demo stops.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        print("\n$ skyform destroy --auto-approve", flush=True)
        subprocess.run([*SKYFORM, "destroy", "--auto-approve"], cwd=HERE, check=False)
    print("\nDemo complete: planned, applied, called and destroyed.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
