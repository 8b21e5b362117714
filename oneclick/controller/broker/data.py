"""The data items of a launch's context, and why any of them is withheld.

A data item is a value written in the spec, or a key of a Secret or ConfigMap. Whoever may
create a ClusterLaunch names that object, and the controller reads it with rights wider than
theirs (it may get Secrets in every namespace), so the reference is never trusted:
- the object is looked up only in the launch's own namespace, by a name that must be a
  Kubernetes object name, as one escaped segment of the API path;
- the answer must be that very object: the kind asked for, in that namespace, by that name;
- it must opt in to delivery with the label DELIVERABLE="true", which only someone who may
  write the object can set (a tenant who may create launches but not read Secrets cannot have
  one sent to a VM it controls);
- its value must be UTF-8 text.

A generated item (a shared secret such as a munge key) is a key of the launch's own Secret,
GENERATED_PREFIX + its uid, made once by the launch's reconciler (controller.reconcile.generated)
and owned by the launch; it is read only while it is that launch's (its controller owner
reference), and delivered as the base64 text of the bytes.

Whatever fails is a problem of that data item, not an error: the members that require it keep
waiting, and the launch (its DataDelivered condition) and the broker's pending answer say why.
A missing object and one that does not opt in read the same, so that a launch cannot tell its
creator which Secrets exist in a namespace they may not read.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from enum import StrEnum

from oneclick.api import DELIVERABLE
from oneclick.api.launch import (
    DATA_KEY,
    DNS_SUBDOMAIN,
    ClusterLaunchSpec,
    DataSource,
    KeySelector,
)
from oneclick.kits.kube import JSON, ApiError, Forbidden, KubeClient, Unreachable, core_path

GENERATED_PREFIX = "oneclick-generated-"
GENERATED_TYPE = "clusters.oneclick.dev/generated"


def generated_secret(uid: str) -> str:
    """The name of the Secret that keeps a launch's generated items (one per launch)."""
    return GENERATED_PREFIX + uid


def generated_items(spec: ClusterLaunchSpec) -> dict[str, int]:
    """The generated items of a spec: name -> how many bytes."""
    return {item.name: item.generate.bytes for item in spec.data if item.generate is not None}


def owned_by(obj: JSON, kind: str, uid: str) -> bool:
    """Whether `obj` is controlled by the object of this kind and uid."""
    return any(ref.get("kind") == kind and ref.get("uid") == uid and ref.get("controller")
               for ref in (obj.get("metadata") or {}).get("ownerReferences") or [])


class DataUnavailable(Exception):
    """The API server cannot be asked right now (unreachable, or a server error): a
    transient failure, unlike a problem of the data itself."""


class Reason(StrEnum):
    """Why a data item is not delivered (the reason of the launch's DataDelivered
    condition)."""

    WITHHELD = "DataWithheld"  # no such object, or it does not opt in to delivery
    MISSING = "DataMissing"  # the object opts in, but has no such key (or not generated yet)
    INVALID = "DataInvalid"  # a bad reference, or a value that is not UTF-8 text


@dataclass(frozen=True)
class DataProblem:
    item: str
    reason: Reason
    message: str  # names the data item, the object and why, in words


@dataclass(frozen=True)
class LaunchData:
    """What could be read of a launch's data items: values, and problems, by item name."""

    values: dict[str, str] = field(default_factory=dict)
    problems: dict[str, DataProblem] = field(default_factory=dict)


@dataclass(frozen=True)
class _Refusal:
    """Why an object, or a key of it, is not delivered (to any item that names it)."""

    reason: Reason
    why: str


def required_items(spec: ClusterLaunchSpec) -> set[str]:
    """The data items some role requires: only those are read, and only those delivered."""
    return {d for entry in spec.roles for d in entry.requires.data}


def _reference(source: DataSource | None) -> tuple[str, str, KeySelector] | None:
    """The kind, the plural and the key selector a valueFrom names (None: none)."""
    if source is not None and source.secret_key_ref is not None:
        return "Secret", "secrets", source.secret_key_ref
    if source is not None and source.config_map_key_ref is not None:
        return "ConfigMap", "configmaps", source.config_map_key_ref
    return None


async def read_data(kube: KubeClient, namespace: str, spec: ClusterLaunchSpec,
                    uid: str = "") -> LaunchData:
    """The required data items of the launch `uid` of `namespace` with this spec;
    DataUnavailable when the API server cannot answer now."""
    result = LaunchData()
    wanted = required_items(spec)
    objects: dict[tuple[str, str], JSON | _Refusal] = {}  # each object read once
    generated: JSON | _Refusal | None = None
    for item in spec.data:
        name = item.name
        if name not in wanted:
            continue
        if item.value is not None:
            result.values[name] = item.value
            continue
        if item.generate is not None:
            if generated is None:
                generated = await _read_generated(kube, namespace, uid)
            value = generated if isinstance(generated, _Refusal) else _generated_value(
                generated, name)
            if isinstance(value, _Refusal):
                result.problems[name] = DataProblem(name, value.reason, f"data {name}: "
                                                                        f"{value.why}")
            else:
                result.values[name] = value
            continue
        reference = _reference(item.value_from)
        if reference is None:
            result.problems[name] = DataProblem(name, Reason.INVALID,
                                                f"data {name}: valueFrom names no source")
            continue
        kind, plural, ref = reference
        found = objects.get((plural, ref.name))
        if found is None:
            found = await _read_object(kube, namespace, kind, plural, ref.name)
            objects[(plural, ref.name)] = found
        value = found if isinstance(found, _Refusal) else _value(kind, found, ref.key)
        if isinstance(value, _Refusal):
            result.problems[name] = DataProblem(name, value.reason, f"data {name}: {value.why}")
        else:
            result.values[name] = value
    return result


