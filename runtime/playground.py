"""The playground page at `/{app}/playground`.

Generated from the OpenAPI schema stored in the app's bundle, so it works while
the app has no runner up (the first call it makes starts one). The page calls
the app through the gateway's queue routes and shows queue position, result
and errors; multipart endpoints get file inputs, and streaming endpoints
(`x-skyform-stream` in the schema) are called on the synchronous route so each
event shows as it arrives. A private app's page holds nothing of the app but its name: the
user pastes the API key, and the page fetches the schema with it from
`/{app}/openapi.json` (which needs the key, like every other route of the app).

Data goes into the page in one pass (placeholders in the template are filled
once; nothing inserted is scanned again) and JSON is embedded with `<`, `>`,
`&` and the JavaScript line separators escaped, so no docstring or schema text
can close the `<script>` element, open an HTML comment or reach the page as markup.
"""

from __future__ import annotations

import html
import json
import re
from functools import cache
from importlib import resources
from typing import Any

_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")
_JSON_ESCAPES = {
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}


@cache
def _asset(name: str) -> str:
    return resources.files("skyform.runtime").joinpath("static", name).read_text()


def embed_json(value: Any) -> str:
    """`value` as JSON safe inside any HTML element (`<script>` included)."""
    text = json.dumps(value)
    return re.sub("[<>&\u2028\u2029]", lambda m: _JSON_ESCAPES[m.group(0)], text)


def fill(template: str, values: dict[str, str]) -> str:
    """`{{name}}` placeholders of `template` replaced by `values`, in one pass."""
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def render_playground(app: str, auth: str, openapi: dict[str, Any]) -> str:
    """The page for `app`: the template with its script and, for a public app, its schema."""
    config: dict[str, Any] = {"app": app, "auth": auth}
    if auth == "public":
        config["openapi"] = openapi
    return fill(
        _asset("playground.html"),
        {
            "title": html.escape(f"{app} · skyform playground"),
            "app": html.escape(app),
            "config": embed_json(config),
            "script": _asset("playground.js"),
        },
    )
