"""From the stack file's `state:` value to a backend.

`state: local` (the default), `{local: {dir: PATH}}`, or
`{postgres: {url: "postgresql://...", schema: NAME}}`. Mistakes are reported
with the nearest valid name, like the rest of the stack file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from skyform.state.backend import StateBackend
from skyform.state.errors import StateError
from skyform.state.local import LocalBackend, default_directory
from skyform.suggest import did_you_mean

BACKENDS = ("local", "postgres")
OPTIONS: dict[str, tuple[str, ...]] = {"local": ("dir",), "postgres": ("url", "schema")}
STACK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
UNSET_VAR = re.compile(r"\$\{([^}]*)\}")


def check_stack_name(stack: str) -> str:
    """Stack names become file names and keys: letters, digits, `_`, `.`, `-`."""
    if not isinstance(stack, str) or not STACK_NAME.match(stack):
        raise StateError(
            f"invalid stack name {stack!r}: use letters, digits, '_', '.' and '-' "
            "(starting with a letter or digit)"
        )
    return stack


def parse_config(config: Any) -> tuple[str, dict[str, Any]]:
    """`(backend name, options)` from a `state:` value, or a StateError naming the mistake."""
    if config is None:
        return "local", {}
    if hasattr(config, "model_dump"):  # a pydantic model from the stack file
        config = config.model_dump(exclude_none=True)
    options: Any
    if isinstance(config, str):
        name, options = config, {}
    elif isinstance(config, Mapping) and len(config) == 1:
        name, options = next(iter(config.items()))
        options = {} if options is None else options
        if not isinstance(options, Mapping):
            raise StateError(f"state: {name}: expected a mapping of options, got {options!r}")
        options = dict(options)
    else:
        raise StateError(
            "state: expected `local` or one backend with its options, "
            "e.g. {postgres: {url: postgresql://...}}"
        )
    if name not in BACKENDS:
        raise StateError(f"state: unknown backend {name!r}{did_you_mean(str(name), BACKENDS)}")
    for key in options:
        if key not in OPTIONS[name]:
            raise StateError(
                f"state: {name}: unknown option {key!r}{did_you_mean(str(key), OPTIONS[name])}"
            )
    if name == "postgres":
        url = options.get("url")
        if not isinstance(url, str) or not url:
            raise StateError("state: postgres: `url` is required (postgresql://user@host/db)")
        unset = UNSET_VAR.search(url)
        if unset:
            raise StateError(
                f"state: postgres: url refers to ${{{unset.group(1)}}}, which is not set"
            )
    return name, options


def open_backend(config: Any, stack: str, workdir: Path | str = ".") -> StateBackend:
    """The backend for `stack`, per the stack file's `state:` value; relative paths from `workdir`.

    Opening connects to nothing: the postgres backend connects on first use.
    """
    check_stack_name(stack)
    name, options = parse_config(config)
    if name == "postgres":
        from skyform.state.postgres import PostgresBackend

        return PostgresBackend(options["url"], stack, schema=options.get("schema"))
    directory = options.get("dir")
    path = Path(workdir) / directory if directory else default_directory(Path(workdir))
    return LocalBackend(path, stack)
