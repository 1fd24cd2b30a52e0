"""What environment a process skyform starts begins with: an allowlist, never a copy.

Why: whatever the deployer's shell holds (a CI credential, another app's
secret, the stack's own keys) would otherwise be inherited by the gateway, by
every runner and by every installer, and be readable in their
`/proc/<pid>/environ`. Each kind of process gets only what it needs:

- `runtime_env`: what any Python process needs to run at all (PATH, locale,
  time zone, the dynamic loader's path for GPU drivers). Runners get this, plus
  their app's `env`, and nothing else; their secrets and keys come on a pipe.
- `tool_env`: `runtime_env` plus what builds and the gateway need to do their
  job: HOME, package-index settings (`PIP_*`, `UV_*`), proxies and CA bundles,
  cache locations and skyform's own settings (`SKYFORM_CACHE_DIR` ...; never the
  stack's keys, which travel on a pipe).

Anything else reaches an app only when the stack file names it: `env: {X:
"${X}"}` for a plain value, `secrets: [X]` for a sensitive one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

RUNTIME_VARS = ("PATH", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "TZ", "LD_LIBRARY_PATH")
TOOL_VARS = (
    "HOME",
    "USER",
    "LOGNAME",
    "TMPDIR",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "PYENV_ROOT",
    "NO_COLOR",
    # skyform's own settings (not its keys, not a state URL that may hold a password)
    "SKYFORM_CACHE_DIR",
    "SKYFORM_ENV_INSTALLER",
    "SKYFORM_QUEUE_FSYNC",
    "SKYFORM_RESULT_TTL_S",
    "SKYFORM_ALLOW_CPU_FALLBACK",
    "SKYFORM_RUNNER_USER",
    "SKYFORM_WHEEL",
)
TOOL_PREFIXES = ("PIP_", "UV_", "XDG_")
# The stack's keys: never in any environment skyform builds.
KEY_VARS = frozenset(
    {"SKYFORM_BUNDLE_KEY", "SKYFORM_ADMIN_TOKEN", "SKYFORM_RUNNER_TOKEN", "SKYFORM_API_KEY"}
)
_DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


def runtime_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables any process needs to run, taken from `environ` (default: ours)."""
    source = os.environ if environ is None else environ
    env = {k: source[k] for k in RUNTIME_VARS if source.get(k)}
    env.setdefault("PATH", _DEFAULT_PATH)
    return env


def tool_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """`runtime_env` plus what installers and the gateway need (see the module docstring)."""
    source = os.environ if environ is None else environ
    env = runtime_env(source)
    for name, value in source.items():
        if name in KEY_VARS:
            continue
        if name in TOOL_VARS or name.startswith(TOOL_PREFIXES):
            env[name] = value
    return env
