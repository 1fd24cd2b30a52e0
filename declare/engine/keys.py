"""Per-stack keys and tokens: from the environment when set, else generated once.

Generated values live in `.skyform/<stack>.keys.json` (mode 0600), beside but
never inside the state, so a state file can be shared without leaking them.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
from pathlib import Path

from skyform.errors import SkyformError
from skyform.files import private_dir, write_atomic
from skyform.workdir import KEY_ENV_NAMES, SKYFORM_DIR

WEBHOOK_KEY_ENV = "SKYFORM_WEBHOOK_KEY"


def webhook_key(keys: dict[str, str]) -> str:
    """The key that signs the gateway's webhook POSTs: `$SKYFORM_WEBHOOK_KEY`, else derived.

    Derived from the bundle key (HMAC, one-way: a receiver holding it learns
    nothing of the bundle key), so it is stable across applies and CI jobs
    without another stored or configured secret.
    """
    import hashlib
    import hmac

    if os.environ.get(WEBHOOK_KEY_ENV):
        return os.environ[WEBHOOK_KEY_ENV]
    digest = hmac.new(keys["bundle_key"].encode(), b"skyform webhook signing key", hashlib.sha256)
    return digest.hexdigest()


def keys_path(workdir: Path, stack: str) -> Path:
    return Path(workdir) / SKYFORM_DIR / f"{stack}.keys.json"


def stack_secret(name: str, workdir: Path, stack: str) -> str:
    """The value of key `name` for `stack`: `$SKYFORM_...` if set, else the stored one."""
    env_name = KEY_ENV_NAMES[name]
    from_env = os.environ.get(env_name)
    if from_env:
        return from_env
    return stack_secrets(workdir, stack)[name]


def stack_secrets(workdir: Path, stack: str) -> dict[str, str]:
    """Every key of `stack`, generating and storing (0600) the ones not yet made.

    Environment values win over stored ones and are never written to disk.
    """
    path = keys_path(workdir, stack)
    resolved = {n: os.environ[e] for n, e in KEY_ENV_NAMES.items() if os.environ.get(e)}
    if len(resolved) == len(KEY_ENV_NAMES):
        return resolved  # all from the environment (CI): nothing to generate or store
    try:
        private_dir(path.parent)
        lock_fd = os.open(path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        with os.fdopen(lock_fd, "r+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            stored = _read(path)
            missing = [n for n in KEY_ENV_NAMES if n not in stored]
            if missing:
                stored.update({n: secrets.token_urlsafe(32) for n in missing})
                text = json.dumps(stored, indent=2, sort_keys=True)
                write_atomic(path, text, mode=0o600, fsync=True)
    except OSError as exc:
        raise SkyformError(f"cannot write keys file {path}: {exc.strerror or exc}") from None
    return {**stored, **resolved}


def _read(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise SkyformError(f"cannot read keys file {path}: {exc}") from None
    if not isinstance(data, dict):
        raise SkyformError(f"keys file {path} is not a JSON object")
    return {k: v for k, v in data.items() if isinstance(v, str)}
