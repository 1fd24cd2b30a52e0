"""The one rule for app names, shared by the stack file and the gateway's admin API.

An app's name becomes the first segment of its URLs (`/{app}/...`,
`/queue/{app}/...`), so it must be a plain URL segment and must not shadow a
route of the gateway's own. The whole name is matched (`re.fullmatch`): a
pattern ending in `$` would also accept a name with a trailing newline, which
then breaks every URL built from it.
"""

from __future__ import annotations

import json
import re

APP_NAME_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
# First path segments the gateway routes itself.
RESERVED_APP_NAMES = frozenset({"queue", "-", "playground"})


def app_name_problem(name: object) -> str | None:
    """Why `name` cannot be an app's name, or None when it can."""
    shown = json.dumps(name) if isinstance(name, str) else repr(name)
    if not isinstance(name, str) or not APP_NAME_RE.fullmatch(name):
        return (
            f'app name {shown} must be lowercase letters, digits and "-", 1-63 characters, '
            "starting and ending with a letter or digit (it becomes a URL path)"
        )
    if name in RESERVED_APP_NAMES:
        reserved = ", ".join(json.dumps(n) for n in sorted(RESERVED_APP_NAMES))
        return f"app name {shown} is reserved by the gateway (reserved: {reserved})"
    return None
