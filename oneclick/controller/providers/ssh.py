"""The ssh provider: bring-your-own machines, reached with asyncssh.

A launch takes a free host of the pool and puts there over SFTP what the member's cloud-config
writes (its bootstrap and occ-boot, with their modes: userdata.files()); then it starts the
host's own agent (`agentCommand`) or, on a host that has none, occ-boot with the host's
python3, which fetches the agent from the broker and runs it once its digest is the
bootstrap's. Terminating stops the agent, takes back everything it installed (with the agent
that ran: the host's, or the one fetched), removes what the launch put there (the bootstrap,
occ-boot, the fetched agent and its unpacked libraries), checks from here, runs the pool's
reset command if there is one, and only then frees the host.

Which host is whose lives in the API server (claims.py: a Lease per host), never on the hosts:
whoever holds a host is root there. A host keeps `/var/lib/oneclick/provider/claim` as a hint
for whoever looks at it, nothing more. Host keys are pinned from the configuration; a host
that presents another key is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import posixpath
import shlex

import asyncssh

from oneclick.agent.tasks import BEGIN
from oneclick.agent.uninstall import DROP_INS, MANAGED
from oneclick.controller.providers.base import (
    Instance,
    InstanceState,
    LaunchRequest,
    ProviderError,
    SecretReader,
    secret_data,
)
from oneclick.controller.providers.claims import HostClaim, HostClaims
from oneclick.controller.providers.config import SSHHost, SSHProviderConfig
from oneclick.controller.providers.userdata import BOOT_SCRIPT, BOOTSTRAP_FILE, files

logger = logging.getLogger(__name__)

STATE = "/var/lib/oneclick"  # the agent's directory on the host (DESIGN: the context)
MINE = f"{STATE}/provider"  # this provider's files: claim hint, bootstrap, agent pid, exit, log
KEY_IN_ID = 13  # characters of the idempotency key in an instance id
OUTPUT_LIMIT = 2000  # characters of a command's output kept in a host's reason
# Seconds each remote step may take (the host's tenant was root there: anything may hang; the
# uninstall's own is the pool's uninstallTimeout, as the reset command's is its resetTimeout).
UPLOAD_TIMEOUT = 120.0
START_TIMEOUT = 120.0
STATUS_TIMEOUT = 30.0
REFRESH_TIMEOUT = 60.0

# $1 key, $2 the agent command, $3 the uploaded folder (its files 0, 1, ...), then for each of
# its files the path it goes to and its mode. The host's own agent when it has the command;
# otherwise occ-boot with the host's python3 (the agent from the broker, its libraries
# unpacked under the state directory, which terminating removes). The uploaded folder (the
# bootstrap: the member's token) goes whatever happens. (`set -e` does not end the script
# when a command of an && list other than the last fails: each list says it failed itself.)
START = f"""
set -eu
key=$1 command=$2 staged=$3; shift 3
trap 'rm -rf "$staged"' EXIT
mkdir -p {MINE} && chmod 700 {MINE} || {{ echo "cannot make {MINE}" >&2; exit 6; }}
if [ "$(readlink {MINE}/claim 2>/dev/null)" = "$key" ] && [ -f {MINE}/agent.pid ] && \
    [ -s {MINE}/agent.pid ]; then
  exit 0  # started for this key before a crash: once is enough
