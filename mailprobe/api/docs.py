"""The API's own description: /openapi.json, and /docs rendered from it as one HTML page.

Owns the OpenAPI document around the handlers' docstring operations (schemas come from the
types themselves) and the reference page, which loads nothing from outside: a closed network
cannot reach a CDN.
"""

from __future__ import annotations

import html
from typing import Any

from pydantic import TypeAdapter
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.schemas import SchemaGenerator

from engine.result import VerificationResult

from .requests import MAX_EMAIL_LENGTH, MAX_TIMEOUT_MS, MIN_TIMEOUT_MS, BatchRequest, VerifyRequest


class Reference:
    """The /openapi.json and /docs handlers; the description is built from the app's routes."""

    def __init__(self) -> None:
        self._schemas = SchemaGenerator(_openapi_base())
        self._spec: dict[str, Any] | None = None

    def routes(self) -> list[Route]:
        """Return the two reference routes, left out of the description they serve."""
        return [
            Route("/openapi.json", self.openapi, methods=["GET"], include_in_schema=False),
            Route("/docs", self.docs, methods=["GET"], include_in_schema=False),
        ]

    def _openapi_spec(self, request: Request) -> dict[str, Any]:
        # Built once: parsing the docstrings' YAML takes tens of milliseconds.
        if self._spec is None:
            self._spec = self._schemas.get_schema(routes=request.app.routes)
        return self._spec

    async def openapi(self, request: Request) -> Response:
        """Return the OpenAPI 3.1 description of this API."""
        return JSONResponse(self._openapi_spec(request))

    async def docs(self, request: Request) -> Response:
        """Return the API reference as one self-contained HTML page (no external assets)."""
        return HTMLResponse(docs_page(self._openapi_spec(request)))


def _openapi_base() -> dict[str, Any]:
    """Return the OpenAPI document without paths; schemas come from the types themselves."""
    ref = "#/components/schemas/{model}"
    result = TypeAdapter(VerificationResult).json_schema(ref_template=ref, mode="serialization")
    schemas: dict[str, Any] = result.pop("$defs")
    result["properties"]["cached"] = {
        "type": "boolean", "description": "Answered from the result cache."
    }  # fmt: skip
    result["properties"]["partial"] = {
        "type": "boolean",
        "description": "The deadline passed before the SMTP answer: unknown/timeout with what "
        "is known so far; the verification goes on in the background.",
    }
    result["required"] += ["cached", "partial"]
    schemas["Result"] = result
    for model in (VerifyRequest, BatchRequest):
        schema = model.model_json_schema(ref_template=ref)
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    schemas["Error"] = {
        "type": "object",
        "required": ["error", "message"],
        "properties": {
            "error": {"type": "string", "examples": ["invalid_request"]},
            "message": {"type": "string"},
            "problems": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
                },
            },
        },
    }
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "mailprobe",
            "version": "1",
            "description": "Real-time email address verification, without sending mail.",
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
            "parameters": {
                "email": {
                    "name": "email",
                    "in": "query",
                    "required": True,
                    "description": f"The address, at most {MAX_EMAIL_LENGTH} characters.",
                    "schema": {"type": "string", "maxLength": MAX_EMAIL_LENGTH},
                },
                "timeout_ms": {
                    "name": "timeout_ms",
                    "in": "query",
                    "required": False,
                    "description": "Longest wait for the SMTP answer, in milliseconds "
                    "(default api.default_timeout_ms).",
                    "schema": {
                        "type": "integer",
                        "minimum": MIN_TIMEOUT_MS,
                        "maximum": MAX_TIMEOUT_MS,
                    },
                },
            },  # fmt: skip
            "responses": {
                "Result": {
                    "description": "The result (design.md's JSON plus `cached` and `partial`).",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Result"}}
                    },
                },
                "Error": {
                    "description": "The request was refused; see `message`.",
                    "content": error,
                },
                "RateLimited": {
                    "description": "Too many addresses this minute for this key.",
                    "headers": {
                        "Retry-After": {
                            "description": "Seconds until a retry can succeed.",
                            "schema": {"type": "integer"},
                        }
                    },
                    "content": error,
                },
            },
        },
    }


