"""The base of every model: camelCase on the wire, snake_case in Python, unknown fields refused."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
    )  # (a field's docstring is its description in the schemas: api.docstrings)

    def wire(self) -> dict[str, Any]:
        """The JSON-ready form the API server and the broker speak (camelCase, no nulls)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)
