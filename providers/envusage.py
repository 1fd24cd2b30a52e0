"""Which stacks use which cached environment: for `skyform env list` and `skyform env prune`.

Why: environments are shared across stacks and kept after runners stop, so
the cache only grows. Each `ensure_environment(..., used_by=...)` records the
(stack, app, workdir) that asked, in `<env>/.skyform-users.json`. An
environment is **in use** — and `prune` keeps it — when:

1. a process is running from it (a live runner, even of a `skyform run`), or
2. a recorded user's local state file `<workdir>/.skyform/<stack>.state.json`
   still exists and either mentions the environment's key, or still has that
   app among its resources and this environment is the one that app asked for
   last (an app whose requirements changed moved to a newer environment).

Everything else — environments of destroyed stacks, superseded revisions,
unrecorded ones, half-built leftovers not being built right now — is unused.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from skyform.providers import processes
from skyform.providers.environments import (
    LOG_SUFFIX,
    envs_dir,
    key_lock,
    marker_fields,
    read_marker,
    read_users,
    remove_tree,
)


@dataclass
class EnvInfo:
    """One cached environment as `skyform env list` shows it."""

    key: str
    path: Path
    complete: bool
    python_version: str = ""
    requirements: list[str] = field(default_factory=list)
    skyform_version: str = ""
    installer: str = ""
    created: float = 0.0
    last_used: float = 0.0
    size: int = 0
    users: list[dict[str, object]] = field(default_factory=list)
    in_use: list[str] = field(default_factory=list)  # reasons; empty = unused

    def to_json(self) -> dict[str, object]:
        return {
            "key": self.key,
            "path": str(self.path),
            "complete": self.complete,
            "python_version": self.python_version,
            "requirements": self.requirements,
            "skyform_version": self.skyform_version,
            "installer": self.installer,
            "created": self.created,
            "last_used": self.last_used,
            "size": self.size,
            "users": self.users,
            "in_use": bool(self.in_use),
            "in_use_by": self.in_use,
        }


def list_environments(*, with_size: bool = True) -> list[EnvInfo]:
    """Every environment directory in the cache, complete or not, with its users."""
    root = envs_dir()
    if not root.is_dir():
        return []
    infos: list[EnvInfo] = []
    for path in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        marker = read_marker(path) or {}
        users = read_users(path)
        infos.append(
            EnvInfo(
                key=path.name,
                path=path,
                complete=bool(marker),
                **marker_fields(marker),
                last_used=max(
                    [float(cast(float, u.get("last_used", 0) or 0)) for u in users], default=0.0
                ),
                size=_tree_size(path) if with_size else 0,
                users=users,
            )
        )
    latest = _latest_key_per_user(infos)
    running = _running_env_keys(root)
    for info in infos:
        info.in_use = _in_use_reasons(info, latest, running)
    return infos


def _latest_key_per_user(infos: list[EnvInfo]) -> dict[tuple[str, str, str], str]:
    best: dict[tuple[str, str, str], tuple[float, str]] = {}
    for info in infos:
        for user in info.users:
            ident = (str(user.get("stack")), str(user.get("app")), str(user.get("workdir")))
            when = float(user.get("last_used", 0) or 0)  # type: ignore[arg-type]
            if ident not in best or when > best[ident][0]:
                best[ident] = (when, info.key)
    return {ident: key for ident, (_, key) in best.items()}


def _in_use_reasons(
    info: EnvInfo, latest: dict[tuple[str, str, str], str], running: set[str]
) -> list[str]:
    reasons: list[str] = []
    if info.key in running:
        reasons.append("running")
    for user in info.users:
        stack, app, workdir = str(user.get("stack")), str(user.get("app")), str(user.get("workdir"))
        state = _read_state_text(Path(workdir) / ".skyform" / f"{stack}.state.json")
        if state is None:
            continue
        text, resources = state
        current = latest.get((stack, app, workdir)) == info.key
        if info.key in text or (current and app in resources):
            reason = f"stack {stack} ({workdir}) app {app}"
            if reason not in reasons:
                reasons.append(reason)
    return reasons


def _read_state_text(path: Path) -> tuple[str, str] | None:
    """(the whole state's text, its resources' text), or None when there is no state."""
    try:
        text = path.read_text()
    except OSError:
        return None
    try:
        resources = json.dumps(json.loads(text).get("resources", {}))
    except (ValueError, AttributeError):
        resources = text  # unreadable: assume it may use anything it names
    return text, resources


def _running_env_keys(root: Path) -> set[str]:
    """Keys of environments some live process runs from (its argv[0] is inside one)."""
    prefix = str(root.resolve()) + os.sep
    keys: set[str] = set()
    commands = [argv[0] for _pid, argv in processes.command_lines()]
    for command in commands:
        with contextlib.suppress(OSError, ValueError):
            resolved = os.path.abspath(command)
            if resolved.startswith(prefix):
                keys.add(resolved[len(prefix) :].split(os.sep, 1)[0])
    return keys


def _tree_size(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def prune_environments(*, dry_run: bool = False) -> list[EnvInfo]:
    """Remove every unused environment (see the module docstring); return what went.

    Each removal happens under the key's build lock, after checking again, so
    an environment being built or just claimed is never removed under anyone.
    """
    removed: list[EnvInfo] = []
    for info in list_environments():
        if info.in_use:
            continue
        if dry_run:
            removed.append(info)
            continue
        with key_lock(info.key, blocking=False) as held:
            if not held:
                continue  # a build of this key is running
            fresh = next((i for i in list_environments(with_size=False) if i.key == info.key), None)
            if fresh is None or fresh.in_use:
                continue
            remove_tree(info.path)
            (envs_dir() / f"{info.key}{LOG_SUFFIX}").unlink(missing_ok=True)
        removed.append(info)
    _remove_stray_files()
    return removed


def _remove_stray_files() -> None:
    """Logs of environments that no longer exist (failed builds) go too.

    Lock files stay: removing one could split a waiting builder's lock in two.
    """
    root = envs_dir()
    if not root.is_dir():
        return
    for log in root.glob(f"*{LOG_SUFFIX}"):
        key = log.name[: -len(LOG_SUFFIX)]
        if not (root / key).exists():
            with key_lock(key, blocking=False) as held:
                if held:
                    log.unlink(missing_ok=True)
