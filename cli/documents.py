"""Cluster documents as users write them: YAML (a ClusterLaunch, or just its spec) or Nimbus
cluster XML. Errors name the file and line (and the field)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from api import API_VERSION
from api.launch import ClusterLaunchSpec


class DocumentError(ValueError):
    """A document that cannot be launched: the message starts with FILE:LINE."""


def _node_line(node: yaml.Node, path: tuple[str | int, ...]) -> int:
    """The line of the deepest node of `path` found in the YAML tree (1-based)."""
    line = node.start_mark.line + 1
    for part in path:
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if k.value == part), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(
                node.value):
            match = node.value[part]
        else:
            match = None
        if match is None:
            break
        node, line = match, match.start_mark.line + 1
    return line


def _field(path: tuple[str | int, ...]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def load_yaml(path: Path) -> dict[str, Any]:
    text = path.read_text()
    try:
        node = yaml.compose(text)
        document = yaml.safe_load(text)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise DocumentError(f"{where}: {error.problem}") from error
    if not isinstance(document, dict) or node is None:
        raise DocumentError(f"{path}:1: expected a ClusterLaunch (or its spec) as a mapping")
    prefix: tuple[str, ...] = ()
    if "kind" in document:
        if document.get("kind") != "ClusterLaunch":
            raise DocumentError(f"{path}:{_node_line(node, ('kind',))}: kind must be "
                                f"ClusterLaunch, not {document.get('kind')!r}")
        prefix = ("spec",)
        spec = document.get("spec")
    else:
        spec, document = document, {"apiVersion": API_VERSION, "kind": "ClusterLaunch",
                                    "metadata": {}, "spec": document}
    try:
        ClusterLaunchSpec.model_validate(spec)
    except ValidationError as error:
        first = error.errors()[0]
        loc = prefix + tuple(first["loc"])
        raise DocumentError(f"{path}:{_node_line(node, loc)}: {_field(loc)}: {first['msg']}"
                            + (f" (and {error.error_count() - 1} more)"
                               if error.error_count() > 1 else "")) from error
    document.setdefault("metadata", {})
    return document


def load(path: Path) -> dict[str, Any]:
    """A ClusterLaunch document from a YAML or Nimbus XML file."""
    if not path.is_file():
        raise DocumentError(f"{path}: no such file")
    if path.suffix.lower() == ".xml":
        from cli.nimbus import NimbusDocumentError, load_cluster_xml

        try:
            spec = load_cluster_xml(path)
        except NimbusDocumentError as error:
            raise DocumentError(str(error)) from error
        return {"apiVersion": API_VERSION, "kind": "ClusterLaunch", "metadata": {},
                "spec": spec.wire()}
    return load_yaml(path)


def dns_name(text: str) -> str:
    """A DNS-1123 name made from any text (a file's stem, say)."""
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return name[:50] or "cluster"
