"""What the CLI's commands share: planning under the lock, apply's progress, log tailing.

`skyform.cli.stack` (plan, apply, destroy, logs) and `skyform.cli.devrun`
(run) both use these; they are public here so that neither reaches into the
other's private helpers.
"""

from __future__ import annotations

import contextlib
from typing import Any

from skyform.cli.output import err_console


def refresh_and_plan(ctx: Any, doc: Any, request: Any, quiet: bool = False) -> Any:
    """Refresh `doc` against what is live, then diff the stack file against it (lock held)."""
    from skyform.engine.planner import build_plan
    from skyform.engine.refresh import refresh

    with status_line("Refreshing state...", quiet):
        live = refresh(doc.resources, ctx.provider, ctx.keys["admin_token"], ctx.gateway_ca_file())
    with status_line("Building bundles...", quiet):
        return build_plan(ctx.stack, doc, live, ctx.keys, request, provider=ctx.provider)


def status_line(message: str, quiet: bool) -> Any:
    """A spinner with `message` on a terminal while a slow step runs; nothing otherwise."""
    if quiet or not err_console.is_terminal:
        return contextlib.nullcontext()
    return err_console.status(message)


def report(message: str) -> None:
    err_console.print(message, markup=False)  # installer lines carry `[notice]`, extras, ...


class ReadyProgress:
    """How many of each app's min_runners are ready: a live bar on a terminal, lines otherwise."""

    def __init__(self) -> None:
        self._seen: dict[str, str] = {}
        self._progress: Any = None
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> ReadyProgress:
        if err_console.is_terminal:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total} runners ready"),
                TimeElapsedColumn(),
                console=err_console,
                transient=False,
            )
            self._progress.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def update(
        self, app: str, ready: int, wanted: int, states: dict[str, int] | None = None
    ) -> None:
        others = ", ".join(f"{n} {s}" for s, n in sorted((states or {}).items()))
        detail = f" ({others})" if others else ""
        if self._progress is not None:
            if app not in self._tasks:
                self._tasks[app] = self._progress.add_task(f"app.{app}", total=wanted)
            self._progress.update(
                self._tasks[app], completed=min(ready, wanted), description=f"app.{app}{detail}"
            )
            return
        line = f"app.{app}: {min(ready, wanted)}/{wanted} runners ready{detail}"
        if self._seen.get(app) != line:
            self._seen[app] = line
            err_console.print(line, markup=False)


class LogFollower:
    """Turns repeated `tail` snapshots into only the lines not printed yet.

    Snapshots are merged by time across runners, so a new line may land
    before the last one printed; every line carries its time (to the
    millisecond) and runner, so "not in the previous snapshot" means new.
    """

    def __init__(self) -> None:
        self._last: set[str] = set()

    def new_lines(self, text: str) -> list[str]:
        lines = [ln for ln in text.splitlines() if ln.strip()]
        fresh = [ln for ln in lines if ln not in self._last]
        self._last = set(lines)
        return fresh
