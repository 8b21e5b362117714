"""occ-boot: what a member's cloud-config runs with the image's own python3 (standard library
only; the controller ships this file inside the user data, it imports nothing of ours).

An image that has its own `occ-agent` runs it itself (its boot units, Nimbus images): this
leaves it alone. Otherwise the agent comes from the broker: fetched over HTTPS trusting only
the bootstrap's CA, with the member's token; run only when its SHA-256 is the one the
bootstrap carries. A download cut short of its Content-Length, or an answer that is not HTTP,
is tried again until the deadline, which bounds the whole fetch. A refusal exits non-zero
saying why in one line, and is reported to the broker (so the launch fails saying so) when
the broker takes a report; a bootstrap that cannot be used (its CA among it) cannot be. The
agent unpacks its libraries under /var/lib/oneclick/cache (root's), whatever the caller's
environment says.

    python3 occ-boot.py [--bootstrap FILE] [occ-agent's options ...]
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import json
import os
import random
import re
import shutil
import socket
import ssl
import sys
import tempfile
import time
import urllib.parse
from typing import Any

BOOTSTRAP = "/var/lib/oneclick/bootstrap.json"
AGENTS = "/var/lib/oneclick"  # where a fetched agent is kept (root's, as the bootstrap)
LIMIT = 64 * 1024 * 1024  # the largest agent taken (the bundle is about 8 MiB)
DEADLINE = 1800.0  # seconds for the whole fetch, retries and slow transfers included
WAIT = 60.0  # seconds for one request (and at most for any one wait within it)
CHUNK = 256 * 1024
NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
TOKEN = re.compile(r"^[A-Za-z0-9._~+/=-]{32,256}$")
DIGEST = re.compile(r"^[0-9a-f]{64}$")


class Refused(Exception):
    """This member will not run an agent; the message says why."""


def say(message: str) -> None:
    print(f"occ-boot: {message}", file=sys.stderr, flush=True)


def load(path: str) -> dict[str, Any]:
    """The bootstrap, each field checked before it goes into a URL or a header."""
    try:
        with open(path, "rb") as file:
            bootstrap = json.loads(file.read(256 * 1024))
    except (OSError, ValueError) as error:
        raise Refused(f"cannot read the bootstrap {path}: {error}") from error
    if not isinstance(bootstrap, dict):
        raise Refused(f"{path} is not a OneClick bootstrap")
    url = bootstrap.get("brokerUrl")
    if not isinstance(url, str) or not re.match(r"^https://[^\s/?#@]+(/[^\s?#]*)?$", url):
        raise Refused(f"{path}: brokerUrl is not an https:// address")
    try:
        urllib.parse.urlsplit(url).port  # noqa: B018 (a port out of range raises)
    except ValueError as error:
        raise Refused(f"{path}: brokerUrl is not an https:// address ({error})") from error
    for field in ("namespace", "cluster", "member"):
        if not isinstance(bootstrap.get(field), str) or not NAME.match(bootstrap[field]):
            raise Refused(f"{path}: {field} is not a Kubernetes name")
    if not isinstance(bootstrap.get("token"), str) or not TOKEN.match(bootstrap["token"]):
        raise Refused(f"{path}: the token is malformed")  # (never shown)
    if not isinstance(bootstrap.get("caCert"), str) or "CERTIFICATE" not in bootstrap["caCert"]:
        raise Refused(f"{path}: caCert is not a PEM certificate")
    try:
        trust(bootstrap["caCert"])
    except (ssl.SSLError, TypeError, ValueError) as error:
        raise Refused(f"{path}: caCert is not a usable PEM certificate: {line(error)}") from error
    digest = bootstrap.get("agentSha256")
    if digest is not None and (not isinstance(digest, str) or not DIGEST.match(digest)):
        raise Refused(f"{path}: agentSha256 is not a SHA-256 in hex")
    return bootstrap


def line(error: BaseException) -> str:
    """An error as one printable line."""
    text = " ".join(str(error).split()) or type(error).__name__
    return "".join(c if c.isprintable() else "?" for c in text)[:500]


def trust(ca: str) -> ssl.SSLContext:
    """TLS that trusts the bootstrap's CA alone."""
    tls = ssl.create_default_context(cadata=ca)
    tls.minimum_version = ssl.TLSVersion.TLSv1_2
    return tls


