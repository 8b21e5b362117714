"""A member is root on its VM and holds its own valid token: what it states about itself goes
into the other members' /etc/hosts, ssh_known_hosts, shosts.equiv and role scripts, and into the
user's known_hosts. So it forges: host names that are patterns or carry a second line, addresses
that are not addresses, keys that smuggle a @cert-authority line, another member's name, names
of hosts outside its launch (github.com, pypi.org: its peers would resolve them to it) and
names every resolver already gives a meaning (localhost). Every forgery goes over real TLS with
the member's real token; the broker answers 422 naming the field, and the member's status in
the API server does not move."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from oneclick.api import API_VERSION, PAUSED
from oneclick.controller.providers.local import DOMAIN as LOCAL_DOMAIN
from tests.broker.staging import StagedMember, stage_launch
from tests.conftest import kubectl
from tests.controller_process import ControllerProcess

# The launch names its own domain: its members' FQDNs are <hostname>.cluster.test.
SPEC = {"roles": [{"name": "solo", "image": "base-cluster", "quantity": 2}],
        "hostsFile": True, "sshHostBased": True, "domain": "cluster.test"}


def _public(key: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
            ) -> str:
    return key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                         serialization.PublicFormat.OpenSSH).decode()


ED25519 = _public(ed25519.Ed25519PrivateKey.generate())
ECDSA = _public(ec.generate_private_key(ec.SECP256R1()))  # (the agent's two kinds, and an
RSA = _public(rsa.generate_private_key(public_exponent=65537, key_size=2048))  # image's own)
HONEST = {"hostname": "solo-0", "fqdn": "solo-0.cluster.test", "addresses": ["127.30.0.1"],
          "sshHostKeys": [ED25519, ECDSA, RSA]}

# (field the broker must name, the forged value, what it would do if it got through)
HOSTNAMES = [
    ("hostname", "*", "a pattern: every host in ssh_known_hosts and shosts.equiv"),
    ("hostname", "a b", "a second name on the /etc/hosts line"),
    ("hostname", "x\n127.0.0.1 evil", "a line of its own in /etc/hosts"),
    ("hostname", "-bad", "an option to the role scripts' commands"),
    ("hostname", "a" * 64, "longer than a DNS label"),
    ("hostname", "# END oneclick", "closes the agent's managed block"),
    ("hostname", "localhost", "every machine's name for itself"),
    ("hostname", "LocalHost", "the same, in other letters"),
    ("hostname", "localhost6", "the IPv6 loopback's name on some distributions"),
    ("hostname", "ip6-localhost", "the IPv6 loopback's name in Debian's /etc/hosts"),
    ("hostname", "ip6-allnodes", "all IPv6 nodes, in Debian's /etc/hosts"),
    ("hostname", "broadcasthost", "the broadcast address's name"),
    ("hostname", "wpad", "where browsers look for their proxy settings"),
]
FQDNS = [
    ("fqdn", "github.com\n", "a second line"),
    ("fqdn", "*.example", "a wildcard"),
    ("fqdn", "solo 0.example", "a space"),
    ("fqdn", "solo-0.example,github.com", "a second host in a known_hosts host field"),
    ("fqdn", "10.0.0.66", "a name that reads as an address"),
    ("fqdn", "solo-0.\x1b[2J.example", "an escape sequence"),
    ("fqdn", "solo-0.localhost", "a name under every machine's own"),
]
# Names its peers would resolve to it that are not the launch's to give: its FQDN is its host
# name, alone or exactly one label under the launch's domain.
OUTSIDE = [
    ("fqdn", "github.com", "github.com pointed at the member in its peers' /etc/hosts"),
    ("fqdn", "pypi.org", "every peer's pip install served by the member"),
    ("fqdn", "head-0.other.domain", "a name under another domain"),
    ("fqdn", "x.solo-0.cluster.test", "a name deeper under the launch's domain"),
    ("fqdn", "solo-0.x.cluster.test", "a subdomain of the launch's domain"),
    ("fqdn", "solo-1.cluster.test", "another host name under the domain than its own"),
    ("fqdn", "cluster.test", "the launch's domain itself"),
    ("fqdn", f"solo-0.{LOCAL_DOMAIN}", "the provider's domain, which the launch replaced"),
]
ADDRESSES = [
    ("addresses[0]", "10.0.0.66 pypi.org", "pypi.org pointed at the member in /etc/hosts"),
    ("addresses[0]", "*", "`/home *(rw,...)` in the head node's /etc/exports"),
    ("addresses[0]", "0.0.0.0", "unspecified"),  # noqa: S104
    ("addresses[0]", "::", "unspecified"),
    ("addresses[0]", "224.0.0.1", "multicast"),
    ("addresses[0]", "1.2.3.4/8", "a whole network"),
    ("addresses[0]", "fe80::1%eth0", "a zone"),
    ("addresses[0]", "pypi.org", "a name"),
]
_RSA_BLOB = RSA.split()[1]


def _ssh_strings(*fields: bytes) -> bytes:
    """SSH's wire format: each field its length (4 bytes), then itself."""
    return b"".join(len(f).to_bytes(4, "big") + f for f in fields)