fi
rm -rf {MINE}/agent.pid {MINE}/agent.exit {MINE}/agent.log
ln -sfn "$key" {MINE}/claim
i=0
while [ $# -ge 2 ]; do
  mkdir -p "$(dirname "$1")"
  mv -f "$staged/$i" "$1" && chown 0:0 "$1" && chmod "$2" "$1" || {{
    echo "cannot put $1 in place" >&2; exit 7; }}
  i=$((i + 1)); shift 2
done
agent=${{command%% *}}
if command -v "$agent" >/dev/null; then
  run="$command --bootstrap {BOOTSTRAP_FILE} --follow"
elif own=$(command -v occ-agent); then
  echo "there is no $agent on this host but there is $own: name it in agentCommand" >&2; exit 4
elif ! command -v python3 >/dev/null; then
  echo "there is neither $agent nor python3 on this host" >&2; exit 4
else
  run="OCC_AGENT_CACHE={STATE}/cache python3 -I {BOOT_SCRIPT} --bootstrap {BOOTSTRAP_FILE}"
  run="$run --follow"
fi
cd /
setsid sh -c "$run; echo \\$? > {MINE}/agent.exit" </dev/null >{MINE}/agent.log 2>&1 &
echo $! > {MINE}/agent.pid
"""

# What is read is read only from regular files, and only so much (a FIFO or a huge file left
# there by the host's tenant blocks nothing).
STATUS = f"""
pid="" code="" tail=""
[ ! -f {MINE}/agent.pid ] || pid=$(head -c 32 {MINE}/agent.pid 2>/dev/null)
if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then echo agent=running; \\
  elif [ -n "$pid" ]; then echo agent=ended; else echo agent=none; fi
[ ! -f {MINE}/agent.exit ] || code=$(head -c 32 {MINE}/agent.exit 2>/dev/null)
[ ! -f {MINE}/agent.log ] || tail=$(tail -c 4096 {MINE}/agent.log 2>/dev/null | tail -n 3)
echo "exit=$(printf %s "$code" | tr -d '\\n')"
echo "tail=$(printf %s "$tail" | tr '\\n' '|')"
"""

# $1 the agent command, $2 the login. The agent's session goes, then what the agent installed
# (by the agent that ran: the host's own, else the one fetched, run from a copy outside the
# state directory it removes), then the state (bootstrap, occ-boot, the fetched agent and its
# unpacked libraries) and what a launch may have left in the login's home (its uploaded
# folders: a bootstrap holds the member's token); what is left is checked here, not taken on
# the host's word. A failure exits non-zero: the host then stays out of the pool. Each step
# says on stdout that it begins (a step that does not finish is named by the last line).
TERMINATE = f"""
problems="" pid=""
echo "stopping the agent"
if [ -f {MINE}/agent.pid ]; then
  pid=$(head -c 32 {MINE}/agent.pid 2>/dev/null)
elif [ -e {MINE}/agent.pid ] || [ -L {MINE}/agent.pid ]; then
  problems="{MINE}/agent.pid is not a file: the agent may still run; "
fi
case "$pid" in ''|*[!0-9]*|0|1) ;; *) kill -KILL "-$pid" 2>/dev/null || \\
  kill -KILL "$pid" 2>/dev/null ;; esac  # (the session: dash's kill takes no --)
agent=${{1%% *}}
echo "uninstalling with $agent (or the fetched agent)"
fetched=""
for f in {STATE}/occ-agent-*.pyz; do  # (a file, not a link: the host's tenant was root)
  [ -f "$f" ] && [ ! -L "$f" ] && fetched=$f && break
done
if command -v "$agent" >/dev/null; then
  out=$(sh -c "$1 --uninstall --root /" 2>&1) || \\
    problems="$agent --uninstall failed: $(printf %s "$out" | tail -n 3 | tr '\\n' ' '); "
elif [ -n "$fetched" ]; then
  if ! {{ work=$(mktemp -d) && cp "$fetched" "$work/occ-agent.pyz" && out=$(
      OCC_AGENT_CACHE="$work" python3 -I "$work/occ-agent.pyz" --uninstall --root / 2>&1); }}
  then
    problems="the fetched agent's --uninstall failed: \
$(printf %s "${{out:-}}" | tail -n 3 | tr '\\n' ' '); "
  fi
  [ -z "${{work:-}}" ] || rm -rf "$work"
elif [ -e {STATE}/installed.json ]; then  # an agent ran here, and is gone
  problems="there is no $agent on this host to uninstall with; "
