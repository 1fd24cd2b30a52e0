"""`skyform state list|show|unlock`: look into a stack's state, or free its lock.

The stack (name, `state:` backend, where `.skyform/` lives) comes from the
stack file; `--stack`/`--state` name them directly, for inspecting a state
whose stack file is not at hand (a postgres state from another machine).
None of these take the lock: reading is safe without it, and `unlock` is for
when someone else has it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from skyform.cli.output import console, err_console, help_when_bare, print_json
from skyform.engine.stackfile import DEFAULT_FILE
from skyform.errors import SkyformError

FILE_OPTION = typer.Option(Path(DEFAULT_FILE), "--file", "-f", help="The stack file.")
STACK_OPTION = typer.Option(
    None, "--stack", help="Stack name, instead of reading it from the stack file."
)
STATE_OPTION = typer.Option(
    None,
    "--state",
    help='With --stack: the backend, "local" or JSON like {"postgres": {"url": "..."}}.',
)
JSON_OPTION = typer.Option(False, "--json", help="Machine-readable output.")


def register(app: typer.Typer) -> None:
    group = typer.Typer(
        name="state",
        help="Inspect a stack's state, or remove a lock left by a stuck run.",
        invoke_without_command=True,
        callback=help_when_bare,
    )
    group.command("list")(state_list)
    group.command("show")(state_show)
    group.command("unlock")(state_unlock)
    app.add_typer(group, name="state")


def state_list(
    file: Path = FILE_OPTION,
    stack: str | None = STACK_OPTION,
    state: str | None = STATE_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """List the addresses of every resource the stack's state records."""
    from skyform.state import list_addresses

    with _backend(file, stack, state) as backend:
        doc = backend.read()
    addresses = list_addresses(doc)
    if as_json:
        print_json({"stack": doc.stack, "serial": doc.serial, "addresses": addresses})
        return
    if not addresses:
        err_console.print(f"No resources in the state of stack {doc.stack!r}.")
    for address in addresses:
        console.print(address, markup=False)


def state_show(
    address: str | None = typer.Argument(None, help="One resource, e.g. app.hello or gateway."),
    file: Path = FILE_OPTION,
    stack: str | None = STACK_OPTION,
    state: str | None = STATE_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Show one resource's attributes, or the whole state and who holds its lock."""
    from skyform.state import show

    with _backend(file, stack, state) as backend:
        doc = backend.read()
        data = show(doc, address)
        holder = backend.current_lock() if address is None else None
        location = backend.location
    if as_json:
        print_json(data)
        return
    if address is not None:
        console.print(f"# {address}", style="bold", markup=False)
        console.print(json.dumps(data, indent=2, ensure_ascii=False), markup=False)
        return
    console.print(f"stack     {doc.stack}", markup=False)
    console.print(f"backend   {location}", markup=False)
    console.print(f"lineage   {doc.lineage}", markup=False)
    console.print(f"serial    {doc.serial}" + ("" if doc.serial else " (nothing stored yet)"))
    console.print(f"lock      {holder.describe() if holder else 'free'}", markup=False)
    console.print(f"resources {len(doc.resources)}", markup=False)
    for name in sorted(doc.resources):
        console.print(f"  {name}", markup=False)
    if doc.outputs:
        console.print("outputs", markup=False)
        console.print(json.dumps(doc.outputs, indent=2, ensure_ascii=False), markup=False)


def state_unlock(
    lock_id: str = typer.Argument(..., metavar="LOCK_ID", help="The id printed in the lock error."),
    file: Path = FILE_OPTION,
    stack: str | None = STACK_OPTION,
    state: str | None = STATE_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Remove lock LOCK_ID. Postgres: ends the stuck holder's database session."""
    from skyform.state import unlock

    with _backend(file, stack, state) as backend:
        removed = unlock(backend, lock_id)
    if as_json:
        print_json({"unlocked": removed.to_dict()})
        return
    console.print(
        f"Lock {removed.id} removed (was held by {removed.who} for {removed.operation!r} "
        f"since {removed.created}).",
        markup=False,
    )


def _backend(file: Path, stack: str | None, state: str | None) -> Any:
    """The state backend of the stack named by the options (a context manager)."""
    from skyform.state import open_backend

    if stack is not None:
        return open_backend(_parse_state_option(state), stack, Path.cwd())
    if state is not None:
        raise SkyformError("--state needs --stack (otherwise the stack file says where state is)")
    from skyform.engine.stackfile import load_stack

    loaded = load_stack(file)
    return open_backend(loaded.model.state, loaded.name, loaded.base_dir)


def _parse_state_option(value: str | None) -> Any:
    if value is None or value.strip() == "local":
        return "local"
    try:
        return json.loads(value)
    except ValueError:
        raise SkyformError(
            f'--state: expected "local" or JSON like {{"postgres": {{"url": "..."}}}}, got {value!r}'
        ) from None