KEYS = [
    ("sshHostKeys[0]", f"{ED25519}\n@cert-authority * {ED25519}",
     "its key trusted as a CA for every host"),
    ("sshHostKeys[0]", f"{ED25519} extra-host-field", "a comment (a third field)"),
    ("sshHostKeys[0]", f"ssh-dss {_RSA_BLOB}", "a type no host key should have"),
    ("sshHostKeys[0]", "ssh-ed25519 AAAA$$$not-base64", "data that is not base64"),
    ("sshHostKeys[0]", f"ssh-ed25519 {_RSA_BLOB}", "base64 of another type's key"),
    ("sshHostKeys[0]", "ssh-ed25519 " + base64.b64encode(_ssh_strings(b"ssh-ed25519", b"xx"))
     .decode(), "an ed25519 key of two bytes"),
    ("sshHostKeys[0]", f"{ED25519} \x1b]0;pwned\x07\x1b[2J", "escape sequences as a comment"),
    ("sshHostKeys[0]", "ecdsa-sha2-nistp256 " + _public(ec.generate_private_key(ec.SECP384R1()))
     .split()[1], "a P-384 key under the P-256 type"),
    ("sshHostKeys[0]", "ecdsa-sha2-nistp256 " + base64.b64encode(
        _ssh_strings(b"ecdsa-sha2-nistp256", b"nistp256", b"\x04" + b"\x01" * 64)).decode(),
     "a point that is not on the curve"),
]


def _headers(member: StagedMember, namespace: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {member.token}",
            "OneClick-Member": f"{namespace}/one/{member.name}"}