def left(deadline: float) -> float:
    """How long the next wait may take: what is left before `deadline`, WAIT at most."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError("the deadline passed")
    return min(WAIT, remaining)


class Broker:
    """The bootstrap's broker over http.client, which follows no redirect: the token goes to
    it alone, never where an answer points."""

    def __init__(self, bootstrap: dict[str, Any]) -> None:
        self.base = bootstrap["brokerUrl"].rstrip("/")
        split = urllib.parse.urlsplit(self.base)
        self.host, self.port, self.prefix = str(split.hostname), split.port or 443, split.path
        self.tls = trust(bootstrap["caCert"])
        self.headers = {
            "Authorization": "Bearer " + bootstrap["token"],
            "OneClick-Member": "/".join(bootstrap[k] for k in ("namespace", "cluster",
                                                               "member")),
            "User-Agent": "occ-boot"}

    def call(self, path: str, body: dict[str, Any] | None = None, limit: int = 64 * 1024,
             deadline: float | None = None) -> tuple[int, http.client.HTTPMessage, bytes]:
        """One request: its status, headers and body (at most `limit` bytes, one more says
        there was more), all of it by `deadline` (WAIT from now by default). A body cut short
        of its Content-Length raises http.client.IncompleteRead."""
        deadline = time.monotonic() + WAIT if deadline is None else deadline
        data = None if body is None else json.dumps(body).encode()
        headers = {**self.headers, **({"Content-Type": "application/json"} if data else {})}
        connection = http.client.HTTPSConnection(self.host, self.port, timeout=left(deadline),
                                                 context=self.tls)
        try:
            connection.connect()
            sock = connection.sock  # (the answer reads from it: each wait is bounded here)
            connection.request("GET" if data is None else "POST", self.prefix + path,
                               body=data, headers=headers)
            sock.settimeout(left(deadline))
            answer = connection.getresponse()
            chunks: list[bytes] = []
            size = 0
            while size <= limit:
                sock.settimeout(left(deadline))
                chunk = answer.read1(min(CHUNK, limit + 1 - size))
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
            received = b"".join(chunks)
            if size <= limit and answer.length:  # (the connection closed before the end)
                raise http.client.IncompleteRead(received, answer.length)
            return answer.status, answer.msg, received
        finally:
            connection.close()

    def address(self) -> str:
        """This member's address towards the broker (the one its packets leave from)."""
        family, _, _, _, where = socket.getaddrinfo(self.host, self.port,
                                                    type=socket.SOCK_DGRAM)[0]
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect(where)
            return str(probe.getsockname()[0])


def problem(body: bytes) -> str:
    """The broker's message, one printable line."""
    try:
        message = json.loads(body).get("message")
    except (ValueError, AttributeError):
        message = None
    text = str(message)[:500] if message else body[:200].decode(errors="replace")
    return "".join(c if c.isprintable() else "?" for c in text)


def fetch(broker: Broker, deadline: float) -> tuple[bytes, str | None]:
    """The agent the broker serves whole, and its Content-Digest, by `deadline`; retried while
    the broker cannot be reached, is busy, cuts the transfer short or answers other than
    HTTP, refused on any other answer."""
    attempt = 0
    while True:
        try:
            status, headers, body = broker.call("/v1/agent", limit=LIMIT, deadline=deadline)
            said = headers.get("Content-Length", "")
            length = int(said) if said.isdigit() else None
            if status == 200 and max(len(body), length or 0) > LIMIT:
                raise Refused(f"the agent the broker serves is over {LIMIT} bytes")
            if status == 200 and length == len(body):
                return body, headers.get("Content-Digest")
            if status == 200:  # (never taken for whole: a cut copy would be a "mismatch")
                why = (f"the answer says it is {said} bytes, {len(body)} came" if said
                       else "the answer has no Content-Length: it may be cut short")
            elif status not in (429, 500, 502, 503, 504):
                raise Refused(f"the broker refused the agent ({status}): {problem(body)}")
            else:
                why = f"the broker answered {status}"
        except http.client.IncompleteRead as error:
            why = (f"the transfer was cut short after {len(error.partial)} bytes, "
                   f"{error.expected} more expected")
        except http.client.HTTPException as error:
            why = f"the answer is not HTTP ({type(error).__name__}: {line(error)})"
        except OSError as error:  # (ssl.SSLError and TimeoutError are OSErrors)
            why = line(error)
        attempt += 1
        delay = random.uniform(0.5, min(15.0, 0.5 * 2 ** attempt))  # noqa: S311
        if time.monotonic() + delay > deadline:
            raise Refused(f"could not fetch the agent from {broker.base}: {why}")
        say(f"fetching the agent from {broker.base}: {why}; again in {delay:.0f} s")
        time.sleep(delay)


