"""Host names and addresses a member may state about itself.

What passes is written by other members into /etc/hosts, ssh_known_hosts and shosts.equiv and
handed to role scripts as arguments, so it must be inert there: a host name is an RFC 1123
label, an FQDN is a DNS name made of such labels, an address is an IP address in canonical
form. No spaces, wildcards, commas, slashes or control characters get through any of them.
Nor do names every machine's resolver already gives a meaning (localhost and its kin), and a
launch's domain, under which its members' FQDNs live, is a lower-case DNS name.
"""

from __future__ import annotations

import ipaddress
import re

# For the JSON schema (CRD, OpenAPI); the functions below are the real check.
LABEL = r"[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?"
HOSTNAME_PATTERN = rf"^{LABEL}$"
FQDN_PATTERN = rf"^{LABEL}([.]{LABEL})*[.]?$"
ADDRESS_PATTERN = r"^[0-9A-Fa-f.:]{2,45}$"
FQDN_LIMIT = 253
# A launch's domain: a DNS subdomain (lower case, as Kubernetes names are) without localhost.
DOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DOMAIN_LIMIT = FQDN_LIMIT

_LABEL = re.compile(LABEL)
_DOMAIN = re.compile(DOMAIN_PATTERN)
_BROADCAST = ipaddress.IPv4Address("255.255.255.255")
# First labels that other members' resolvers already give a meaning: localhost and its kin
# (localhost4, localhost6, localhost.localdomain of some distributions), Debian's ip6-* names
# in /etc/hosts (ip6-localhost, ip6-allnodes, ...), macOS's broadcasthost, and the names
# clients look up to find a web proxy (wpad) or a tunnel (isatap).
RESERVED_PREFIXES = ("localhost", "ip6-")
RESERVED_NAMES = ("broadcasthost", "wpad", "isatap")
RESERVED = ("must not be localhost*, ip6-*, broadcasthost, wpad or isatap (names every "
            "machine's resolver already gives a meaning)")


def _reserved(name: str) -> bool:
    """Whether the name is one no member may claim: a reserved first label, or a name under
    localhost (RFC 6761: every machine's name for itself)."""
    labels = name.lower().split(".")
    return (labels[0].startswith(RESERVED_PREFIXES) or labels[0] in RESERVED_NAMES
            or labels[-1] == "localhost")


def hostname(value: str) -> str:
    """A short host name: one RFC 1123 label."""
    if not _LABEL.fullmatch(value):
        raise ValueError("must be an RFC 1123 label: 1 to 63 letters, digits and '-', "
                         "starting and ending with a letter or digit")
    if value.isdigit():
        raise ValueError("must not be all digits (it would read as an address)")
    if _reserved(value):
        raise ValueError(RESERVED)
    return value


def fqdn(value: str) -> str:
    """A DNS name of RFC 1123 labels (a single label is a short name); one trailing dot is
    dropped."""
    name = value[:-1] if value.endswith(".") else value
    if not name or len(name) > FQDN_LIMIT:
        raise ValueError(f"must be a DNS name of 1 to {FQDN_LIMIT} characters")
    labels = name.split(".")
    if not all(_LABEL.fullmatch(label) for label in labels):
        raise ValueError("must be a DNS name: labels of 1 to 63 letters, digits and '-', "
                         "starting and ending with a letter or digit, joined by '.'")
    if labels[-1].isdigit():
        raise ValueError("must not end in an all-digit label (it would read as an address)")
    if _reserved(name):
        raise ValueError(RESERVED)
    return name


def domain(value: str) -> str:
    """A launch's DNS domain: its members' FQDNs are their host names under it."""
    if not value or len(value) > DOMAIN_LIMIT or not _DOMAIN.fullmatch(value):
        raise ValueError(f"must be a DNS subdomain of 1 to {DOMAIN_LIMIT} characters: "
                         "lower-case letters, digits, '-' and '.', each label starting and "
                         "ending with a letter or digit")
    labels = value.split(".")
    if any(len(label) > 63 for label in labels):
        raise ValueError("must be a DNS name: labels of at most 63 characters")
    if labels[-1].isdigit():
        raise ValueError("must not end in an all-digit label (it would read as an address)")
    if "localhost" in labels:
        raise ValueError("must not be under localhost (every machine's name for itself)")
    return value


def address(value: str) -> str:
    """An IP address a host can be reached at, in canonical form."""
    try:
        parsed = ipaddress.ip_address(value)
    except ValueError:
        raise ValueError("must be an IPv4 or IPv6 address (no prefix length, no zone, no "
                         "names)") from None
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.scope_id:
        raise ValueError("must not carry a zone (%...)")
    if parsed.is_unspecified or parsed.is_multicast or parsed == _BROADCAST:
        raise ValueError("must be a host's address (not unspecified, multicast or broadcast)")
    return str(parsed)
