"""The history directory of a launch, as the Nimbus client kept it:
<history>/<handle>/run-log.txt, reports-vm/ and reports-ctx/ (CTX-OK.txt on success, each
member's report and log tail on failure)."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

from oneclick.kits.kube import JSON


def default_history() -> Path:
    return Path.home() / ".local" / "share" / "oneclick" / "history"


class History:
    def __init__(self, root: Path, handle: str) -> None:
        self.dir = root / handle
        self.dir.mkdir(parents=True, exist_ok=True)
        self.run_log = self.dir / "run-log.txt"

    def log(self, line: str) -> None:
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        with open(self.run_log, "a") as out:
            out.write(f"{stamp} {line}\n")

    def write_vm_reports(self, members: list[JSON]) -> Path:
        directory = self.dir / "reports-vm"
        directory.mkdir(exist_ok=True)
        for member in members:
            status = member.get("status") or {}
            (directory / f"{member['metadata']['name']}.txt").write_text(
                f"member: {member['metadata']['name']}\nrole: {member['spec']['role']} "
                f"#{member['spec']['index']}\nphase: {status.get('phase')}\n"
                f"instance: {status.get('instanceId')}\n"
                f"addresses: {', '.join(status.get('addresses', []))}\n"
                f"conditions:\n{_conditions(status)}")
        return directory

    def write_ctx_reports(self, launch: JSON, members: list[JSON]) -> tuple[Path, Path | None]:
        """Each member's report (with its log tail); CTX-OK.txt when every member is ok."""
        directory = self.dir / "reports-ctx"
        directory.mkdir(exist_ok=True)
        all_ok = True
        for member in members:
            report = (member.get("status") or {}).get("report")
            all_ok = all_ok and bool(report and report.get("ok"))
            name = member["metadata"]["name"]
            if report is None:
                text = "no report: the member's agent never reported\n"
            else:
                text = (f"ok: {report.get('ok')}\nmessage: {report.get('message', '')}\n"
                        + (f"failed step: {report.get('failedStep')} (exit code "
                           f"{report.get('exitCode')})\n" if not report.get("ok") else "")
                        + "steps:\n" + "".join(f"  {s['exitCode']:>3}  {s['name']}\n"
                                               for s in report.get("steps", []))
                        + "log tail:\n" + report.get("logTail", "") + "\n")
            (directory / f"{name}.txt").write_text(text)
        summary = None
        if all_ok:
            summary = directory / "CTX-OK.txt"
            summary.write_text(json.dumps({
                "cluster": launch["metadata"]["name"],
                "members": [m["metadata"]["name"] for m in members],
                "headNode": (launch.get("status") or {}).get("headNode"),
            }, indent=2) + "\n")
        return directory, summary


def _conditions(status: JSON) -> str:
    return "".join(f"  {c['type']}={c['status']} {c.get('reason', '')}: {c.get('message', '')}\n"
                   for c in status.get("conditions", []))