def keep(body: bytes, digest: str) -> str:
    """The agent written where root alone can change it, under its digest (replaced whole)."""
    os.makedirs(AGENTS, mode=0o700, exist_ok=True)
    target = os.path.join(AGENTS, f"occ-agent-{digest[:16]}.pyz")
    # A fresh name (O_EXCL, no link followed, 0600): a file a crash left is never in the way.
    fd, staging = tempfile.mkstemp(prefix=".occ-agent-", suffix=".new", dir=AGENTS)
    try:
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), 0o700)
            out.write(body)
            out.flush()
            os.fsync(out.fileno())
        os.replace(staging, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(staging)
        raise
    return target


def kept(digest: str) -> str | None:
    """An agent fetched before (a reboot) whose digest is still the one wanted."""
    target = os.path.join(AGENTS, f"occ-agent-{digest[:16]}.pyz")
    try:
        fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as file:
        return target if hashlib.sha256(file.read(LIMIT + 1)).hexdigest() == digest else None


def agent_from_broker(bootstrap: dict[str, Any], broker: Broker) -> str:
    want = bootstrap.get("agentSha256")
    if not want:
        raise Refused("this image has no occ-agent and the broker serves none (the controller "
                      "names no OCC_AGENT_BUNDLE): nothing to run")
    found = kept(want)
    if found:
        return found
    body, said = fetch(broker, time.monotonic() + DEADLINE)
    digest = hashlib.sha256(body).digest()
    if digest.hex() != want:
        raise Refused(f"agent digest mismatch: the broker served an agent whose SHA-256 is "
                      f"{digest.hex()}, the bootstrap expects {want}; refusing to run it")
    if said is not None and said != f"sha-256=:{base64.b64encode(digest).decode()}:":
        raise Refused("agent digest mismatch: the agent fetched does not match the broker's "
                      "Content-Digest; refusing to run it")
    try:
        return keep(body, want)
    except OSError as error:
        raise Refused(f"cannot keep the agent under {AGENTS}: {error}") from error


def report(bootstrap: dict[str, Any], broker: Broker, message: str) -> None:
    """Tell the broker this member failed (an identity first, as the broker asks): the
    launch fails saying why instead of waiting for its timeout."""
    try:
        host = socket.gethostname().split(".")[0].lower()
        domain = bootstrap.get("domain")
        fqdn = f"{host}.{domain}" if isinstance(domain, str) and domain else host
        status, _, body = broker.call("/v1/identity", {
            "hostname": host, "fqdn": fqdn, "addresses": [broker.address()]})
        if status == 200:
            status, _, body = broker.call("/v1/report", {
                "ok": False, "failedStep": "occ-boot: fetch the agent", "exitCode": 1,
                "message": message[:4000], "logTail": f"occ-boot: {message}\n"[:16000]})
        if status != 200:
            say(f"the broker did not take the report ({status}): {problem(body)}")
    except (OSError, http.client.HTTPException, ValueError) as error:
        say(f"could not report to the broker: {line(error)}")


def main(argv: list[str]) -> int:
    path = BOOTSTRAP
    if argv[:1] == ["--bootstrap"] and len(argv) > 1:
        path, argv = argv[1], argv[2:]
    try:
        bootstrap = load(path)
    except Refused as error:
        say(str(error))
        return 2
    own = shutil.which("occ-agent")
    if own:
        say(f"this image has its own agent ({own}); its boot runs it")
        return 0
    broker = Broker(bootstrap)
    try:
        agent = agent_from_broker(bootstrap, broker)
    except Refused as error:
        say(str(error))
        report(bootstrap, broker, str(error))
        return 1
    say(f"running the agent {agent} (SHA-256 {bootstrap['agentSha256']})")
    # Its libraries unpack where root alone writes, never a shared /tmp (the environment
    # cloud-init gives names no cache).
    environment = {**os.environ, "OCC_AGENT_CACHE": os.path.join(AGENTS, "cache")}
    os.execve(sys.executable,  # noqa: S606 (the agent just checked, by this interpreter)
              [sys.executable, "-I", agent, "--bootstrap", path, *argv], environment)
    return 127  # (execv returns only by raising)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
