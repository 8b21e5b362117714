"""Nimbus cluster documents: the XML users already have becomes the same ClusterLaunch spec,
and a broken one is refused with its file, its line and what is wrong."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from oneclick.api.launch import ClusterLaunchSpec
from oneclick.cli.nimbus import NimbusDocumentError, load_cluster_xml, parse_cluster_xml

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


def yaml_spec(name: str) -> ClusterLaunchSpec:
    return ClusterLaunchSpec.model_validate(
        yaml.safe_load((SAMPLES / name).read_text())["spec"])


def test_the_xml_sample_is_the_yaml_sample() -> None:
    assert load_cluster_xml(SAMPLES / "base-cluster.xml").wire() == yaml_spec(
        "base-cluster.yaml").wire()


def test_occ_convert_prints_the_same_cluster_as_yaml() -> None:
    occ = Path(sys.executable).parent / "occ"
    result = subprocess.run([str(occ), "convert", str(SAMPLES / "base-cluster.xml")],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    document = yaml.safe_load(result.stdout)
    assert document["kind"] == "ClusterLaunch"
    assert document["metadata"] == {"name": "base-cluster"}
    assert ClusterLaunchSpec.model_validate(document["spec"]).wire() == yaml_spec(
        "base-cluster.yaml").wire()


def _workspace(name: str = "head", extra: str = "", ctx: str = "") -> str:
    return (f"  <workspace>\n    <name>{name}</name>\n    <image>base-cluster</image>\n"
            f"{extra}    <ctx>{ctx}</ctx>\n  </workspace>\n")


def _cluster(*workspaces: str) -> str:
    return "<cluster>\n" + "".join(workspaces) + "</cluster>\n"


BROKEN = {
    "malformed": ("<cluster>\n  <workspace>\n    <name>head</name>\n  </cluster>\n", 4,
                  "malformed XML: mismatched tag"),
    "wrong root": ("<workspaces>\n</workspaces>\n", 1, "must be a <cluster>"),
    "unknown element": (_cluster(_workspace(extra="    <flavor>m1</flavor>\n")), 5,
                        "unknown element <flavor> in <workspace>"),
    "unknown attribute": (_cluster(_workspace(extra='    <nic wantlogin="true" mtu="9000">'
                                              "public</nic>\n")), 5,
                          "unknown attribute 'mtu' of <nic>"),
    "missing name": ("<cluster>\n  <workspace>\n    <image>x</image>\n  </workspace>\n"
                     "</cluster>\n", 2, "<workspace> needs a <name>"),
    "missing image": ("<cluster>\n  <workspace>\n    <name>x</name>\n  </workspace>\n"
                      "</cluster>\n", 2, "<workspace> needs a <image>"),
    "bad quantity": (_cluster(_workspace(extra="    <quantity>two</quantity>\n")), 5,
                     "quantity must be a whole number, not 'two'"),
    "too many": (_cluster(_workspace(extra="    <quantity>10001</quantity>\n")), 5,
                 "quantity must be between 0 and 10000"),
    "duplicate workspace": (_cluster(_workspace(), _workspace()), 8,
                            "workspace 'head' is declared twice (first at line 2)"),
    "unprovided role": (_cluster(_workspace(ctx='\n      <requires><role name="nfs-server"/>'
                                                "</requires>\n    ")), 6,
                        "role 'nfs-server' is required but no workspace provides it"),
    "conflicting data": (_cluster(
        _workspace("a", ctx='\n<requires><data name="gridmap">one</data></requires>\n'),
        _workspace("b", ctx='\n<requires><data name="gridmap">two</data></requires>\n')), 13,
        "data 'gridmap' has another value at line 6"),
    "bad role name": (_cluster(_workspace("Head_Node")), 3,
                      "'Head_Node' is not a valid role name"),
    "entity attack": ('<?xml version="1.0"?>\n<!DOCTYPE cluster [<!ENTITY a "aaaa">]>\n'
                      "<cluster/>\n", 2, "DTDs and entity declarations are not allowed"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_document_names_its_file_and_line(case: str, tmp_path: Path) -> None:
    text, line, words = BROKEN[case]
    path = tmp_path / "cluster.xml"
    path.write_text(text)
    with pytest.raises(NimbusDocumentError) as raised:
        load_cluster_xml(path)
    assert str(raised.value).startswith(f"{path}:{line}: "), str(raised.value)
    assert words in str(raised.value)


def test_wantlogin_and_identity_map_as_nimbus_meant_them() -> None:
    spec = parse_cluster_xml(_cluster(
        _workspace("login", extra='    <nic wantlogin="true">public</nic>\n',
                   ctx="<provides><identity/><role>gateway</role></provides>"),
        _workspace("workers", extra="    <quantity>5</quantity>\n    <nic>private</nic>\n",
                   ctx='<requires><identity/><role name="gateway" hostname="true"/></requires>'),
    ))
    login, workers = spec.roles
    assert login.known_hosts is True and login.provides == ["gateway"]
    assert workers.known_hosts is False and workers.quantity == 5
    assert workers.requires.roles == ["gateway"]
