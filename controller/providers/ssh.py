"""The ssh provider: bring-your-own machines, reached with asyncssh.

A launch takes a free host of the pool, copies the member's bootstrap to it over SFTP and starts
`occ-agent` there; terminating stops the agent, removes what it and we wrote, and frees the host.

The pool's state lives on the hosts themselves, as a cloud's lives in the cloud: a host is taken
when `/var/lib/oneclick/provider/claim` exists, a symbolic link whose target is the member's
idempotency key. Creating a link is atomic, so two launches can never take one host, and a
relaunch after a crash finds the host its key already took. Host keys are pinned from the
configuration; a host that presents another key is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shlex
from dataclasses import dataclass

import asyncssh

from controller.providers.base import (
    Instance,
    InstanceState,
    LaunchRequest,
    ProviderError,
    SecretReader,
    secret_data,
)
from controller.providers.config import SSHHost, SSHProviderConfig

logger = logging.getLogger(__name__)

STATE = "/var/lib/oneclick"  # the agent's directory on the host (DESIGN: the context)
MINE = f"{STATE}/provider"  # this provider's files: claim, bootstrap, agent pid, exit code, log
KEY_IN_ID = 13  # characters of the idempotency key in an instance id

CLAIM = f"""
set -eu
mkdir -p {MINE} && chmod 700 {MINE}
ln -s "$1" {MINE}/claim 2>/dev/null || true
readlink {MINE}/claim
"""

# $1 key, $2 the uploaded bootstrap, $3 the agent command.
START = f"""
set -eu
[ "$(readlink {MINE}/claim)" = "$1" ] || {{ echo "this host is not claimed by $1" >&2; exit 3; }}
if [ -f "$2" ]; then mv -f "$2" {MINE}/bootstrap.json && chmod 600 {MINE}/bootstrap.json; fi
[ -s {MINE}/agent.pid ] && exit 0  # started before a crash: once is enough
agent=${{3%% *}}
command -v "$agent" >/dev/null || {{ echo "there is no $agent on this host" >&2; exit 4; }}
cd /
setsid sh -c "$3 --bootstrap {MINE}/bootstrap.json; echo \\$? > {MINE}/agent.exit" \\
  </dev/null >{MINE}/agent.log 2>&1 &
echo $! > {MINE}/agent.pid
"""

STATUS = f"""
echo "claim=$(readlink {MINE}/claim 2>/dev/null)"
pid=$(cat {MINE}/agent.pid 2>/dev/null || true)
if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then echo agent=running; \\
  elif [ -n "$pid" ]; then echo agent=ended; else echo agent=none; fi
