"""Field descriptions from the models' docstrings, for the JSON schemas we write.

The models document their fields with attribute docstrings (the string under a field).
pydantic can read them as it builds each model (`use_attribute_docstrings`), but that parses
the models' source in every process that imports them, the agent's included, where nothing
reads a description. Only the schemas we write need them (the CRDs, the broker's OpenAPI
document), so they are read here, then. Unlike pydantic's, a field a subclass declares again
without a docstring keeps its base's.
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
    a field wins over its bases'. A class whose source cannot be read (made at run time, a
    parametrised generic, nested where dedent cannot parse it) adds none."""
    found: dict[str, str] = {}
    for cls in reversed(model.__mro__):
        if not issubclass(cls, BaseModel) or cls is BaseModel:
            continue
        definition = _class_definition(cls)
        for statement, after in pairwise(definition.body if definition else []):
            if (isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name)
                    and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                    and isinstance(after.value.value, str)):
                found[statement.target.id] = inspect.cleandoc(after.value.value)
    return found


def _class_definition(cls: type) -> ast.ClassDef | None:
    try:
        statements = ast.parse(textwrap.dedent(inspect.getsource(cls))).body
    except (OSError, TypeError, SyntaxError):  # (no source, or one dedent cannot make whole)
        return None
    definition = statements[0] if statements else None
    return definition if isinstance(definition, ast.ClassDef) else None


class WithFieldDocstrings(GenerateJsonSchema):
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
            alias = (info.serialization_alias if self.mode == "serialization"
                     else info.validation_alias)
            if not isinstance(alias, str):  # (AliasPath, AliasChoices: the plain alias names it)
                alias = info.alias
            key = (alias or name) if self.by_alias else name
            if key in properties and "description" not in properties[key]:
                properties[key]["description"] = doc
        return json_schema
