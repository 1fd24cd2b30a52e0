"""FastAPI routes for an App's endpoints, and the OpenAPI schema they produce.

One function builds the routes so the schema stored in a bundle (used by the
gateway's playground while no runner is up) is exactly the one the runner
serves. FastAPI is imported lazily: `import skyform` stays light.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from skyform.app import App, Endpoint, app_endpoints

if TYPE_CHECKING:
    from fastapi import FastAPI

# Called with (endpoint, validated input model or None); returns the endpoint's result.
Invoke = Callable[[Endpoint, BaseModel | None], Awaitable[Any]]


def add_endpoint_routes(api: FastAPI, endpoints: list[Endpoint], invoke: Invoke) -> None:
    """Mount one route per endpoint on `api`; each validates its input, then calls `invoke`."""
    for ep in endpoints:
        api.add_api_route(
            ep.path,
            _handler(ep, invoke),
            methods=[ep.spec.method],
            name=ep.name,
            response_model=_response_model(ep.output_type),
            summary=ep.name,
            description=inspect.getdoc(ep.func) or None,
        )


def endpoint_api(
    cls: type[App], invoke: Invoke, endpoints: list[Endpoint] | None = None
) -> FastAPI:
    """The FastAPI app of an App's endpoints; the runner serves it, bundles store its schema.

    Both go through here so the schema a bundle carries is the one its runner serves.
    No /docs pages: the gateway's playground is the human interface.
    """
    from fastapi import FastAPI

    api = FastAPI(
        title=cls.__name__, version="1", openapi_url="/openapi.json", docs_url=None, redoc_url=None
    )
    add_endpoint_routes(api, app_endpoints(cls) if endpoints is None else endpoints, invoke)
    return api


def openapi_schema(cls: type[App], title: str | None = None) -> dict[str, Any]:
    """The OpenAPI document of an App's endpoints, as its runner will serve it."""

    async def never(_ep: Endpoint, _body: BaseModel | None) -> Any:
        raise RuntimeError("schema-only app")

    api = endpoint_api(cls, never)
    if title is not None:
        api.title = title
    return api.openapi()


def _handler(ep: Endpoint, invoke: Invoke) -> Callable[..., Awaitable[Any]]:
    if ep.input_model is None:

        async def no_input() -> Any:
            return await invoke(ep, None)

        return no_input

    model = ep.input_model

    async def with_input(body: BaseModel) -> Any:
        return await invoke(ep, body)

    # FastAPI reads the annotation to validate the body and build the schema.
    with_input.__annotations__ = {"body": model, "return": Any}
    return with_input


def _response_model(output: Any) -> Any:
    if output is inspect.Signature.empty or output is Any or output is None:
        return None
    return output