echo "exit=$(cat {MINE}/agent.exit 2>/dev/null)"
echo "tail=$(tail -n 3 {MINE}/agent.log 2>/dev/null | tr '\\n' '|')"
"""

# $1 the key's prefix (from the instance id). The claim goes last: a crash halfway leaves the
# host taken, and the controller's next terminate finishes the job.
TERMINATE = f"""
claim=$(readlink {MINE}/claim 2>/dev/null) || exit 0
case "$claim" in "$1"*) ;; *) exit 0 ;; esac
pid=$(cat {MINE}/agent.pid 2>/dev/null || true)
if [ -n "$pid" ]; then kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null; fi
for f in {STATE}/* {STATE}/.[!.]*; do [ "$f" = {MINE} ] || rm -rf "$f"; done
rm -f /var/log/oneclick-agent.log {MINE}/bootstrap.json {MINE}/agent.*
rm -f {MINE}/claim && rmdir {MINE}
"""


class HostUnusable(Exception):
    """This host cannot be used now; the message says why."""

    def __init__(self, message: str, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass
class Claim:
    host: SSHHost
    key: str | None  # the idempotency key holding the host, None when it is free


class SSHProvider:
    def __init__(self, config: SSHProviderConfig, secrets: SecretReader) -> None:
        self.config = config
        self.name = config.name
        self._secrets = secrets
        self._connections: dict[str, asyncssh.SSHClientConnection] = {}
        self._connecting: dict[str, asyncio.Lock] = {}
        self._claiming = asyncio.Lock()  # one pick at a time here; the link decides anyway

    @property
    def broker_host(self) -> str:
        return self.config.broker_host

    def limitations(self) -> list[str]:
        return [f"members are the pool's {len(self.config.hosts)} existing hosts; a role's "
                "image and size are not applied (install what roles need on the hosts)"]

    # -- the interface --------------------------------------------------------------------

    async def launch(self, request: LaunchRequest) -> Instance:
        async with self._claiming:
            host = await self._take(request)
        upload = f".oneclick-bootstrap-{request.idempotency_key}.json"
        try:
            connection = await self._connect(host)
            async with connection.start_sftp_client() as sftp:
                async with sftp.open(upload, "w", asyncssh.SFTPAttrs(permissions=0o600)) as f:
                    await f.write(request.user_data)
                uploaded = await sftp.realpath(upload)
            await self._run(host, START, request.idempotency_key, uploaded,
                            self.config.agent_command)
        except (OSError, asyncssh.Error) as error:
            raise ProviderError(f"starting the agent on {host.address}: {error}") from error
        except HostUnusable as error:
            raise ProviderError(str(error), permanent=error.permanent) from error
        return Instance(self._instance_id(host, request.idempotency_key), InstanceState.PENDING,
                        [host.address], message="agent starting")

    async def lookup(self, idempotency_key: str) -> Instance | None:
        claims, _ = await self.claims()
        host = next((c.host for c in claims if c.key == idempotency_key), None)
        if host is None:
            return None
        instance_id = self._instance_id(host, idempotency_key)
        return (await self.describe([instance_id])).get(instance_id) or Instance(
            instance_id, InstanceState.PENDING, [host.address])

    async def describe(self, instance_ids: list[str]) -> dict[str, Instance]:
        """What each host says; a host that cannot be reached now is left out (no news)."""
        wanted = [(i, *self._parse(i)) for i in instance_ids]
        found: dict[str, Instance] = {}

        async def one(instance_id: str, host: SSHHost | None, key_prefix: str) -> None:
            if host is None:
                found[instance_id] = Instance(instance_id, InstanceState.TERMINATED,
                                              message="no such host in the pool")
                return
            try:
                status = await self._status(host)
            except HostUnusable as error:
                logger.warning("describing %s: %s", instance_id, error)
                return
            found[instance_id] = _instance(instance_id, host, key_prefix, status)

        await asyncio.gather(*(one(*w) for w in wanted))
        return found

    async def terminate(self, instance_ids: list[str]) -> None:
        async def one(host: SSHHost | None, key_prefix: str) -> None:
            if host is not None:
                await self._run(host, TERMINATE, key_prefix)

        results = await asyncio.gather(*(one(*self._parse(i)) for i in instance_ids),
                                       return_exceptions=True)
        failures = [str(r) for r in results if isinstance(r, BaseException)]
        if failures:
            raise ProviderError("terminating: " + "; ".join(failures))

    async def close(self) -> None:
        for connection in self._connections.values():
            connection.close()
        self._connections.clear()

    # -- the pool -------------------------------------------------------------------------

    async def claims(self) -> tuple[list[Claim], dict[str, HostUnusable]]:
        """Who holds each reachable host, and why the others cannot be used."""
        results = await asyncio.gather(*(self._status(h) for h in self.config.hosts),
                                       return_exceptions=True)
        claims, unusable = [], {}
        for host, result in zip(self.config.hosts, results, strict=True):
            if isinstance(result, HostUnusable):
                unusable[host.address] = result
            elif isinstance(result, BaseException):
                raise result
            else:
                claims.append(Claim(host, result.get("claim") or None))
        return claims, unusable

    async def _take(self, request: LaunchRequest) -> SSHHost:
        """The host this key holds already (a relaunch after a crash), or a free one."""
        claims, unusable = await self.claims()
        for claim in claims:
            if claim.key == request.idempotency_key:
                return claim.host
        taken = 0
        for claim in claims:
            if claim.key is not None:
                taken += 1
                continue
            try:
                holder = (await self._run(claim.host, CLAIM, request.idempotency_key)).strip()
            except HostUnusable as error:
                unusable[claim.host.address] = error
                continue
            if holder == request.idempotency_key:
                logger.info("%s takes host %s for %s/%s", self.name, claim.host.address,
                            request.namespace, request.member)
                return claim.host
            taken += 1  # someone else was quicker
        reasons = "".join(f"; {address}: {error}" for address, error in unusable.items())
        raise ProviderError(
            f"provider {self.name!r} has no free host for {request.member}: {taken} of "
            f"{len(self.config.hosts)} taken, {len(unusable)} unusable{reasons}",
            permanent=all(e.permanent for e in unusable.values()))

    # -- one host -------------------------------------------------------------------------

    @staticmethod
    def _instance_id(host: SSHHost, key: str) -> str:
        return f"ssh/{host.address}:{host.port}/{key[:KEY_IN_ID]}"

    def _parse(self, instance_id: str) -> tuple[SSHHost | None, str]:
        """The host and the prefix of the key that holds it."""
        _, host_port, prefix = [*instance_id.split("/"), "", ""][:3]
        host = next((h for h in self.config.hosts if f"{h.address}:{h.port}" == host_port),
                    None)
        return host, prefix or "?"  # (an empty prefix would match any claim)

    async def _connect(self, host: SSHHost) -> asyncssh.SSHClientConnection:
        lock = self._connecting.setdefault(host.address, asyncio.Lock())
        async with lock:
            found = self._connections.get(host.address)
            if found is not None and not found.is_closed():
                return found
            ref = self.config.private_key
            data = await secret_data(self._secrets, self.name, ref.secret, (ref.key,))
            key = asyncssh.import_private_key(data[ref.key])
            pinned = [asyncssh.import_public_key(k) for k in host.host_keys]
            try:
                connection = await asyncssh.connect(
                    host.address, host.port, username=self.config.user, client_keys=[key],
                    known_hosts=(pinned, [], []), agent_path=None,
                    connect_timeout=self.config.connect_timeout, keepalive_interval=30)
            except asyncssh.HostKeyNotVerifiable as error:
                raise HostUnusable("refused: it presented a host key that is not one of its "
                                   f"pinned keys ({error.reason})", permanent=True) from error
            except asyncssh.PermissionDenied as error:
                raise HostUnusable(f"the key of Secret {self.config.private_key.secret!r} is "
                                   f"not accepted for {self.config.user}@{host.address}",
                                   permanent=True) from error
            except (OSError, asyncssh.Error, TimeoutError) as error:
                raise HostUnusable(f"unreachable: {error or type(error).__name__}",
                                   permanent=False) from error
            self._connections[host.address] = connection
            return connection

    async def _status(self, host: SSHHost) -> dict[str, str]:
        """STATUS's lines as a mapping: claim, agent, exit, tail."""
        output = await self._run(host, STATUS)
        return dict(line.partition("=")[::2] for line in output.splitlines())

    async def _run(self, host: SSHHost, script: str, *args: str) -> str:
        """Run a script as root on the host; its output, or HostUnusable saying what failed."""
        command = " ".join(["sh", "-c", shlex.quote(script), "sh", *map(shlex.quote, args)])
        if self.config.sudo:
            command = "sudo -n " + command
        for attempt in (1, 2):  # a kept connection may have died since: connect once more
            connection = await self._connect(host)
            try:
                result = await connection.run(command, check=False)
                break
            except (OSError, asyncssh.Error) as error:
                self._connections.pop(host.address, None)
                with contextlib.suppress(Exception):
                    connection.close()
                if attempt == 2:
                    raise HostUnusable(f"unreachable: {error}", permanent=False) from error
        if result.exit_status != 0:
            raise HostUnusable(f"{str(result.stderr).strip() or 'a command failed'} (exit "
                               f"code {result.exit_status})", permanent=True)
        return str(result.stdout)


def _instance(instance_id: str, host: SSHHost, key_prefix: str, status: dict[str, str]) -> Instance:
    if not status.get("claim", "").startswith(key_prefix):
        return Instance(instance_id, InstanceState.TERMINATED, [host.address],
                        message="the host no longer holds this member")
    agent, code = status.get("agent"), status.get("exit", "")
    tail = status.get("tail", "").strip("|").replace("|", " | ")
    if agent == "none":
        return Instance(instance_id, InstanceState.PENDING, [host.address], "agent not started")
    if agent == "running" or code == "0":
        return Instance(instance_id, InstanceState.RUNNING, [host.address],
                        "agent running" if agent == "running" else "agent finished")
    return Instance(instance_id, InstanceState.FAILED, [host.address],
                    f"occ-agent exited with code {code or '?'}: {tail}")
