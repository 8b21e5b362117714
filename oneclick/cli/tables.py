"""The API server's tables (the printer columns kubectl shows), printed as kubectl prints them,
with what only a client can compute: NAMESPACE across namespaces, and a launch's EXPIRES as a
countdown ("in 59m": a printer column of type date shows a future time as <invalid>)."""

from __future__ import annotations

from dataclasses import dataclass, field

from oneclick.cli.launches import expires_in
from oneclick.kits.kube import JSON

LIFETIME = "Lifetime"  # kubectl's column; occ shows the countdown instead


@dataclass
class Column:
    name: str
    index: int | None  # the server's cell, or None for one computed here


@dataclass
class Printer:
    """Rows of one kind, aligned with the rows printed before them (a watch prints a few at a
    time, under the same header)."""

    definitions: list[JSON]
    wide: bool = False
    namespaces: bool = False
    countdown: bool = False  # launches: EXPIRES after AGE, in place of LIFETIME
    widths: list[int] = field(default_factory=list)

    def columns(self) -> list[Column]:
        found = [Column("NAMESPACE", None)] if self.namespaces else []
        for i, definition in enumerate(self.definitions):
            if not self.wide and definition.get("priority", 0):
                continue
            if definition["name"] == LIFETIME and self.countdown:
                continue
            found.append(Column(definition["name"].upper(), i))
            if definition["name"] == "Age" and self.countdown:
                found.append(Column("EXPIRES", None))
        return found

    def cells(self, row: JSON) -> list[str]:
        obj = row.get("object") or {}
        values = []
        for column in self.columns():
            if column.index is not None:
                cell = row["cells"][column.index]
                values.append("" if cell is None else str(cell))
            elif column.name == "NAMESPACE":
                values.append(str((obj.get("metadata") or {}).get("namespace", "")))
            else:
                values.append(expires_in(obj))
        return values

    def lines(self, rows: list[JSON], header: bool) -> list[str]:
        table = [[c.name for c in self.columns()]] if header else []
        table += [self.cells(row) for row in rows]
        for line in table:
            self.widths = [max([len(cell), *self.widths[i:i + 1]]) for i, cell in enumerate(line)]
        return ["   ".join(cell.ljust(w) for cell, w in zip(line, self.widths, strict=False))
                .rstrip() for line in table]
