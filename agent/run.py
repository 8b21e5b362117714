"""One contextualization, DESIGN's steps in order: bootstrap, host keys, identity, context,
files, common tasks, role scripts, report. Re-running it is safe: every step is idempotent
(that is how members pick up members added later)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from agent import files, hostkeys, scripts, tasks
from agent.bootstrap import METADATA_URL, BootstrapNotFound, read
from agent.client import BrokerClient, BrokerRefused, BrokerUnreachable
from agent.identity import NoAddress, gather
from agent.log import TailHandler, logger
from api.protocol import Report, StepResult

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


async def contextualize(options: Options, tail: TailHandler) -> int:
    try:
        bootstrap = read(options.bootstrap, options.root, options.metadata_url)
    except BootstrapNotFound as error:
        logger.error("%s", error)
        return USAGE
    logger.info("member %s of launch %s/%s, broker %s", bootstrap.member, bootstrap.namespace,
                bootstrap.cluster, bootstrap.broker_url)
    client = BrokerClient(bootstrap, deadline=time.monotonic() + options.timeout)
    step = "host-keys"
    steps: list[StepResult] = []
    try:
        keys = hostkeys.ensure(options.root)
        step = "identity"
        identity = gather(options.hostname, options.fqdn, options.addresses, keys)
        logger.info("identity: %s (%s) at %s with %d host keys", identity.hostname,
                    identity.fqdn, ", ".join(identity.addresses), len(keys))
        if not await client.provide_identity(identity):
            logger.info("this member reported before; refreshing its configuration only")
        step = "context"
        context = await client.context(options.wait)
        logger.info("context complete: %d members, roles %s", len(context.members),
                    ", ".join(context.required_roles) or "(none)")
        step = "write-context"
        data_files = files.write_context(options.root, context)
        step = "common-tasks"
        for task in tasks.run_all(options.root, context):
            steps.append(StepResult(name=task, exit_code=0))
        step = "role-scripts"
        steps += await scripts.run(options.root, context, data_files, options.script_timeout)
        logger.info("contextualized")
        await client.report(Report(ok=True, message="contextualized", steps=steps,
                                   log_tail=tail.text()))
        return OK
    except scripts.StepFailed as failure:
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


async def _report_failure(client: BrokerClient, step: str, code: int, message: str,
                          steps: list[StepResult], tail: TailHandler) -> None:
    try:
        await client.report(Report(ok=False, failed_step=step, exit_code=code,
                                   message=message[:4096], steps=steps, log_tail=tail.text()))
    except (BrokerRefused, BrokerUnreachable) as error:
        logger.error("could not report the failure: %s", error)
