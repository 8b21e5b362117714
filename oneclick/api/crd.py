"""CustomResourceDefinitions generated from the models: the models are the one source of truth.

    python -m oneclick.api.crd            # write crds/*.yaml and charts/oneclick/crds/*.yaml
    python -m oneclick.api.crd --check    # exit 1 when the checked-in CRDs differ from the models
"""

from __future__ import annotations

import argparse
import copy
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema, to_jsonable_python

from oneclick.api import GROUP, VERSION
from oneclick.api.docstrings import WithFieldDocstrings
from oneclick.api.launch import ClusterLaunchSpec, ClusterLaunchStatus
from oneclick.api.member import LaunchMemberSpec, LaunchMemberStatus

CRD_DIR = Path(__file__).resolve().parents[2] / "crds"
# The Helm chart ships the same files (helm installs a chart's crds/ before anything else).
CHART_CRD_DIR = CRD_DIR.parent / "charts" / "oneclick" / "crds"
CATEGORY = "oneclick"


class _WithFactoryDefaults(WithFieldDocstrings):
    """Also write defaults that come from a default_factory (lists, nested models)."""

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> JsonSchemaValue:
        factory = schema.get("default_factory")
        if factory is None or schema.get("default_factory_takes_data"):
            return super().default_schema(schema)
        inner = self.generate_inner(schema["schema"])
        inner["default"] = to_jsonable_python(factory(), by_alias=True)  # type: ignore[call-arg]
        return inner


def _structural(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """A JSON schema of pydantic's made structural: refs inlined, nulls gone, no titles."""
    node = dict(node)
    if "$ref" in node:
        target = copy.deepcopy(defs[node.pop("$ref").rsplit("/", 1)[1]])
        target.update(node)  # the field's own description and default win over the model's
        node = target
    if "anyOf" in node:
        branches = [b for b in node.pop("anyOf") if b.get("type") != "null"]
        if len(branches) != 1:
            raise ValueError(f"a CRD schema cannot express the union {branches}")
        return _structural({**branches[0], **node}, defs)
    node.pop("title", None)
    if node.get("default", ...) is None:
        del node["default"]
    if node.get("additionalProperties") is False:
        del node["additionalProperties"]
    if "description" in node:
        node["description"] = re.sub(r"\s+", " ", node["description"]).strip()
    if "properties" in node:
        node["properties"] = {k: _structural(v, defs) for k, v in node["properties"].items()}
    if isinstance(node.get("items"), dict):
        node["items"] = _structural(node["items"], defs)
    if isinstance(node.get("additionalProperties"), dict):
        node["additionalProperties"] = _structural(node["additionalProperties"], defs)
    return node


def openapi_schema(model: type[BaseModel]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, schema_generator=_WithFactoryDefaults)
    defs = raw.pop("$defs", {})
    return _structural(raw, defs)


@dataclass(frozen=True)
class Kind:
    kind: str
    plural: str
    short_names: list[str]
    description: str
    spec: type[BaseModel]
    status: type[BaseModel]
    columns: list[dict[str, Any]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.plural}.{GROUP}"

    def definition(self) -> dict[str, Any]:
        schema = {
            "type": "object",
            "description": self.description,
            "properties": {
                "apiVersion": {"type": "string", "description": "Versioned schema of this "
                               "representation of an object."},
                "kind": {"type": "string", "description": "Kind of the object."},
                "metadata": {"type": "object"},
                "spec": openapi_schema(self.spec),
                "status": openapi_schema(self.status),
            },
            "required": ["spec"],
        }
        return {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": self.name},
            "spec": {
                "group": GROUP,
                "names": {
                    "kind": self.kind,
                    "listKind": f"{self.kind}List",
                    "plural": self.plural,
                    "singular": self.kind.lower(),
                    "shortNames": self.short_names,
                    "categories": [CATEGORY],
                },
                "scope": "Namespaced",
                "versions": [{
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": self.columns,
                    "schema": {"openAPIV3Schema": schema},
                }],
            },
        }


def _column(name: str, path: str, type: str = "string", description: str = "",
            priority: int = 0) -> dict[str, Any]:
    column: dict[str, Any] = {"name": name, "type": type, "jsonPath": path}
    if description:
        column["description"] = description
    if priority:
        column["priority"] = priority
    return column


KINDS = (
    Kind(
        kind="ClusterLaunch",
        plural="clusterlaunches",
        short_names=["cl", "launch"],
        description="A launch of a cluster of self-configuring virtual machines.",
        spec=ClusterLaunchSpec,
        status=ClusterLaunchStatus,
        columns=[
            _column("Phase", ".status.phase", description="Summary of the conditions"),
            _column("Ready", ".status.readyMembers", description="Contextualized/all members"),
            _column("Head-Node", ".status.headNode", description="Where to log in"),
            # A date column shows a future time as <invalid> (kubectl writes the time since
            # it): the lifetime beside the age says when it ends, with no status write to
            # keep a countdown; `occ get` shows the countdown itself ("in 59m").
            _column("Lifetime", ".spec.lifetime", description="How long the launch lives"),
            _column("Age", ".metadata.creationTimestamp", "date"),
            _column("Expires-At", ".status.expiresAt",
                    description="When every instance is terminated", priority=1),
        ],
    ),
    Kind(
        kind="LaunchMember",
        plural="launchmembers",
        short_names=["lm"],
        description="One virtual machine of a ClusterLaunch.",
        spec=LaunchMemberSpec,
        status=LaunchMemberStatus,
        columns=[
            _column("Role", ".spec.role"),
            _column("Phase", ".status.phase"),
            _column("Address", ".status.addresses[0]"),
            _column("Hostname", ".status.identity.hostname"),
            _column("Age", ".metadata.creationTimestamp", "date"),
            _column("Cluster", ".spec.cluster", priority=1),
            _column("Instance", ".status.instanceId", priority=1),
        ],
    ),
)


def render(kind: Kind) -> str:
    import yaml  # (here: the agent's distribution carries oneclick.api, not PyYAML)

    header = ("# Generated by `python -m oneclick.api.crd` from the models in oneclick/api/; "
              "do not edit.\n")
    body = yaml.safe_dump(kind.definition(), sort_keys=False, width=100, allow_unicode=True)
    return header + body


def path_of(kind: Kind, directory: Path = CRD_DIR) -> Path:
    return directory / f"{GROUP}_{kind.plural}.yaml"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate the CRDs from the API models.")
    parser.add_argument("--check", action="store_true",
                        help="compare instead of writing; exit 1 on any difference")
    parser.add_argument("directory", nargs="*", type=Path, default=[CRD_DIR, CHART_CRD_DIR],
                        help="where to write (default: crds/ and the chart's crds/)")
    args = parser.parse_args(argv)
    stale = []
    for kind, directory in [(k, d) for k in KINDS for d in args.directory]:
        path = path_of(kind, directory)
        text = render(kind)
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(str(path))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print("out of date with oneclick/api/ (run `python -m oneclick.api.crd`): "
              + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
