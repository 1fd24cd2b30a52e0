"""One state operation in its own process, for the lock and crash tests.

    state_worker.py MODE CONFIG_JSON STACK WORKDIR [ARGS...]

Prints one JSON object per line so the test can follow along.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from skyform.state import StateError, StateLockedError, open_backend


def say(**data: object) -> None:
    print(json.dumps(data), flush=True)


def main() -> int:
    # Ctrl-C, as a person's terminal delivers it, even when the suite itself runs
    # as a background job (which starts every child with SIGINT ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    mode, config, stack, workdir = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], sys.argv[4]
    args = sys.argv[5:]
    backend = open_backend(config, stack, Path(workdir))
    if mode == "hold":
        # Take the lock, say so, hold it until a line arrives on stdin, then
        # optionally try a write (to see what happens after a forced unlock).
        with backend.lock(operation=args[0] if args else "apply") as info:
            say(locked=info.to_dict())
            sys.stdin.readline()
            if "write" in args[1:]:
                try:
                    doc = backend.read()
                    backend.write(doc.evolve(outputs={"late": True}))
                    say(wrote=True)
                except StateError as exc:
                    say(error=str(exc))
        say(released=True)
    elif mode == "hold-spawn":
        # Like `apply` starting a long-lived gateway: a child that outlives us must not
        # inherit (and so keep) the lock.
        with backend.lock(operation="apply") as info:
            child = subprocess.Popen(["sleep", "120"], close_fds=False)
            say(locked=info.to_dict(), child=child.pid)
            sys.stdin.readline()
    elif mode == "writers":
        # Read-modify-write ARGS[0] times under the lock, adding one resource each time.
        count, tag = int(args[0]), args[1]
        for i in range(count):
            with backend.lock(operation="apply", timeout=120):
                doc = backend.read()
                resources = dict(doc.resources)
                resources[f"app.{tag}-{i}"] = {"writer": tag, "i": i}
                backend.write(doc.evolve(resources=resources))
        say(done=count)
    elif mode == "spin":
        # Write a large state over and over until killed.
        size = int(args[0])
        with backend.lock(operation="apply"):
            doc = backend.read()
            say(started=True)
            n = 0
            while True:
                n += 1
                resources = {
                    f"app.a{i}": {"i": i, "round": n, "pad": "x" * 200} for i in range(size)
                }
                doc = backend.write(doc.evolve(resources=resources, outputs={"round": n}))
    elif mode == "try":
        timeout = float(args[0])
        try:
            with backend.lock(operation="plan", timeout=timeout) as info:
                say(locked=info.to_dict())
        except StateLockedError as exc:
            say(error=str(exc), holder=exc.info.to_dict() if exc.info else None)
            return 3
    else:
        raise SystemExit(f"unknown mode {mode}")
    backend.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
