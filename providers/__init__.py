"""`skyform.providers`: how runners and gateways come to exist.

Kept light: each provider module is imported only when a stack uses it
(SkyPilot takes seconds to import and is an optional extra).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from skyform.errors import SkyformError
from skyform.providers.base import Provider
from skyform.suggest import did_you_mean

PROVIDER_NAMES = ("local", "skypilot")


def provider_name(config: str | dict[str, Any]) -> str:
    """`"local"` or `{"skypilot": {...}}` -> the provider's name."""
    name = config if isinstance(config, str) else next(iter(config), "")
    if name not in PROVIDER_NAMES:
        raise SkyformError(f'unknown provider "{name}"{did_you_mean(name, PROVIDER_NAMES)}')
    return name


# Where each provider's class lives: imported only when a stack names it.
PROVIDER_CLASSES = {
    "local": ("skyform.providers.local", "LocalProvider"),
    "skypilot": ("skyform.providers.skypilot", "SkyPilotProvider"),
}


def provider_class(config: str | dict[str, Any]) -> type[Provider]:
    """The class of the provider a stack's `provider:` entry names.

    Its capabilities (`runs_on_this_host`) answer questions about a stack without
    starting anything; importing it stays cheap (SkyPilot itself is imported only
    when a method needs it).
    """
    module, name = PROVIDER_CLASSES[provider_name(config)]
    cls: type[Provider] = vars(importlib.import_module(module))[name]
    return cls


def create_provider(config: str | dict[str, Any], *, stack: str, runtime_dir: Path) -> Provider:
    """Build the provider a stack's `provider:` entry names.

    `runtime_dir` is the per-stack directory where the provider keeps its
    bookkeeping (runner logs, pid files, rendered task files).
    """
    name = provider_name(config)
    options = (config.get(name) or {}) if isinstance(config, dict) else {}
    if name == "local":
        from skyform.providers.local import LocalProvider

        return LocalProvider(stack=stack, runtime_dir=Path(runtime_dir), **options)
    from skyform.providers.skypilot import SkyPilotProvider

    return SkyPilotProvider(stack=stack, runtime_dir=Path(runtime_dir), **options)