fi
echo "removing {STATE} and the login's uploaded folders"
rm -rf {STATE} /var/log/oneclick-agent.log 2>/dev/null  # (a mount point stays, empty)
home=$(getent passwd "$2" 2>/dev/null | cut -d: -f6)
[ -z "$home" ] || rm -rf "$home"/.oneclick-* 2>/dev/null
echo "checking"
left=""
[ -z "$(ls -A {STATE} 2>/dev/null)" ] || left="$left {STATE}/$(ls -A {STATE} | head -n 1)"
[ ! -e /var/log/oneclick-agent.log ] || left="$left /var/log/oneclick-agent.log"
for f in "$home"/.oneclick-*; do [ -z "$home" ] || [ ! -e "$f" ] || left="$left $f"; done
for f in {" ".join("/" + m for m in MANAGED)}; do
  grep -qxF {shlex.quote(BEGIN)} "$f" 2>/dev/null && left="$left $f"
done
for f in {" ".join("/" + d for d in DROP_INS)}; do [ -e "$f" ] && left="$left $f"; done
[ -z "$left" ] || problems="${{problems}}still installed:$left"
[ -z "$problems" ] || {{ echo "$problems" >&2; exit 5; }}
"""

# $1 the key's prefix, $2 the uploaded folder (its file 0: the bootstrap): a new bootstrap (the
# broker moved), taken only while the host is still this member's. The folder goes whatever
# happens.
REFRESH = f"""
set -eu
staged=$2
trap 'rm -rf "$staged"' EXIT
case "$(readlink {MINE}/claim 2>/dev/null)" in
  "$1"*) mv -f "$staged/0" {BOOTSTRAP_FILE} && chown 0:0 {BOOTSTRAP_FILE} && \\
    chmod 600 {BOOTSTRAP_FILE} || {{
    echo "cannot put {BOOTSTRAP_FILE} in place" >&2; exit 7; }} ;;
  *) echo "this host no longer holds the member" >&2; exit 3 ;;
