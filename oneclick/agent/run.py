"""One contextualization, DESIGN's steps in order: bootstrap, host keys, identity, context,
files, common tasks, role scripts, report. Re-running it is safe: every step is idempotent.

With `follow`, the agent then stays: each time its context changes (members were added to the
launch or removed from it), it configures the member again (files, common tasks, role
scripts), so a head node learns of compute nodes added by a scale-up and forgets removed
ones. Such a pass is logged, not reported: the report stays the first contextualization's."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from oneclick.agent import files, hostkeys, scripts, tasks, validate
from oneclick.agent.bootstrap import METADATA_URL, BootstrapNotFound, read, read_again
from oneclick.agent.client import BrokerClient, BrokerRefused, BrokerUnreachable, Versioned
from oneclick.agent.identity import NoAddress, gather
from oneclick.agent.log import TailHandler, logger
from oneclick.api.protocol import Report, StepResult

OK, FAILED, USAGE, REFUSED = 0, 1, 2, 3


@dataclass
class Options:
    root: Path = Path("/")
    bootstrap: Path | None = None
    hostname: str | None = None
    fqdn: str | None = None
    addresses: list[str] = field(default_factory=list)
    metadata_url: str = METADATA_URL
    wait: float = 30.0
    timeout: float = 1800.0
    script_timeout: float = 300.0
    follow: bool = False
    ready_fd: int | None = None  # told when the member is configured (a supervisor waits)


async def contextualize(options: Options, tail: TailHandler) -> int:
    try:
        bootstrap = read(options.bootstrap, options.root, options.metadata_url)
    except BootstrapNotFound as error:
        logger.error("%s", error)
        return USAGE
    logger.info("member %s of launch %s/%s, broker %s", bootstrap.member, bootstrap.namespace,
                bootstrap.cluster, bootstrap.broker_url)
    client = BrokerClient(
        bootstrap, deadline=time.monotonic() + options.timeout,
        reload=lambda: read_again(options.bootstrap, options.root, options.metadata_url))
    step = "host-keys"
    steps: list[StepResult] = []
    try:
        keys = hostkeys.ensure(options.root)
        step = "identity"
        identity = gather(options.hostname, options.fqdn, options.addresses, keys,
                          bootstrap.domain)
        logger.info("identity: %s (%s) at %s with %d host keys", identity.hostname,
                    identity.fqdn, ", ".join(identity.addresses), len(keys))
        if not await client.provide_identity(identity):
            logger.info("this member reported before; refreshing its configuration only")
        step = "context"
        if options.follow and (known := files.read_version(options.root)) is not None and (
                await client.next_context(known, wait=0)) is None:
            logger.info("the context is the one configured last time")
            _say_ready(options.ready_fd)
            return await _follow(options, client, known)
        fetched = await client.context(options.wait)
        context = fetched.context
        logger.info("context complete: %d members, roles %s", len(context.members),
                    ", ".join(context.required_roles) or "(none)")
        step = "configure"
        steps += await _configure(options, fetched)
        logger.info("contextualized")
        await client.report(Report(ok=True, message="contextualized", steps=steps,
                                   log_tail=tail.text()))
        _say_ready(options.ready_fd)
        return await _follow(options, client, fetched.version) if options.follow else OK
    except _ConfigureFailed as failure:
        logger.error("%s", failure)
        await _report_failure(client, failure.step, failure.exit_code, str(failure),
                              steps + failure.steps, tail)
        return FAILED
    except BrokerRefused as error:
        logger.error("%s", error)
        return REFUSED
    except BrokerUnreachable as error:
        logger.error("%s", error)
        return FAILED
    except (NoAddress, OSError, ValueError) as error:
        logger.error("%s failed: %s", step, error)
        await _report_failure(client, step, 1, f"{step} failed: {error}", steps, tail)
        return FAILED
    finally:
        await client.aclose()


def _say_ready(fd: int | None) -> None:
    """Tell whoever waits on `fd` that the member is configured: a line, then the descriptor
    closed (s6's notification-fd convention; the local provider reloads sshd then). An agent
    that ends before that only closes it."""
    if fd is None:
        return
    try:
        os.write(fd, b"READY=1\n")
    except OSError as error:
        logger.warning("could not say so on file descriptor %d: %s", fd, error)
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)


class _ConfigureFailed(Exception):
    def __init__(self, step: str, exit_code: int, message: str,
                 steps: list[StepResult]) -> None:
        super().__init__(message)
        self.step, self.exit_code, self.steps = step, exit_code, steps


async def _configure(options: Options, fetched: Versioned) -> list[StepResult]:
    """One configuration pass from a complete context: check it, write it, run the common
    tasks and the role scripts; the version is kept once all of it succeeded."""
    context, steps, step = fetched.context, [], "check-context"
    try:
        validate.check(context)  # before anything is written from it
        step = "write-context"
        data_files = files.write_context(options.root, context)
        step = "common-tasks"
        for task in tasks.run_all(options.root, context):
            steps.append(StepResult(name=task, exit_code=0))
        step = "role-scripts"
        steps += await scripts.run(options.root, context, data_files, options.script_timeout)
    except scripts.StepFailed as failure:
        raise _ConfigureFailed(failure.step, failure.exit_code, str(failure),
                               steps + failure.steps) from failure
    except (OSError, ValueError) as error:
        raise _ConfigureFailed(step, 1, f"{step} failed: {error}", steps) from error
    if fetched.version:
        files.write_version(options.root, fetched.version)
    return steps


async def _follow(options: Options, client: BrokerClient, known: str) -> int:
    """Configure the member again each time its context changes, until its launch ends (the
    broker then refuses its token)."""
    logger.info("following the launch: the member is configured again when members are "
                "added or removed")
    client.retry_forever()
    while True:
        try:
            fetched = await client.next_context(known, options.wait)
        except BrokerRefused as error:
            logger.info("stopped following: %s", error)
            return OK
        except ValueError as error:  # a context this agent refuses: wait for another
            logger.error("%s", error)
            await asyncio.sleep(options.wait)
            continue
        if fetched is None:
            continue
        known = fetched.version  # (a pass that fails is not tried again for the same context)
        context = fetched.context
        logger.info("the context changed: %d members, roles %s; configuring again",
                    len(context.members), ", ".join(context.required_roles) or "(none)")
        try:
            await _configure(options, fetched)
        except _ConfigureFailed as failure:
            logger.error("configuring again failed: %s", failure)
        else:
            logger.info("configured again")


async def _report_failure(client: BrokerClient, step: str, code: int, message: str,
                          steps: list[StepResult], tail: TailHandler) -> None:
    try:
        await client.report(Report(ok=False, failed_step=step, exit_code=code,
                                   message=message[:4096], steps=steps, log_tail=tail.text()))
    except (BrokerRefused, BrokerUnreachable) as error:
        logger.error("could not report the failure: %s", error)
