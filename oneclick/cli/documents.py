"""Cluster documents as users write them: YAML (a ClusterLaunch, or just its spec) or Nimbus
cluster XML. Errors name the file and line (and the field)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from oneclick.api import API_VERSION
from oneclick.api.launch import ClusterLaunchSpec
from oneclick.kits import yamlfile


class DocumentError(yamlfile.YamlFileError):
    """A document that cannot be launched: the message starts with FILE:LINE."""


def load_yaml(path: Path) -> dict[str, Any]:
    try:
        document, node = yamlfile.parse(path)
    except yamlfile.YamlFileError as error:
        raise DocumentError(str(error)) from error
    if not isinstance(document, dict) or node is None:
        raise DocumentError(f"{path}:1: expected a ClusterLaunch (or its spec) as a mapping")
    prefix: tuple[str, ...] = ()
    if "kind" in document:
        if document.get("kind") != "ClusterLaunch":
            raise DocumentError(f"{path}:{yamlfile.node_line(node, ('kind',))}: kind must be "
                                f"ClusterLaunch, not {document.get('kind')!r}")
        prefix = ("spec",)
        spec = document.get("spec")
    else:
        spec, document = document, {"apiVersion": API_VERSION, "kind": "ClusterLaunch",
                                    "metadata": {}, "spec": document}
    try:
        ClusterLaunchSpec.model_validate(spec)
    except ValidationError as error:
        raise DocumentError(yamlfile.validation_message(path, node, error, prefix)) from error
    document.setdefault("metadata", {})
    return document


def load(path: Path) -> dict[str, Any]:
    """A ClusterLaunch document from a YAML or Nimbus XML file."""
    if not path.is_file():
        raise DocumentError(f"{path}: no such file")
    if path.suffix.lower() == ".xml":
        from oneclick.cli.nimbus import NimbusDocumentError, load_cluster_xml

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
