"""skyform.state: where what a stack owns is kept.

    backend = open_backend(config, stack="demo", workdir=Path("."))
    with backend.lock(operation="apply", timeout=0.0):
        doc = backend.read()
        backend.write(doc.evolve(resources={...}))

Backends: `local` (a JSON file under `.skyform/`, flock) and `postgres` (one
row per stack, advisory lock). Both release their lock when the holder dies.
"""

from skyform.state.backend import StateBackend
from skyform.state.config import check_stack_name, open_backend, parse_config
from skyform.state.errors import StateError, StateLockedError
from skyform.state.inspect import list_addresses, show, unlock
from skyform.state.lock import LockInfo
from skyform.state.model import (
    STATE_VERSION,
    StateDocument,
    find_secret_values,
    secret_names,
    validate_resources,
)

__all__ = [
    "STATE_VERSION",
    "LockInfo",
    "StateBackend",
    "StateDocument",
    "StateError",
    "StateLockedError",
    "check_stack_name",
    "find_secret_values",
    "list_addresses",
    "open_backend",
    "parse_config",
    "secret_names",
    "show",
    "unlock",
    "validate_resources",
]