def _ref_name(node: Any) -> str:
    if isinstance(node, dict) and "$ref" in node:
        return str(node["$ref"]).rsplit("/", 1)[-1]
    return ""


def _resolved(node: dict[str, Any], section: dict[str, Any]) -> dict[str, Any]:
    """Return the component a `$ref` node points to, or the node itself."""
    return section.get(_ref_name(node), node)


def _parameters_html(op: dict[str, Any], components: dict[str, Any]) -> str:
    e = html.escape
    params = [_resolved(p, components["parameters"]) for p in op.get("parameters", [])]
    if not params:
        return ""
    rows = "".join(
        f"<tr><td><code>{e(p['name'])}</code></td><td>{e(p['in'])}</td>"
        f"<td>{'yes' if p.get('required') else 'no'}</td><td>{e(p.get('description', ''))}</td>"
        "</tr>"
        for p in params
    )
    return f"<table><tr><th>parameter</th><th>in</th><th>required</th><th></th></tr>{rows}</table>"


def _operation_html(method: str, path: str, op: dict[str, Any], spec: dict[str, Any]) -> str:
    """Return one operation as an HTML section."""
    e = html.escape
    components = spec["components"]
    body = op.get("requestBody", {}).get("content", {}).get("application/json", {})
    body_name = _ref_name(body.get("schema"))
    body_html = ""
    if body_name:
        fields = components["schemas"][body_name].get("properties", {})
        listed = ", ".join(f"<code>{e(name)}</code>" for name in fields)
        body_html = f"<p>JSON body <b>{e(body_name)}</b>: {listed}</p>"
    answers = "".join(
        f"<li><code>{e(code)}</code> "
        f"{e(_resolved(answer, components['responses']).get('description', ''))}</li>"
        for code, answer in op.get("responses", {}).items()
    )
    return (
        f"<section><h2><span class=m>{e(method.upper())}</span> <code>{e(path)}</code></h2>"
        f"<p><b>{e(op.get('summary', ''))}</b></p><p>{e(op.get('description', ''))}</p>"
        f"{_parameters_html(op, components)}{body_html}<ul>{answers}</ul></section>"
    )


def docs_page(spec: dict[str, Any]) -> str:
    """Return the API reference as HTML rendered here: a closed network cannot load a CDN."""
    sections = "".join(
        _operation_html(method, path, op, spec)
        for path, operations in spec["paths"].items()
        for method, op in operations.items()
    )
    result = spec["components"]["schemas"]["Result"]["properties"]
    result_fields = ", ".join(f"<code>{html.escape(name)}</code>" for name in result)
    return (
        "<!doctype html><html><head><meta charset=utf-8><title>mailprobe API</title><style>"
        "body{font:15px/1.5 system-ui,sans-serif;max-width:56em;margin:2em auto;padding:0 1em}"
        "section{border-top:1px solid #ccc;padding:.5em 0}.m{background:#246;color:#fff;"
        "padding:0 .4em;border-radius:3px}table{border-collapse:collapse}"
        "td,th{border:1px solid #ddd;padding:.2em .5em;text-align:left}</style></head><body>"
        f"<h1>mailprobe API</h1><p>{html.escape(spec['info']['description'])} Authenticate "
        "with <code>Authorization: Bearer &lt;key&gt;</code> or <code>X-API-Key</code> when "
        'keys are configured. Errors are JSON: <code>{"error", "message"}</code>. '
        'The machine-readable description is at <a href="openapi.json">/openapi.json</a>.</p>'
        f"<p>A result carries: {result_fields}.</p>{sections}</body></html>"
    )