esac
"""


class HostUnusable(Exception):
    """This host cannot be used now; the message says why."""

    def __init__(self, message: str, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


class SSHProvider:
    def __init__(self, config: SSHProviderConfig, secrets: SecretReader,
                 claims: HostClaims) -> None:
        self.config = config
        self.name = config.name
        self.claims = claims
        self._secrets = secrets
        self._connections: dict[str, asyncssh.SSHClientConnection] = {}
        self._connecting: dict[str, asyncio.Lock] = {}
        self._claiming = asyncio.Lock()  # one pick at a time here; the Lease decides anyway

    @property
    def broker_host(self) -> str:
        return self.config.broker_host

    @property
    def domain(self) -> str | None:
        return self.config.domain

    def limitations(self) -> list[str]:
        return [f"members are the pool's {len(self.config.hosts)} existing hosts; a role's "
                "image and size are not applied (install what roles need on the hosts)"]

    # -- the interface --------------------------------------------------------------------

    async def launch(self, request: LaunchRequest) -> Instance:
        allowed = self.config.allowed_namespaces
        if allowed is not None and request.namespace not in allowed:
            raise ProviderError(f"provider {self.name!r} serves namespaces "
                                f"{', '.join(allowed)}; launch is in {request.namespace}",
                                permanent=True)
        async with self._claiming:
            host = await self._take(request)
        try:
            written = _written(request.user_data)
            connection = await self._connect(host)
            staged = await _upload(connection, f".oneclick-{request.idempotency_key}", written)
            await self._run(host, START, request.idempotency_key, self.config.agent_command,
                            staged, *(a for path, (_, mode) in written.items()
                                      for a in (path, f"{mode:o}")),
                            what="starting the agent", timeout=START_TIMEOUT)
        except (OSError, asyncssh.Error) as error:
            raise ProviderError(f"starting the agent on {host.address}: {error}") from error
        except HostUnusable as error:
            raise ProviderError(str(error), permanent=error.permanent) from error
        return Instance(self._instance_id(host, request.idempotency_key), InstanceState.PENDING,
                        [host.address], message="agent starting")

    async def lookup(self, idempotency_key: str) -> Instance | None:
        claims = await self.claims.all()
        host = next((h for h in self.config.hosts
                     if (c := claims.get(_where(h))) and c.holder == idempotency_key), None)
        if host is None:
            return None
        instance_id = self._instance_id(host, idempotency_key)
        return (await self.describe([instance_id])).get(instance_id) or Instance(
            instance_id, InstanceState.PENDING, [host.address])

    async def describe(self, instance_ids: list[str]) -> dict[str, Instance]:
        """What each host says; a host that cannot be reached now is left out (no news)."""
        wanted = [(i, *self._parse(i)) for i in instance_ids]
        claims = await self.claims.all()
        found: dict[str, Instance] = {}

        async def one(instance_id: str, host: SSHHost | None, key_prefix: str) -> None:
            if host is None:
                found[instance_id] = Instance(instance_id, InstanceState.TERMINATED,
                                              message="no such host in the pool")
                return
            if not _holds(claims.get(_where(host)), key_prefix):
                found[instance_id] = Instance(instance_id, InstanceState.TERMINATED,
                                              [host.address],
                                              message="the host no longer holds this member")
                return
            try:
                status = await self._status(host)
            except HostUnusable as error:
                logger.warning("describing %s: %s", instance_id, error)
                return
            found[instance_id] = _instance(instance_id, host, status)

        await asyncio.gather(*(one(*w) for w in wanted))
        return found

    async def terminate(self, instance_ids: list[str]) -> None:
        """Give each host back; the claim goes only once that succeeded. A host that cannot be
        given back clean stays out of the pool (its Lease says why); one that cannot be
        reached now is tried again."""
        async def one(host: SSHHost | None, key_prefix: str) -> None:
            if host is None:
                return
            claim = await self.claims.get(_where(host))
            if not _holds(claim, key_prefix):
                return  # given back already (or never taken)
            assert claim is not None
            try:
                await self._give_back(host)
            except HostUnusable as error:
                if not error.permanent:
                    raise
                logger.error("provider %s keeps host %s out of its pool: %s", self.name,
                             host.address, error)
                await self.claims.keep_out(claim, str(error))
                return
            await self.claims.release(claim)
            logger.info("%s: host %s is back in the pool", self.name, host.address)

        results = await asyncio.gather(*(one(*self._parse(i)) for i in instance_ids),
                                       return_exceptions=True)
        failures = [str(r) for r in results if isinstance(r, BaseException)]
        if failures:
            raise ProviderError("terminating: " + "; ".join(failures))

    async def refresh_bootstrap(self, instance_id: str, user_data: str) -> None:
        """Upload a new bootstrap for the member's agent, which reads it again after failed
        connections (the broker moved for good)."""
        host, prefix = self._parse(instance_id)
        if host is None:
            raise ProviderError(f"no host of the pool for {instance_id}", permanent=True)
        if not _holds(await self.claims.get(_where(host)), prefix):  # the API server decides
            raise ProviderError(f"{host.address} no longer holds {instance_id}", permanent=True)
        try:
            bootstrap = _written(user_data)[BOOTSTRAP_FILE]
            connection = await self._connect(host)
            staged = await _upload(connection, f".oneclick-{prefix}",
                                   {BOOTSTRAP_FILE: bootstrap})
            await self._run(host, REFRESH, prefix, staged, what="moving the new bootstrap in",
                            timeout=REFRESH_TIMEOUT)
        except (OSError, asyncssh.Error) as error:
            raise ProviderError(f"refreshing the bootstrap on {host.address}: {error}") from error
        except HostUnusable as error:
            raise ProviderError(str(error), permanent=error.permanent) from error

    async def aclose(self) -> None:
        for connection in self._connections.values():
            connection.close()
        for connection in self._connections.values():
            await connection.wait_closed()
        self._connections.clear()

    # -- the pool -------------------------------------------------------------------------

    async def _take(self, request: LaunchRequest) -> SSHHost:
        """The host this key holds already (a relaunch after a crash), or a free one that
        answers."""
        claims = await self.claims.all()
        for host in self.config.hosts:
            claim = claims.get(_where(host))
            if claim is not None and claim.holder == request.idempotency_key:
                return host
        unusable = {h.address: c.unusable for h in self.config.hosts
                    if (c := claims.get(_where(h))) and c.unusable}
        taken = sum(1 for h in self.config.hosts
                    if (c := claims.get(_where(h))) and not c.unusable)
        free = [h for h in self.config.hosts if _where(h) not in claims]
        answers = await asyncio.gather(*(self._connect(h) for h in free),
                                       return_exceptions=True)
        permanent = True
        for host, answer in zip(free, answers, strict=True):
            if isinstance(answer, HostUnusable):
                unusable[host.address] = str(answer)
                permanent = permanent and answer.permanent
                continue
            if isinstance(answer, BaseException):
                raise answer
            if await self.claims.take(_where(host), request.idempotency_key, request.namespace,
                                      request.cluster, request.member):
                logger.info("%s takes host %s for %s/%s", self.name, host.address,
                            request.namespace, request.member)
                return host
            taken += 1  # someone else was quicker
        reasons = "".join(f"; {address}: {why}" for address, why in unusable.items())
        raise ProviderError(
            f"provider {self.name!r} has no free host for {request.member}: {taken} of "
            f"{len(self.config.hosts)} taken, {len(unusable)} unusable{reasons}",
            permanent=permanent)

    async def _give_back(self, host: SSHHost) -> None:
        """Stop the agent, take back what it installed, check, reset: HostUnusable otherwise."""
        try:
            await self._run(host, TERMINATE, self.config.agent_command, self.config.user,
                            what="it", timeout=self.config.uninstall_timeout)
        except HostUnusable as error:
            if not error.permanent:
                raise
            raise HostUnusable(f"taking back what the agent installed: {error}",
                               permanent=True) from error
        if self.config.reset_command is None:
            return
        command = f"sh -c {shlex.quote(self.config.reset_command)}"
        try:
            result = await self._exec(host, command, timeout=self.config.reset_timeout)
        except asyncssh.TimeoutError as error:
            raise HostUnusable(f"the reset command did not finish within "
                               f"{self.config.reset_timeout:.0f}s: {_output(error)}",
                               permanent=True) from error
        if result.exit_status != 0:
            raise HostUnusable(f"the reset command exited with code {result.exit_status}: "
                               f"{_output(result)}", permanent=True)

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
        """STATUS's lines as a mapping: agent, exit, tail."""
        output = await self._run(host, STATUS, what="reading the agent's state",
                                 timeout=STATUS_TIMEOUT)
        return dict(line.partition("=")[::2] for line in output.splitlines())

    async def _run(self, host: SSHHost, script: str, *args: str, what: str,
                   timeout: float) -> str:  # noqa: ASYNC109  asyncssh's own
        """Run a script as root on the host; its output, or HostUnusable saying what failed
        (`what` when it did not finish within `timeout` seconds: the last line it printed)."""
        try:
            result = await self._exec(
                host, " ".join(["sh", "-c", shlex.quote(script), "sh", *map(shlex.quote, args)]),
                timeout=timeout)
        except asyncssh.TimeoutError as error:
            last = _output(error).splitlines()[-1:]
            raise HostUnusable(f"{what} did not finish within {timeout:g}s"
                               + "".join(f" (at: {line})" for line in last),
                               permanent=True) from error
        if result.exit_status != 0:
            raise HostUnusable(f"{str(result.stderr).strip() or 'a command failed'} (exit "
                               f"code {result.exit_status})", permanent=True)
        return str(result.stdout)

    async def _exec(self, host: SSHHost, command: str,
                    timeout: float | None = None,  # noqa: ASYNC109  asyncssh's own
                    ) -> asyncssh.SSHCompletedProcess:
        """Run a command as root on the host (HostUnusable when it cannot be reached)."""
        if self.config.sudo:
            command = "sudo -n " + command
        for attempt in (1, 2):  # a kept connection may have died since: connect once more
            connection = await self._connect(host)
            try:
                return await connection.run(command, check=False, timeout=timeout)
            except asyncssh.TimeoutError:
                raise  # it ran: not a connection to try again
            except (OSError, asyncssh.Error) as error:
                self._connections.pop(host.address, None)
                with contextlib.suppress(Exception):
                    connection.close()
                if attempt == 2:
                    raise HostUnusable(f"unreachable: {error}", permanent=False) from error
        raise AssertionError("unreachable")


