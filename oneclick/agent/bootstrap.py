"""Where the bootstrap comes from: a file, cloud-init's copy of the user data, or the cloud's
metadata service (EC2's IMDSv2 first, then OpenStack's). Each holds the bootstrap's JSON, or
the cloud-config the controller renders (`#cloud-config`, then JSON: YAML reads it as cloud-init
does, and so does the agent without a YAML parser), whose write_files entry for
BOOTSTRAP_FILE carries it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
from pydantic import ValidationError

from oneclick.api.protocol import Bootstrap

USER_DATA_FILES = ("var/lib/cloud/instance/user-data.txt",)
METADATA_URL = "http://169.254.169.254"
# Where the cloud-config writes the bootstrap (root's only, 0600), and its first line.
BOOTSTRAP_FILE = "/var/lib/oneclick/bootstrap.json"
CLOUD_CONFIG = "#cloud-config"
USER_DATA_LIMIT = 1024 * 1024  # far above any cloud's (EC2's: 16 KiB); more is not ours


class BootstrapNotFound(Exception):
    """No bootstrap anywhere; the message lists every place that was tried."""


def from_cloud_config(text: str, source: str) -> str:
    """The bootstrap's JSON out of a cloud-config as the controller renders it: the content of
    its one write_files entry for BOOTSTRAP_FILE (plain text)."""
    _, _, body = text.partition("\n")
    try:
        config = json.loads(body)
    except ValueError as error:
        raise BootstrapNotFound(
            f"{source} is a cloud-config the agent cannot read: the controller renders it as "
            f"JSON after its first line ({error})") from error
    files = config.get("write_files") if isinstance(config, dict) else None
    found = [entry for entry in files if isinstance(entry, dict)
             and entry.get("path") == BOOTSTRAP_FILE] if isinstance(files, list) else []
    if len(found) != 1:
        raise BootstrapNotFound(f"{source} is a cloud-config without a OneClick bootstrap "
                                f"(one write_files entry for {BOOTSTRAP_FILE})"
                                if not found else f"{source} writes {BOOTSTRAP_FILE} "
                                f"{len(found)} times: which one is the bootstrap?")
    content, encoding = found[0].get("content"), found[0].get("encoding", "text/plain")
    if not isinstance(content, str) or encoding != "text/plain":
        raise BootstrapNotFound(f"{source}: the write_files entry for {BOOTSTRAP_FILE} is not "
                                "plain text")
    return content


def parse(text: str, source: str) -> Bootstrap:
    if len(text) > USER_DATA_LIMIT:
        raise BootstrapNotFound(f"{source} is not a OneClick bootstrap: over "
                                f"{USER_DATA_LIMIT} characters")
    if text.startswith(CLOUD_CONFIG + "\n"):
        text = from_cloud_config(text, source)
    try:
        return Bootstrap.model_validate_json(text)
    except ValidationError as error:
        raise BootstrapNotFound(f"{source} is not a OneClick bootstrap: "
                                f"{error.errors()[0]['msg']}") from error


def from_metadata(base_url: str, timeout: float = 2.0) -> tuple[str, str] | None:
    """The user data from the metadata service, with its source; None when there is none."""
    with httpx.Client(base_url=base_url, timeout=timeout) as client:
        try:  # EC2 IMDSv2: a session token first, then the user data with it
            token = client.put("/latest/api/token",
                               headers={"X-aws-ec2-metadata-token-ttl-seconds": "21600"})
            if token.status_code == 200:
                data = client.get("/latest/user-data",
                                  headers={"X-aws-ec2-metadata-token": token.text})
                if data.status_code == 200:
                    return data.text, f"{base_url}/latest/user-data (IMDSv2)"
        except httpx.HTTPError:
            pass
        try:
            data = client.get("/openstack/latest/user_data")
            if data.status_code == 200:
                return data.text, f"{base_url}/openstack/latest/user_data"
        except httpx.HTTPError:
            pass
    return None


def read(path: Path | None, root: Path, metadata_url: str = METADATA_URL) -> Bootstrap:
    if path is not None:
        try:
            return parse(path.read_text(), str(path))
        except OSError as error:
            raise BootstrapNotFound(f"cannot read {path}: {error.strerror}") from error
    tried = []
    for relative in USER_DATA_FILES:
        candidate = root / relative
        tried.append(str(candidate))
        if candidate.is_file():
            return parse(candidate.read_text(), str(candidate))
    found = from_metadata(metadata_url)
    tried.append(f"the metadata service at {metadata_url} (EC2 IMDSv2, OpenStack)")
    if found is not None:
        return parse(*found)
    raise BootstrapNotFound("no bootstrap found; tried " + ", ".join(tried)
                            + " (give one with --bootstrap FILE)")


async def read_again(path: Path | None, root: Path,
                     metadata_url: str = METADATA_URL) -> Bootstrap | None:
    """The bootstrap from the same places, read again (the operator may have handed the member
    a new one); None when none can be read now. Off the event loop: the metadata service may
    take its time."""
    try:
        return await asyncio.to_thread(read, path, root, metadata_url)
    except BootstrapNotFound:
        return None
