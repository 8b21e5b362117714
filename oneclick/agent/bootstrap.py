"""Where the bootstrap comes from: a file, cloud-init's copy of the user data, or the cloud's
metadata service (EC2's IMDSv2 first, then OpenStack's)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from pydantic import ValidationError

from oneclick.api.protocol import Bootstrap

USER_DATA_FILES = ("var/lib/cloud/instance/user-data.txt",)
METADATA_URL = "http://169.254.169.254"


class BootstrapNotFound(Exception):
    """No bootstrap anywhere; the message lists every place that was tried."""


def parse(text: str, source: str) -> Bootstrap:
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
