"""The broker's OpenAPI document, generated from the same models the handlers validate with."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from oneclick.api.docstrings import WithFieldDocstrings
from oneclick.api.protocol import (
    PROTOCOL_HEADER,
    PROTOCOL_VERSION,
    Context,
    Identity,
    Pending,
    Problem,
    Report,
)


def _json(schema_ref: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema_ref}}


def document() -> dict[str, Any]:
    models: list[type[BaseModel]] = [Identity, Report, Context, Pending, Problem]
    refs, schemas = models_json_schema(
        [(m, "validation") for m in models], by_alias=True,
        ref_template="#/components/schemas/{model}", schema_generator=WithFieldDocstrings,
    )
    ref = {m: refs[(m, "validation")] for m in models}

    def problem(description: str) -> dict[str, Any]:
        return {"description": description, "content": _json(ref[Problem])}

    errors = {
        "400": problem("Malformed JSON, no OneClick-Member header, or a bad wait"),
        "422": problem("JSON that does not match the schema (the message names the field), "
                       "a name or address another member of the launch already claims, an "
                       "FQDN other than the host name under the launch's domain, or a value "
                       "the API server cannot store"),
        "401": problem("Missing, unknown or revoked bootstrap token (revoked once the member "
                       "or its launch is terminating, terminated, expired or gone)"),
        "403": problem("The token belongs to another member or cluster"),
        "408": problem("The body did not arrive in time"),
        "409": problem("The member already reported"),
        "413": problem("Body larger than the limit"),
        "429": problem("Too many identity changes (20 per member), or another write for this "
                       "member in progress (retry after Retry-After seconds)"),
        "503": problem("The broker is starting or cannot store this right now; retry after "
                       "Retry-After seconds"),
    }
    security: list[dict[str, list[str]]] = [{"bootstrapToken": []}]
    member_header = {"name": "OneClick-Member", "in": "header", "required": True,
                     "description": "namespace/cluster/member of the bootstrap",
                     "schema": {"type": "string", "maxLength": 1024}}
    protocol_header = {"name": PROTOCOL_HEADER, "in": "header", "required": False,
                       "description": f"The protocol version the agent speaks (absent: 1); "
                                      f"any other than {PROTOCOL_VERSION} is refused (400)",
                       "schema": {"type": "string", "maxLength": 64}}
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
                "security": security, "parameters": [member_header, protocol_header],
                "requestBody": {"required": True, "content": _json(ref[Identity])},
                "responses": {"200": {"description": "Stored in the member's status"}, **errors},
            }},
            "/v1/context": {"get": {
                "summary": "Retrieve the context; long poll until complete",
                "security": security,
                "parameters": [member_header, protocol_header, {
                    "name": "wait", "in": "query", "required": False,
                    "description": "Seconds to hold the request while incomplete (0 to 60)",
                    "schema": {"type": "number", "minimum": 0, "maximum": 60}}, {
                    "name": "If-None-Match", "in": "header", "required": False,
                    "description": "The ETag of the context the agent has: hold the request "
                                   "until the complete context differs (members were added or "
                                   "removed), then answer it, else 304 after `wait` seconds",
                    "schema": {"type": "string"}}],
                "responses": {
                    "200": {"description": "The complete context (its version in ETag)",
                            "content": _json(ref[Context])},
                    "304": {"description": "The context is still the one named by "
                                           "If-None-Match"},
                    "202": {"description": "Not complete yet; retry after Retry-After seconds",
                            "content": _json(ref[Pending])},
                    "410": problem("The member is no longer part of its launch (scaled down)"),
                    **errors,
                },
            }},
            "/v1/report": {"post": {
                "summary": "Report how contextualization ended",
                "security": security, "parameters": [member_header, protocol_header],
                "requestBody": {"required": True, "content": _json(ref[Report])},
                "responses": {"200": {"description": "Stored in the member's status"}, **errors},
            }},
            "/v1/agent": {"get": {
                "summary": "The agent as one file (a zipapp run with the member's python3)",
                "security": security, "parameters": [member_header, protocol_header],
                "responses": {
                    "200": {"description": "The file; Content-Digest (RFC 9530) carries its "
                                           "SHA-256, to check before running it",
                            "content": {"application/zip": {"schema": {
                                "type": "string", "contentMediaType": "application/zip"}}}},
                    "404": problem("This broker serves no agent (OCC_AGENT_BUNDLE is unset)"),
                    **errors,
                },
            }},
        },
    }
