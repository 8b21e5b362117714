"""YAML files that people write by hand, checked against a pydantic model: every error names
the file and the line (and the field)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

Model = TypeVar("Model", bound=BaseModel)


class YamlFileError(ValueError):
    """A file that cannot be used: the message starts with FILE:LINE."""


def node_line(node: yaml.Node, path: tuple[str | int, ...]) -> int:
    """The line of the deepest node of `path` found in the YAML tree (1-based)."""
    return _resolve(node, path)[0]


def _resolve(node: yaml.Node, path: tuple[str | int, ...]) -> tuple[int, tuple[str | int, ...]]:
    """The line of `path` in the tree, and the path as the file spells it: a part that is not
    in the file is dropped (a union's tag that pydantic adds) unless it is the last (a field
    that is missing)."""
    line = node.start_mark.line + 1
    shown: tuple[str | int, ...] = ()
    for depth, part in enumerate(path):
        match: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if k.value == part), None)
            if match is None and depth < len(path) - 1 and isinstance(path[depth + 1], str):
                continue
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(
                node.value):
            match = node.value[part]
        shown += (part,)
        if match is None:
            return line, shown + path[depth + 1:]
        node, line = match, match.start_mark.line + 1
    return line, shown


def field_path(path: tuple[str | int, ...]) -> str:
    """`roles[0].image` from ("roles", 0, "image")."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def parse(path: Path, text: str | None = None) -> tuple[Any, yaml.Node | None]:
    """The document and its node tree (for line numbers)."""
    if text is None:
        try:
            text = path.read_text()
        except OSError as error:
            raise YamlFileError(f"{path}: {error.strerror}") from error
    try:
        return yaml.safe_load(text), yaml.compose(text)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise YamlFileError(f"{where}: {error.problem}") from error


def validation_message(path: Path, node: yaml.Node, error: ValidationError,
                       prefix: tuple[str | int, ...] = ()) -> str:
    """FILE:LINE: field: what is wrong (and how many more problems there are)."""
    first = error.errors()[0]
    line, loc = _resolve(node, prefix + tuple(first["loc"]))
    more = error.error_count() - 1
    return (f"{path}:{line}: {field_path(loc) + ': ' if loc else ''}{first['msg']}"
            + (f" (and {more} more)" if more else ""))


def load_model(path: Path, model: type[Model]) -> Model:
    document, node = parse(path)
    if node is None:
        raise YamlFileError(f"{path}:1: the file is empty")
    try:
        return model.model_validate(document)
    except ValidationError as error:
        raise YamlFileError(validation_message(path, node, error)) from error
