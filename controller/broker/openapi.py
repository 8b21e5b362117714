"""The broker's OpenAPI document, generated from the same models the handlers validate with."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from api.protocol import Context, Identity, Pending, Problem, Report


def _json(schema_ref: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema_ref}}


def document() -> dict[str, Any]:
    models: list[type[BaseModel]] = [Identity, Report, Context, Pending, Problem]
    refs, schemas = models_json_schema(
        [(m, "validation") for m in models], by_alias=True,
        ref_template="#/components/schemas/{model}",
    )
    ref = {m: refs[(m, "validation")] for m in models}

    def problem(description: str) -> dict[str, Any]:
        return {"description": description, "content": _json(ref[Problem])}

    errors = {
        "400": problem("Malformed JSON or a body that does not match the schema"),
        "401": problem("Missing, unknown or revoked bootstrap token"),
        "403": problem("The token belongs to another member or cluster"),
        "409": problem("The member already reported"),
        "413": problem("Body larger than the limit"),
    }
    security: list[dict[str, list[str]]] = [{"bootstrapToken": []}]
    member_header = {"name": "OneClick-Member", "in": "header", "required": True,
                     "description": "namespace/cluster/member of the bootstrap",
                     "schema": {"type": "string"}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "OneClick Clusters context broker", "version": "v1",
                 "description": "What the agent inside every member of a launch speaks."},
        "components": {
            "schemas": schemas.get("$defs", {}),
            "securitySchemes": {"bootstrapToken": {"type": "http", "scheme": "bearer"}},
        },
        "paths": {
            "/v1/identity": {"post": {
                "summary": "Provide this member's identity (idempotent)",
                "security": security, "parameters": [member_header],
                "requestBody": {"required": True, "content": _json(ref[Identity])},
                "responses": {"200": {"description": "Stored in the member's status"}, **errors},
            }},
            "/v1/context": {"get": {
                "summary": "Retrieve the context; long poll until complete",
                "security": security,
                "parameters": [member_header, {
                    "name": "wait", "in": "query", "required": False,
                    "description": "Seconds to hold the request while incomplete (0 to 60)",
                    "schema": {"type": "number", "minimum": 0, "maximum": 60}}],
                "responses": {
                    "200": {"description": "The complete context", "content": _json(ref[Context])},
                    "202": {"description": "Not complete yet; retry after Retry-After seconds",
                            "content": _json(ref[Pending])},
                    "410": problem("The launch or the member no longer exists"),
                    **errors,
                },
            }},
            "/v1/report": {"post": {
                "summary": "Report how contextualization ended",
                "security": security, "parameters": [member_header],
                "requestBody": {"required": True, "content": _json(ref[Report])},
                "responses": {"200": {"description": "Stored in the member's status"}, **errors},
            }},
        },
    }