def _written(user_data: str) -> dict[str, tuple[str, int]]:
    """What the member's cloud-config writes (path: content, mode), every path ours: under the
    state directory, which terminating removes."""
    try:
        written = files(user_data)
    except (ValueError, KeyError, TypeError) as error:
        raise HostUnusable(f"the member's user data is not this controller's cloud-config: "
                           f"{error}", permanent=True) from error
    for path in written:
        if not path.startswith(STATE + "/") or posixpath.normpath(path) != path:
            raise HostUnusable(f"the member's cloud-config writes {path}, outside {STATE}",
                               permanent=True)
    if BOOTSTRAP_FILE not in written or BOOT_SCRIPT not in written:
        raise HostUnusable("the member's cloud-config writes no bootstrap or no occ-boot",
                           permanent=True)
    return written


async def _upload(connection: asyncssh.SSHClientConnection, folder: str,
                  written: dict[str, tuple[str, int]]) -> str:
    """The files, as 0, 1, ... in a folder of their own in the login's home (only root may
    write where they go: the script run next moves them there); the folder's full path."""
    try:
        async with asyncio.timeout(UPLOAD_TIMEOUT), connection.start_sftp_client() as sftp:
            if await sftp.lexists(folder):  # (a launch interrupted before it moved them)
                if await sftp.islink(folder):
                    await sftp.remove(folder)
                else:
                    await sftp.rmtree(folder)
            await sftp.mkdir(folder, asyncssh.SFTPAttrs(permissions=0o700))
            for index, (content, _) in enumerate(written.values()):
                async with sftp.open(f"{folder}/{index}", "w",
                                     asyncssh.SFTPAttrs(permissions=0o600)) as file:
                    await file.write(content)
            return await sftp.realpath(folder)
    except TimeoutError as error:
        raise HostUnusable(f"uploading over SFTP did not finish within {UPLOAD_TIMEOUT:g}s",
                           permanent=True) from error


def _output(result: asyncssh.SSHCompletedProcess | asyncssh.ProcessError) -> str:
    """The end of what a command printed (stdout, then stderr)."""
    return (str(result.stdout or "") + str(result.stderr or "")).strip()[-OUTPUT_LIMIT:]


def _where(host: SSHHost) -> str:
    return f"{host.address}:{host.port}"


def _holds(claim: HostClaim | None, key_prefix: str) -> bool:
    return claim is not None and (claim.holder or "").startswith(key_prefix)


def _instance(instance_id: str, host: SSHHost, status: dict[str, str]) -> Instance:
    agent, code = status.get("agent"), status.get("exit", "")
    tail = status.get("tail", "").strip("|").replace("|", " | ")
    if agent == "none":
        return Instance(instance_id, InstanceState.PENDING, [host.address], "agent not started")
    if agent == "running" or code == "0":
        return Instance(instance_id, InstanceState.RUNNING, [host.address],
                        "agent running" if agent == "running" else "agent finished")
    return Instance(instance_id, InstanceState.FAILED, [host.address],
                    f"occ-agent exited with code {code or '?'}: {tail}")