async def _read_object(kube: KubeClient, namespace: str, kind: str, plural: str,
                       name: str) -> JSON | _Refusal:
    """The object, once it is proven to be the one named and to opt in; else why not."""
    invalid = _Refusal(Reason.INVALID, f"{name!r} is not the name of a {kind}")
    # The API server refuses such names in a launch; a launch that reached us some other way
    # (an older schema, a direct write to etcd) is refused here before any request is made.
    if len(name) > 253 or not re.fullmatch(DNS_SUBDOMAIN, name):
        return invalid
    withheld = _Refusal(Reason.WITHHELD, f"{kind} {name} of namespace {namespace} is not "
                                         f"there or does not opt in to delivery (label "
                                         f"{DELIVERABLE}=true)")
    try:
        obj = await kube.get(core_path(plural, namespace, name))
    except ValueError:  # a segment the path helper refuses: never sent
        return invalid
    except ApiError as error:
        if isinstance(error, Unreachable) or error.status >= 500:
            raise DataUnavailable(f"cannot read {kind} {name}: {error.reason}") from error
        if isinstance(error, Forbidden):  # the controller's own rights fall short (its RBAC)
            return _Refusal(Reason.WITHHELD, f"the controller may not read {kind} {name} of "
                                             f"namespace {namespace}: {error.reason}")
        return withheld
    meta = obj.get("metadata") or {}
    if (obj.get("apiVersion"), obj.get("kind"), meta.get("namespace"),
            meta.get("name")) != ("v1", kind, namespace, name):
        return withheld  # not the object asked for: never used, whatever it holds
    if (meta.get("labels") or {}).get(DELIVERABLE) != "true":
        return withheld
    return obj


async def _read_generated(kube: KubeClient, namespace: str, uid: str) -> JSON | _Refusal:
    """The launch's Secret of generated items, once it is proven to be that launch's."""
    name = generated_secret(uid)
    not_yet = _Refusal(Reason.MISSING, f"not generated yet (Secret {name})")
    if not uid:
        return not_yet
    try:
        obj = await kube.get(core_path("secrets", namespace, name))
    except ApiError as error:
        if isinstance(error, Unreachable) or error.status >= 500:
            raise DataUnavailable(f"cannot read Secret {name}: {error.reason}") from error
        if isinstance(error, Forbidden):
            return _Refusal(Reason.WITHHELD, f"the controller may not read Secret {name} of "
                                             f"namespace {namespace}: {error.reason}")
        return not_yet
    meta = obj.get("metadata") or {}
    if ((obj.get("apiVersion"), obj.get("kind"), meta.get("namespace"), meta.get("name"),
         obj.get("type")) != ("v1", "Secret", namespace, name, GENERATED_TYPE)
            or not owned_by(obj, "ClusterLaunch", uid)):
        return _Refusal(Reason.INVALID, f"Secret {name} is not this launch's own (made by "
                                        f"the controller, owned by the launch): not used")
    return obj


def _generated_value(obj: JSON, key: str) -> str | _Refusal:
    """A generated item as text: the base64 of its bytes, as the Secret keeps them."""
    encoded = (obj.get("data") or {}).get(key)
    if not isinstance(encoded, str):
        return _Refusal(Reason.MISSING, f"not generated yet (Secret "
                                        f"{obj['metadata']['name']} has no key {key})")
    try:
        base64.b64decode(encoded, validate=True)
    except binascii.Error:
        return _Refusal(Reason.INVALID, f"key {key} of Secret {obj['metadata']['name']} is "
                                        "not base64")
    return encoded


def _value(kind: str, obj: JSON, key: str) -> str | _Refusal:
    """The key's value as text (a Secret's data and a ConfigMap's binaryData are base64)."""
    name = obj["metadata"]["name"]
    if len(key) > 253 or not re.fullmatch(DATA_KEY, key) or key == "." or key.startswith(".."):
        return _Refusal(Reason.INVALID, f"{key!r} is not a key of a {kind}")
    data = obj.get("data") or {}
    if kind == "ConfigMap" and isinstance(data.get(key), str):
        return str(data[key])
    encoded = (obj.get("binaryData") or {}).get(key) if kind == "ConfigMap" else data.get(key)
    if not isinstance(encoded, str):
        return _Refusal(Reason.MISSING, f"{kind} {name} has no key {key}")
    try:
        return base64.b64decode(encoded, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return _Refusal(Reason.INVALID, f"key {key} of {kind} {name} is not UTF-8 text")
