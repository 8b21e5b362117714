"""The user data every provider hands a member: a cloud-config (cloud-init's own format, checked
against its schema by the tests) that writes the bootstrap where root alone reads it and runs
occ-boot (member_boot.py, standard library only) with the image's python3: it fetches the
agent from the broker, checks its digest against the bootstrap's and runs it, or leaves an
image that has its own occ-agent to it.

Rendered as `#cloud-config` and then JSON: cloud-init reads it as YAML (JSON is YAML), and the
agent finds its bootstrap in it without a YAML parser (agent.bootstrap.from_cloud_config)."""

from __future__ import annotations

import base64
import gzip
import json
from functools import cache
from pathlib import Path
from typing import Any

from oneclick.agent.bootstrap import BOOTSTRAP_FILE, CLOUD_CONFIG
from oneclick.api.protocol import Bootstrap

__all__ = ["BOOTSTRAP_FILE", "BOOT_SCRIPT", "CLOUD_CONFIG", "USER_DATA_LIMIT", "files",
           "render"]

BOOT_SCRIPT = "/var/lib/oneclick/occ-boot.py"
# The agent's first pass (cloud-init waits for it: services after cloud-final find the member
# configured), then a unit that follows the launch when the image has systemd.
RUNCMD: list[Any] = [
    ["python3", "-I", BOOT_SCRIPT, "--bootstrap", BOOTSTRAP_FILE],
    ["sh", "-c", "! command -v systemd-run >/dev/null || systemd-run --unit occ-agent-follow "
                 f"python3 -I {BOOT_SCRIPT} --bootstrap {BOOTSTRAP_FILE} --follow"],
]
USER_DATA_LIMIT = 16 * 1024  # EC2's, the smallest of the clouds we know


@cache
def boot_script() -> str:
    """occ-boot, compressed (cloud-init's gz+b64): the user data stays far below EC2's 16 KiB."""
    source = Path(__file__).with_name("member_boot.py").read_bytes()
    return base64.b64encode(gzip.compress(source, mtime=0)).decode()


def cloud_config(bootstrap: Bootstrap) -> dict[str, Any]:
    return {
        "write_files": [
            {"path": BOOTSTRAP_FILE, "owner": "root:root", "permissions": "0600",
             "content": bootstrap.model_dump_json(by_alias=True, exclude_none=True)},
            {"path": BOOT_SCRIPT, "owner": "root:root", "permissions": "0700",
             "encoding": "gz+b64", "content": boot_script()},
        ],
        "runcmd": RUNCMD,
    }


def render(bootstrap: Bootstrap) -> str:
    """The member's user data (the one secret it receives: the bootstrap is in it)."""
    return f"{CLOUD_CONFIG}\n{json.dumps(cloud_config(bootstrap), indent=1)}\n"


def files(user_data: str) -> dict[str, tuple[str, int]]:
    """What the cloud-config writes (path: content, mode), as cloud-init would: for a provider
    that boots its members itself (local). Only this renderer's form is read."""
    first, _, body = user_data.partition("\n")
    if first != CLOUD_CONFIG:
        raise ValueError("the user data is not a cloud-config")
    written: dict[str, tuple[str, int]] = {}
    for entry in json.loads(body).get("write_files", []):
        content = str(entry["content"])
        if entry.get("encoding", "text/plain") == "gz+b64":
            content = gzip.decompress(base64.b64decode(content, validate=True)).decode()
        elif entry.get("encoding", "text/plain") != "text/plain":
            raise ValueError(f"write_files encoding {entry['encoding']!r} is not this renderer's")
        written[str(entry["path"])] = (content, int(entry["permissions"], 8))
    return written
