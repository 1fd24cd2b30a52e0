"""The playground page at `/{app}/playground`.

Generated from the OpenAPI schema stored in the app's bundle, so it works while
the app has no runner up (the first call it makes starts one). The page calls
the app through the gateway's queue routes and shows queue position, result
and errors; for a private app the user pastes the API key into the page.
"""

from __future__ import annotations

import html
import json
from functools import cache
from importlib import resources
from typing import Any


@cache
def _asset(name: str) -> str:
    return resources.files("skyform.runtime").joinpath("static", name).read_text()


def render_playground(app: str, auth: str, openapi: dict[str, Any]) -> str:
    """The page for `app`: the template with its schema and script inlined."""
    config = {"app": app, "auth": auth, "openapi": openapi}
    # Inside <script>, "</" could close the tag: escape it in the JSON.
    config_json = json.dumps(config).replace("</", "<\\/")
    return (
        _asset("playground.html")
        .replace("{{title}}", html.escape(f"{app} · skyform playground"))
        .replace("{{app}}", html.escape(app))
        .replace("{{config}}", config_json)
        .replace("{{script}}", _asset("playground.js"))
    )