def _member(kubeconfig: Path, namespace: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(kubectl(kubeconfig, "get", "lm", name, "-n", namespace,
                                               "-o", "json").stdout)
    return found


@pytest.fixture
def staged(controller: ControllerProcess, kubeconfig: Path, namespace: str,
           token_key: bytes) -> dict[str, StagedMember]:
    return stage_launch(kubeconfig, namespace, "one", SPEC, token_key)


@pytest.fixture
def client(controller: ControllerProcess) -> httpx.Client:
    return httpx.Client(base_url=controller.broker_url, verify=controller.tls(), timeout=30)


def _forged(field: str, value: str) -> dict[str, Any]:
    key = field.split("[")[0]
    return {**HONEST, key: [value] if key in ("addresses", "sshHostKeys") else value}


@pytest.mark.parametrize("forgeries", [HOSTNAMES, FQDNS, OUTSIDE, ADDRESSES, KEYS],
                         ids=["hostname", "fqdn", "fqdn-outside-the-domain", "addresses",
                              "ssh-host-keys"])
def test_forged_identities_are_refused_naming_the_field(
    forgeries: list[tuple[str, str, str]], staged: dict[str, StagedMember],
    client: httpx.Client, kubeconfig: Path, namespace: str,
) -> None:
    me = staged["one-solo-0"]
    # The member first states its honest identity: that is what must stay.
    assert client.post("/v1/identity", json=HONEST,
                       headers=_headers(me, namespace)).status_code == 200
    before = _member(kubeconfig, namespace, me.name)
    assert before["status"]["identity"] == HONEST

    for field, value, harm in forgeries:
        answer = client.post("/v1/identity", json=_forged(field, value),
                             headers=_headers(me, namespace))
        assert answer.status_code == 422, (field, harm, answer.text)
        message = answer.json()["message"]
        assert message.startswith(f"invalid Identity: {field}: "), (harm, message)
        assert "\x1b" not in message and "\n" not in message  # the value is not echoed
        after = _member(kubeconfig, namespace, me.name)
        assert after["status"]["identity"] == HONEST, harm
        assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


def test_a_member_cannot_take_another_members_name_or_address(
    staged: dict[str, StagedMember], client: httpx.Client, kubeconfig: Path, namespace: str,
    token_key: bytes,
) -> None:
    first, second = staged["one-solo-0"], staged["one-solo-1"]
    assert client.post("/v1/identity", json=HONEST,
                       headers=_headers(first, namespace)).status_code == 200
    own = {**HONEST, "hostname": "solo-1", "fqdn": "solo-1.cluster.test",
           "addresses": ["127.30.0.2"]}
    shadows = [
        ({**own, "hostname": "solo-0", "fqdn": "solo-0.cluster.test"},
         "hostname: solo-0 is already a name of member one-solo-0"),
        ({**own, "hostname": "SOLO-0", "fqdn": "SOLO-0.cluster.test"},
         "hostname: solo-0 is already a name of member "),
        ({**own, "hostname": "solo-0", "fqdn": "solo-0"},
         "hostname: solo-0 is already a name of member one-solo-0"),
        # Its FQDN follows from its own host name, so it cannot be another member's either.
        ({**own, "fqdn": "solo-0.cluster.test"}, "fqdn: must be solo-1.cluster.test or the host "
                                                 "name solo-1"),
        ({**own, "fqdn": "solo-0"}, "fqdn: must be solo-1.cluster.test or the host name solo-1"),
        ({**own, "addresses": ["127.30.0.1"]}, "addresses[0]: 127.30.0.1 is already the address "
                                               "of member one-solo-0"),
        ({**own, "addresses": ["127.30.0.2", "127.30.0.1"]}, "addresses[1]: 127.30.0.1"),
    ]
    for forged, words in shadows:
        answer = client.post("/v1/identity", json=forged, headers=_headers(second, namespace))
        assert answer.status_code == 422, (forged, answer.text)
        assert words in answer.json()["message"]
        assert "identity" not in _member(kubeconfig, namespace, second.name).get("status", {})

    # Its own names are its own; a member of another launch may use the same ones.
    assert client.post("/v1/identity", json=own,
                       headers=_headers(second, namespace)).status_code == 200
    other = stage_launch(kubeconfig, namespace, "two", SPEC, token_key)["two-solo-0"]
    elsewhere = client.post("/v1/identity", json=HONEST, headers={
        "Authorization": f"Bearer {other.token}",
        "OneClick-Member": f"{namespace}/two/{other.name}"})
    assert elsewhere.status_code == 200, elsewhere.text
    assert _member(kubeconfig, namespace, first.name)["status"]["identity"] == HONEST


def test_a_member_is_named_under_its_launchs_domain_or_its_providers(
    staged: dict[str, StagedMember], client: httpx.Client, kubeconfig: Path, namespace: str,
    token_key: bytes,
) -> None:
    """What a member may call itself: its host name under the launch's domain (in any case,
    with or without the root's dot) or its host name alone. A launch that names no domain has
    its provider's (the local provider's oneclick.local), and only that."""
    me = staged["one-solo-0"]
    for fqdn in ("solo-0", "SOLO-0.Cluster.Test", "solo-0.cluster.test.", "solo-0.cluster.test"):
        answer = client.post("/v1/identity", json={**HONEST, "fqdn": fqdn},
                             headers=_headers(me, namespace))
        assert answer.status_code == 200, (fqdn, answer.text)
    assert _member(kubeconfig, namespace, me.name)["status"]["identity"] == HONEST

    plain = stage_launch(kubeconfig, namespace, "plain", {k: v for k, v in SPEC.items()
                                                          if k != "domain"}, token_key)
    member = plain["plain-solo-0"]
    auth = {"Authorization": f"Bearer {member.token}",
            "OneClick-Member": f"{namespace}/plain/{member.name}"}
    elsewhere = client.post("/v1/identity", json=HONEST, headers=auth)
    assert elsewhere.status_code == 422, elsewhere.text
    assert elsewhere.json()["message"] == (
        f"invalid Identity: fqdn: must be solo-0.{LOCAL_DOMAIN} or the host name solo-0 "
        f"(the launch's domain is {LOCAL_DOMAIN})")
    assert "identity" not in _member(kubeconfig, namespace, member.name).get("status", {})
    local = {**HONEST, "fqdn": f"solo-0.{LOCAL_DOMAIN}"}
    assert client.post("/v1/identity", json=local, headers=auth).status_code == 200
    assert _member(kubeconfig, namespace, member.name)["status"]["identity"] == local


def _launch(name: str, namespace: str, domain: str) -> str:
    return json.dumps({"apiVersion": API_VERSION, "kind": "ClusterLaunch",
                       "metadata": {"name": name, "namespace": namespace,
                                    "annotations": {PAUSED: "true"}},
                       "spec": {**SPEC, "domain": domain}})


@pytest.mark.parametrize(("domain", "words"), [
    ("Cluster.Test", "must be a DNS subdomain"),
    ("cluster..test", "must be a DNS subdomain"),
    ("a" * 64 + ".test", "must be a DNS subdomain"),
    ("localhost", "must not be under localhost"),
    ("cluster.localhost", "must not be under localhost"),
    ("cluster.10", "must not be under localhost nor end in an all-digit label"),
    ("x" * 254, "Too long"),
])
def test_a_launch_domain_that_is_not_a_dns_name_is_refused_by_the_api_server(
    domain: str, words: str, controller: ControllerProcess, kubeconfig: Path, namespace: str,
) -> None:
    refused = kubectl(kubeconfig, "create", "-f", "-", stdin=_launch("bad", namespace, domain),
                      check=False)
    assert refused.returncode != 0 and "spec.domain: " in refused.stderr, refused.stderr
    assert words in refused.stderr, refused.stderr
    assert "NotFound" in kubectl(kubeconfig, "get", "clusterlaunch", "bad", "-n", namespace,
                                 check=False).stderr


def test_a_launch_domain_is_fixed_once_the_launch_exists(
    controller: ControllerProcess, kubeconfig: Path, namespace: str,
) -> None:
    """Its members are named under it: another domain later would make their names foreign."""
    kubectl(kubeconfig, "create", "-f", "-", stdin=_launch("fixed", namespace, "cluster.test"))
    for patch in ({"spec": {"domain": "pypi.org"}}, {"spec": {"domain": None}}):
        changed = kubectl(kubeconfig, "patch", "clusterlaunch", "fixed", "-n", namespace,
                          "--type=merge", "-p", json.dumps(patch), check=False)
        assert changed.returncode != 0, changed.stdout
        assert "spec.domain: Invalid value" in changed.stderr, changed.stderr
        assert "domain cannot change once the launch exists" in changed.stderr
    stored = json.loads(kubectl(kubeconfig, "get", "clusterlaunch", "fixed", "-n", namespace,
                                "-o", "json").stdout)
    assert stored["spec"]["domain"] == "cluster.test"
