"""Role scripts, in the Nimbus order so existing images keep working.

Our layout, under <root>/etc/oneclick/, and the Nimbus one, under <root>/opt/nimbus/ctx-scripts/:

| step | ours | Nimbus | arguments |
| --- | --- | --- | --- |
| each member of each required role | roles.d/<role> | 1-ipandhost/<role> | IP SHORT FQDN |
| this member | thisnode.d/* | 2-thishost/* | IP SHORT FQDN |
| each data item | data.d/<name> | 3-data/<name> | PATH |
| each required role, once | restarts.d/<role> | 4-restarts/<role> | |
| last | ready.d/* | 5-thishost-finalize/* | |
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path

from oneclick.agent.files import environment
from oneclick.agent.log import logger
from oneclick.api.protocol import Context, StepResult

OURS = ("etc/oneclick", {"roles": "roles.d", "thisnode": "thisnode.d", "data": "data.d",
                         "restarts": "restarts.d", "ready": "ready.d"})
NIMBUS = ("opt/nimbus/ctx-scripts", {"roles": "1-ipandhost", "thisnode": "2-thishost",
                                      "data": "3-data", "restarts": "4-restarts",
                                      "ready": "5-thishost-finalize"})


class StepFailed(Exception):
    def __init__(self, step: str, exit_code: int, steps: list[StepResult]) -> None:
        super().__init__(f"{step} exited with code {exit_code}")
        self.step, self.exit_code, self.steps = step, exit_code, steps


@dataclass(frozen=True)
class Call:
    script: Path
    args: tuple[str, ...]


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _all_in(directory: Path) -> list[Path]:
    return sorted(p for p in directory.glob("*") if _executable(p)) if directory.is_dir() else []


def plan(root: Path, context: Context, data_files: dict[str, Path]) -> list[Call]:
    """Every script call, in order, for whichever layout the image has (both, if both)."""
    calls: list[Call] = []
    me = context.member.identity
    for base, names in (OURS, NIMBUS):
        layout = root / base
        if not layout.is_dir():
            continue
        for role, peers in context.required_roles.items():
            script = layout / names["roles"] / role
            if _executable(script):
                calls += [Call(script, (p.identity.addresses[0], p.identity.hostname,
                                        p.identity.fqdn)) for p in peers]
        calls += [Call(s, (me.addresses[0], me.hostname, me.fqdn))
                  for s in _all_in(layout / names["thisnode"])]
        for name, path in data_files.items():
            script = layout / names["data"] / name
            if _executable(script):
                calls.append(Call(script, (str(path),)))
        for role in context.required_roles:
            script = layout / names["restarts"] / role
            if _executable(script):
                calls.append(Call(script, ()))
        calls += [Call(s, ()) for s in _all_in(layout / names["ready"])]
    return calls


async def run(root: Path, context: Context, data_files: dict[str, Path],
              seconds_each: float = 300.0) -> list[StepResult]:
    env = {**os.environ, **environment(root), "OCC_ROOT": str(root)}
    results: list[StepResult] = []
    for call in plan(root, context, data_files):
        step = " ".join([str(call.script.relative_to(root)), *call.args])
        logger.info("running %s", step)
        process = await asyncio.create_subprocess_exec(
            str(call.script), *call.args, cwd=root, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        try:
            output, _ = await asyncio.wait_for(process.communicate(), seconds_each)
            code = process.returncode if process.returncode is not None else -1
        except TimeoutError:
            process.kill()
            await process.wait()
            output, code = b"", 124  # what timeout(1) answers
            logger.error("%s did not finish within %.0fs", step, seconds_each)
        for line in output.decode(errors="replace").splitlines():
            logger.info("  | %s", line)
        results.append(StepResult(name=step, exit_code=code))
        if code != 0:
            raise StepFailed(step, code, results)
    return results
