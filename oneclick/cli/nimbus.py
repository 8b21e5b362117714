"""Nimbus cluster documents (`<cluster>` XML) read into a ClusterLaunch spec.

    <cluster>
      <workspace>
        <name>head-node</name> <image>base-cluster</image> <quantity>1</quantity>
        <nic wantlogin="true">public</nic>
        <ctx>
          <provides> <identity/> <role>batch-server</role> </provides>
          <requires> <identity/> <role name="batch-client" hostname="true" pubkey="true"/>
                     <data name="gridmap">...</data> </requires>
        </ctx>
      </workspace>
    </cluster>

A workspace is a role entry; `wantlogin="true"` asks for its host keys in known_hosts; a
`<data>` element both declares the data item and makes the workspace require it. One thing
Nimbus documents cannot say is ours: `<data name="munge-key" generate="1024"/>`, a secret the
controller generates for the launch (that many random bytes). Errors say FILE:LINE and what
is wrong. Documents with a DTD are refused (no entity expansion).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from xml.parsers import expat

from pydantic import ValidationError

from oneclick.api.launch import ClusterLaunchSpec

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class NimbusDocumentError(ValueError):
    """What is wrong with a Nimbus document, starting with SOURCE:LINE."""


@dataclass
class Element:
    tag: str
    attributes: dict[str, str]
    line: int
    text: str = ""
    children: list[Element] = field(default_factory=list)


def _parse_xml(text: str, source: str) -> Element:
    parser = expat.ParserCreate()
    stack: list[Element] = []
    root: list[Element] = []

    def refuse_dtd(*_: object) -> None:
        raise NimbusDocumentError(f"{source}:{parser.CurrentLineNumber}: DTDs and entity "
                                  "declarations are not allowed in cluster documents")

    def start(tag: str, attributes: dict[str, str]) -> None:
        element = Element(tag, attributes, parser.CurrentLineNumber)
        (stack[-1].children if stack else root).append(element)
        stack.append(element)

    def end(tag: str) -> None:
        stack.pop()

    def characters(data: str) -> None:
        if stack:
            stack[-1].text += data

    parser.StartDoctypeDeclHandler = refuse_dtd
    parser.EntityDeclHandler = refuse_dtd
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = characters
    try:
        parser.Parse(text, True)
    except expat.ExpatError as error:
        raise NimbusDocumentError(
            f"{source}:{error.lineno}: malformed XML: {expat.errors.messages[error.code]}"
        ) from error
    return root[0]


class _Reader:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, element: Element, message: str) -> NimbusDocumentError:
        return NimbusDocumentError(f"{self.source}:{element.line}: {message}")

    def check(self, element: Element, children: tuple[str, ...],
              attributes: tuple[str, ...] = ()) -> None:
        for name in element.attributes:
            if name not in attributes:
                allowed = ", ".join(attributes) or "none"
                raise self.fail(element, f"unknown attribute {name!r} of <{element.tag}> "
                                f"(expected: {allowed})")
        for child in element.children:
            if child.tag not in children:
                raise self.fail(child, f"unknown element <{child.tag}> in <{element.tag}> "
                                f"(expected one of: {', '.join(children) or 'nothing'})")

    def one(self, element: Element, tag: str, required: bool) -> Element | None:
        found = [c for c in element.children if c.tag == tag]
        if len(found) > 1:
            raise self.fail(found[1], f"<{element.tag}> has more than one <{tag}>")
        if required and not found:
            raise self.fail(element, f"<{element.tag}> needs a <{tag}>")
        return found[0] if found else None

    def role_name(self, element: Element, name: str) -> str:
        if not DNS_LABEL.match(name) or len(name) > 63:
            raise self.fail(element, f"{name!r} is not a valid role name: use lower-case "
                            "letters, digits and '-' (a DNS-1123 label)")
        return name

    def data_item(self, element: Element, name: str) -> dict[str, object]:
        """A <data> element as a data item: its text as the value or, with our `generate`
        attribute (Nimbus has none), a secret of that many bytes the controller makes."""
        if "generate" not in element.attributes:
            return {"name": name, "value": element.text}
        size = element.attributes["generate"].strip()
        if not size.isdigit():
            raise self.fail(element, f"generate must be a number of bytes, not {size!r}")
        if element.text.strip():
            raise self.fail(element, f"data {name!r} is generated: it cannot have a value too")
        return {"name": name, "generate": {"bytes": int(size)}}

    def boolean(self, element: Element, attribute: str) -> bool:
        value = element.attributes.get(attribute, "false").strip().lower()
        if value not in ("true", "false"):
            raise self.fail(element, f"{attribute} must be true or false, not {value!r}")
        return value == "true"


def parse_cluster_xml(text: str, source: str = "<string>") -> ClusterLaunchSpec:
    reader = _Reader(source)
    cluster = _parse_xml(text, source)
    if cluster.tag != "cluster":
        raise reader.fail(cluster, f"the document must be a <cluster>, not <{cluster.tag}>")
    reader.check(cluster, ("workspace",))
    if not cluster.children:
        raise reader.fail(cluster, "<cluster> has no <workspace>")
    roles: list[dict[str, object]] = []
    data: dict[str, tuple[dict[str, object], Element]] = {}
    required: list[tuple[str, Element]] = []
    lines: dict[str, Element] = {}
    for workspace in cluster.children:
        reader.check(workspace, ("name", "image", "quantity", "nic", "ctx"))
        name_element = reader.one(workspace, "name", True)
        image = reader.one(workspace, "image", True)
        assert name_element is not None and image is not None
        name = reader.role_name(name_element, name_element.text.strip())
        if name in lines:
            raise reader.fail(name_element, f"workspace {name!r} is declared twice (first at "
                              f"line {lines[name].line})")
        lines[name] = workspace
        quantity_element = reader.one(workspace, "quantity", False)
        quantity = 1
        if quantity_element is not None:
            try:
                quantity = int(quantity_element.text.strip())
            except ValueError:
                raise reader.fail(quantity_element, f"quantity must be a whole number, not "
                                  f"{quantity_element.text.strip()!r}") from None
            if not 0 <= quantity <= 10000:
                raise reader.fail(quantity_element, f"quantity must be between 0 and 10000, "
                                  f"not {quantity}")
        nic = reader.one(workspace, "nic", False)
        if nic is not None:
            reader.check(nic, (), ("wantlogin", "name"))
        provides: list[str] = []
        requires_roles: list[str] = []
        requires_data: list[str] = []
        ctx = reader.one(workspace, "ctx", False)
        if ctx is not None:
            reader.check(ctx, ("provides", "requires"))
            provides_element = reader.one(ctx, "provides", False)
            if provides_element is not None:
                reader.check(provides_element, ("identity", "role"))
                for role in provides_element.children:
                    if role.tag == "role":
                        reader.check(role, ())
                        provides.append(reader.role_name(role, role.text.strip()))
            requires_element = reader.one(ctx, "requires", False)
            if requires_element is not None:
                reader.check(requires_element, ("identity", "role", "data"))
                for item in requires_element.children:
                    if item.tag == "role":
                        reader.check(item, (), ("name", "hostname", "pubkey"))
                        if "name" not in item.attributes:
                            raise reader.fail(item, "<role> in <requires> needs a name")
                        for flag in ("hostname", "pubkey"):
                            reader.boolean(item, flag)
                        role_name = reader.role_name(item, item.attributes["name"])
                        requires_roles.append(role_name)
                        required.append((role_name, item))
                    elif item.tag == "data":
                        reader.check(item, (), ("name", "generate"))
                        data_name = item.attributes.get("name", "")
                        if not data_name:
                            raise reader.fail(item, "<data> needs a name")
                        declared = reader.data_item(item, data_name)
                        if data_name in data and data[data_name][0] != declared:
                            raise reader.fail(item, f"data {data_name!r} has another value at "
                                              f"line {data[data_name][1].line}")
                        data.setdefault(data_name, (declared, item))
                        requires_data.append(data_name)
        roles.append({
            "name": name, "image": image.text.strip(), "quantity": quantity,
            "provides": provides, "requires": {"roles": requires_roles, "data": requires_data},
            "knownHosts": nic is not None and reader.boolean(nic, "wantlogin"),
        })
    provided = {r["name"] for r in roles} | {p for r in roles for p in r["provides"]}  # type: ignore[attr-defined]
    for role_name, element in required:
        if role_name not in provided:
            raise reader.fail(element, f"role {role_name!r} is required but no workspace "
                              "provides it")
    try:
        return ClusterLaunchSpec.model_validate({
            "roles": roles, "data": [item for item, _ in data.values()]})
    except ValidationError as error:
        first = error.errors()[0]
        where = cluster
        if first["loc"][:1] == ("roles",) and len(first["loc"]) > 1:
            where = cluster.children[int(first["loc"][1])]
        raise reader.fail(where, f"{'.'.join(str(p) for p in first['loc'])}: "
                          f"{first['msg']}") from error


def load_cluster_xml(path: Path) -> ClusterLaunchSpec:
    try:
        text = path.read_text()
    except OSError as error:
        raise NimbusDocumentError(f"{path}: {error.strerror}") from error
    return parse_cluster_xml(text, str(path))
