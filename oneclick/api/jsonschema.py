"""JSON schemas of the models, each field described by the docstring under it.

The models document their fields with attribute docstrings. pydantic can read them as it
builds each model (`use_attribute_docstrings`), but that parses the models' source in every
process that imports them, the agent's included, where nothing reads a description. Only the
schemas we write need them (the CRDs, the broker's OpenAPI document), so they are read here.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from functools import cache
from itertools import pairwise

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema


@cache
def field_docstrings(model: type[BaseModel]) -> dict[str, str]:
    """The docstring under each field of `model`, by field name: a class's own docstring for
    a field wins over its bases'."""
    found: dict[str, str] = {}
    for cls in reversed(model.__mro__):
        if not issubclass(cls, BaseModel) or cls is BaseModel:
            continue
        [definition] = ast.parse(textwrap.dedent(inspect.getsource(cls))).body
        assert isinstance(definition, ast.ClassDef)
        for statement, after in pairwise(definition.body):
            if (isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name)
                    and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                    and isinstance(after.value.value, str)):
                found[statement.target.id] = inspect.cleandoc(after.value.value)
    return found


class DescribedFields(GenerateJsonSchema):
    """pydantic's JSON schema, each field without a description of its own described by its
    docstring."""

    def model_schema(self, schema: core_schema.ModelSchema) -> JsonSchemaValue:
        json_schema = super().model_schema(schema)
        model: type[BaseModel] = schema["cls"]
        properties = json_schema.get("properties", {})
        for name, doc in field_docstrings(model).items():
            info = model.model_fields.get(name)
            if info is None:
                continue
            key = (info.alias or name) if self.by_alias else name
            if key in properties and "description" not in properties[key]:
                properties[key]["description"] = doc
        return json_schema
