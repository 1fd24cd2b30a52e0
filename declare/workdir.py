"""The names a stack's working directory is laid out by: `.skyform/`, and the keys' variables.

Why a module of its own: the stack engine keeps keys, certificates and
bundles in `.skyform/`, and the local state backend keeps the state there
too; the state layer refuses a write that holds a key's value, so it needs the
keys' names as well. Both import these names from here, at the bottom of the
arrows, so the state layer never imports the engine.
"""

from __future__ import annotations

SKYFORM_DIR = ".skyform"

# Each per-stack key by its name in the keys file, and the variable that sets it (DESIGN §2).
KEY_ENV_NAMES: dict[str, str] = {
    "bundle_key": "SKYFORM_BUNDLE_KEY",  # signs and verifies bundles
    "admin_token": "SKYFORM_ADMIN_TOKEN",  # the gateway's admin API
    "runner_token": "SKYFORM_RUNNER_TOKEN",  # gateway -> runner calls
    "api_key": "SKYFORM_API_KEY",  # callers of private apps
}
