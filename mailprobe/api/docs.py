"""The API's own description: /openapi.json, and /docs rendering it with Swagger UI.

Owns the OpenAPI document around the handlers' docstring operations (schemas come from the
types themselves) and the reference page. Swagger UI's assets come from the `swagger-ui-py`
package and are served from here: a closed network cannot reach a CDN, and nothing on the
page loads from outside (its validator badge, which would, is switched off).
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.schemas import SchemaGenerator
from starlette.staticfiles import StaticFiles

from mailprobe.engine import VerificationResult

from .requests import MAX_EMAIL_LENGTH, MAX_TIMEOUT_MS, MIN_TIMEOUT_MS, BatchRequest, VerifyRequest


class Reference:
    """The /openapi.json and /docs handlers; the description is built from the app's routes."""

    def __init__(self) -> None:
        self._schemas = SchemaGenerator(_openapi_base())
        self._spec: dict[str, Any] | None = None

    def routes(self) -> list[BaseRoute]:
        """Return the reference routes and Swagger UI's assets, left out of the description."""
        return [
            Route("/openapi.json", self.openapi, methods=["GET"], include_in_schema=False),
            Route("/docs", self.docs, methods=["GET"], include_in_schema=False),
            Mount("/docs/assets", StaticFiles(directory=swagger_ui_assets()), name="docs-assets"),
        ]

    def _openapi_spec(self, request: Request) -> dict[str, Any]:
        # Built once: parsing the docstrings' YAML takes tens of milliseconds.
        if self._spec is None:
            self._spec = _tagged(self._schemas.get_schema(routes=request.app.routes))
        return self._spec

    async def openapi(self, request: Request) -> Response:
        """Return the OpenAPI 3.1 description of this API."""
        return JSONResponse(self._openapi_spec(request))

    async def docs(self, request: Request) -> Response:
        """Return the API reference: Swagger UI, served from here, reading /openapi.json."""
        return HTMLResponse(DOCS_PAGE, headers={"Cache-Control": "no-cache"})


def _tagged(spec: dict[str, Any]) -> dict[str, Any]:
    """Return `spec` with each operation in a group: the reference lists them under its name."""
    for path, operations in spec.get("paths", {}).items():
        tag = "Verification" if path.startswith("/v1/") else "Operations"
        for operation in operations.values():
            operation.setdefault("tags", [tag])
    spec["tags"] = [
        {"name": "Verification", "description": "Verify addresses, one or up to 100 at a time."},
        {"name": "Operations", "description": "Liveness, readiness and metrics."},
    ]
    return spec


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
    # Docstrings become descriptions; these two speak of our own files, not of the API.
    result["description"] = "The answer for one address: its status, why, and every check."
    schemas["Reason"]["description"] = (
        "Why the status is what it is; the README's table lists each reason with its status."
    )
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
            "description": "Real-time email address verification, without sending mail. When "
            "the server has API keys, send one as `Authorization: Bearer <key>` or "
            "`X-API-Key: <key>` (Authorize, below).",
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
                    "description": "The verification result, plus `cached` and `partial`.",
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


def swagger_ui_assets() -> Path:
    """Return the folder of Swagger UI's files inside the installed `swagger-ui-py` package."""
    return Path(str(importlib.resources.files("swagger_ui") / "static"))


#: The reference page: Swagger UI's shell. Paths are relative, so the API also works behind a
#: proxy that serves it under a prefix. "Try it out" sends real requests to this API.
DOCS_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>mailprobe API reference</title>
<link rel="icon" type="image/png" href="docs/assets/favicon-32x32.png">
<link rel="stylesheet" href="docs/assets/swagger-ui.css">
<style>body{margin:0} .swagger-ui .info{margin:30px 0 20px}</style>
</head>
<body>
<div id="swagger-ui"></div>
<script src="docs/assets/swagger-ui-bundle.js"></script>
<script>
window.ui = SwaggerUIBundle({
  url: "openapi.json",
  dom_id: "#swagger-ui",
  layout: "BaseLayout",
  deepLinking: true,
  validatorUrl: null,
  defaultModelsExpandDepth: 0,
  displayRequestDuration: true,
  presets: [SwaggerUIBundle.presets.apis],
});
</script>
</body>
</html>
"""
