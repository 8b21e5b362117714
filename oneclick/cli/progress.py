"""What `occ run` shows while a launch comes up.

On a terminal, one live line per role, redrawn in place (launched / running / contextualized
of N): a launch of 500 members stays a few lines. Elsewhere (CI logs, a pipe), plain lines, one
each time the launch's counts change. Either way nothing is said before the controller has
counted, and nothing claims members run once the launch has failed. Every line also goes to
the launch's run-log.txt.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from types import TracebackType

from rich.console import Console
from rich.live import Live
from rich.text import Text

from oneclick.api.member import MemberPhase, has_run
from oneclick.cli import times
from oneclick.cli.reports import History
from oneclick.cli.terminal import safe
from oneclick.kits.kube import JSON


@dataclass(frozen=True)
class RoleCounts:
    role: str
    total: int
    launched: int
    running: int
    contextualized: int
    failed: int

    def line(self, width: int) -> str:
        n = self.total
        text = (f"  {self.role:<{width}}  launched {self.launched}/{n}  running "
                f"{self.running}/{n}  contextualized {self.contextualized}/{n}")
        return text + (f"  failed {self.failed}" if self.failed else "")


def by_role(launch: JSON, members: list[JSON]) -> list[RoleCounts]:
    """Each role of the launch, in its order, with how far its members are."""
    found = []
    for role in launch["spec"]["roles"]:
        mine = [m.get("status") or {} for m in members if m["spec"].get("role") == role["name"]
                and not m["metadata"].get("deletionTimestamp")]
        found.append(RoleCounts(
            role=role["name"], total=role.get("quantity", 1),
            launched=sum(1 for status in mine if status.get("instanceId")),
            running=sum(1 for status in mine if has_run(status)),
            contextualized=sum(1 for status in mine if (status.get("report") or {}).get("ok")),
            failed=sum(1 for status in mine if status.get("phase") == MemberPhase.FAILED)))
    return found


class Display:
    """Plain lines; LiveDisplay redraws the roles in place."""

    def __init__(self, history: History | None, console: Console) -> None:
        self.history = history
        self.console = console
        self._last: tuple[object, ...] = ()

    def __enter__(self) -> Display:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        return None

    def line(self, text: str) -> None:
        text = safe(text)  # progress lines carry members' own words (messages, names)
        self.console.print(text, highlight=False, markup=False)
        if self.history:
            self.history.log(text.strip())

    def show(self, launch: JSON, members: list[JSON], counter: str, label: str,
             elapsed: float) -> None:
        """The launch's `counter` of its members, once the controller has counted them, when
        it changed."""
        status = launch.get("status") or {}
        counts = status.get("members")
        if not counts:
            return  # the controller has not seen the launch yet: nothing true to say
        shown = (label, counts.get(counter, 0), counts.get("total", 0), status.get("phase"))
        if shown != self._last:
            self._last = shown
            self.line(f"  {label}: {shown[1]}/{shown[2]} ({shown[3] or 'Pending'})")


class LiveDisplay(Display):
    """One line per role, redrawn in place, under a line that says where the launch is."""

    def __init__(self, history: History | None, console: Console) -> None:
        super().__init__(history, console)
        self.live = Live(Text(""), console=console, auto_refresh=False, transient=False)
        self.roles: list[str] = []

    def __enter__(self) -> Display:
        self.live.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.live.stop()  # the last drawing stays on the screen
        if self.history:
            for role in self.roles:
                self.history.log(role.strip())

    def show(self, launch: JSON, members: list[JSON], counter: str, label: str,
             elapsed: float) -> None:
        status = launch.get("status") or {}
        roles = by_role(launch, members)
        width = max(len(r.role) for r in roles) if roles else 0
        self.roles = [r.line(width) for r in roles]
        phase = status.get("phase") or ("Pending" if status.get("members") else "Submitted")
        title = f"  {launch['metadata']['name']}: {phase}, {times.took(elapsed)}"
        self.live.update(Text(safe("\n".join([title, *self.roles]))), refresh=True)


def display(history: History | None) -> Display:
    """Live on a terminal that can redraw, plain lines anywhere else."""
    console = Console(stderr=True, soft_wrap=True)
    if sys.stderr.isatty() and console.is_terminal and not console.is_dumb_terminal:
        return LiveDisplay(history, console)
    return Display(history, console)
