"""The result of an estimate: per-op rows, totals and breakdowns, with export."""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from dataclasses import dataclass, field

from .workload import Op

PJ = 1e-12
"""Joules per picojoule."""


@dataclass(frozen=True)
class Row:
    """Cost of one traced op on one unit."""

    op: str
    """Where the op runs in the model (its module scope, else its ATen name)."""
    name: str
    """ATen operation (or a derived label such as "backward dX")."""
    kind: str
    """Op kind (workload.KINDS)."""
    unit: str
    """Hardware unit that executes it."""
    operations: int
    """Work in the op's natural unit: MACs for products, elements otherwise."""
    cycles: int
    """Busy cycles of the unit at the report's clock."""
    components: dict = field(default_factory=dict)
    """Energy per hardware component, joules."""

    @property
    def energy_j(self) -> float:
        """Energy of the op, joules."""
        return sum(self.components.values())

    @classmethod
    def of(
        cls, op: Op, unit: str, cycles, components_pj: dict, *, name: str | None = None, operations: int | None = None
    ) -> "Row":
        """Row for `op`, energies given in picojoules."""
        return cls(
            op.scope or op.name,
            name or op.name,
            op.kind,
            unit,
            op.operations if operations is None else int(operations),
            int(cycles),
            {k: v * PJ for k, v in components_pj.items() if v},
        )

    def to_dict(self) -> dict:
        return {
            "op": self.op,
            "name": self.name,
            "kind": self.kind,
            "unit": self.unit,
            "operations": self.operations,
            "cycles": self.cycles,
            "energy_j": self.energy_j,
            "components": dict(self.components),
        }


@dataclass(frozen=True)
class Report:
    """Cycles and energy of a workload on one target.

    `total_cycles` is the makespan: on pipelined targets it is less than the sum of the rows'
    busy cycles. `energy_j` is the sum of all rows plus `extra_components` (energy not tied to an
    op, e.g. static power over the makespan)."""

    target: str
    """Target name."""
    rows: tuple[Row, ...]
    """One row per op (and per derived op such as a backward pass)."""
    total_cycles: int
    """Makespan in cycles of `freq_hz`."""
    freq_hz: float
    """Clock the cycles count."""
    options: dict = field(default_factory=dict)
    """Behaviour options and configuration used."""
    extra_components: dict = field(default_factory=dict)
    """Energy not attributable to one op, joules per component."""
    notes: tuple[str, ...] = ()
    """Warnings and modelling remarks (e.g. capacity exceeded)."""
    workload: str = ""
    """Name of the estimated workload."""

    def __post_init__(self):
        object.__setattr__(self, "rows", tuple(self.rows))
        if self.total_cycles < 0:
            raise ValueError(f"total_cycles must be >= 0, got {self.total_cycles}")

    @property
    def seconds(self) -> float:
        """Makespan in seconds."""
        return self.total_cycles / self.freq_hz

    @property
    def energy_j(self) -> float:
        """Total energy, joules."""
        return sum(row.energy_j for row in self.rows) + sum(self.extra_components.values())

    @property
    def macs(self) -> int:
        """MACs of all products (forward and derived)."""
        return sum(row.operations for row in self.rows if row.kind == "matmul")

    def ops_by_unit(self) -> dict:
        """{unit: operations} summed over rows."""
        return self._sum(lambda row: [(row.unit, row.operations)])

    def cycles_by_unit(self) -> dict:
        """{unit: busy cycles} summed over rows."""
        return self._sum(lambda row: [(row.unit, row.cycles)])

    def energy_by_component(self) -> dict:
        """{component: joules}, including the extra components."""
        totals = self._sum(lambda row: row.components.items())
        for key, value in self.extra_components.items():
            totals[key] = totals.get(key, 0) + value
        return totals

    def _sum(self, items) -> dict:
        totals = defaultdict(int)
        for row in self.rows:
            for key, value in items(row):
                totals[key] += value
        return dict(totals)

    def to_dict(self) -> dict:
        return {
            "target": self.target,
            "workload": self.workload,
            "total_cycles": self.total_cycles,
            "freq_hz": self.freq_hz,
            "seconds": self.seconds,
            "energy_j": self.energy_j,
            "options": {k: plain(v) for k, v in self.options.items()},
            "ops_by_unit": self.ops_by_unit(),
            "energy_by_component": self.energy_by_component(),
            "notes": list(self.notes),
            "rows": [row.to_dict() for row in self.rows],
        }

    def to_json(self, path=None, **kwargs) -> str:
        """JSON text of to_dict(); also written to `path` if given."""
        text = json.dumps(self.to_dict(), indent=kwargs.pop("indent", 2), **kwargs)
        if path is not None:
            with open(path, "w") as f:
                f.write(text)
        return text

    def to_csv(self, path=None) -> str:
        """One CSV line per row (op, name, kind, unit, operations, cycles, energy_j)."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["op", "name", "kind", "unit", "operations", "cycles", "energy_j"])
        for row in self.rows:
            writer.writerow([row.op, row.name, row.kind, row.unit, row.operations, row.cycles, repr(row.energy_j)])
        text = buffer.getvalue()
        if path is not None:
            with open(path, "w") as f:
                f.write(text)
        return text

    def __str__(self) -> str:
        groups = defaultdict(lambda: [0, 0, 0, 0.0])
        for row in self.rows:
            group = groups[(row.kind, row.unit)]
            group[0] += 1
            group[1] += row.operations
            group[2] += row.cycles
            group[3] += row.energy_j
        energy = self.energy_j
        gops = 2 * self.macs / self.seconds / 1e9 if self.seconds else 0.0
        lines = [
            f"{self.target} estimate of {self.workload or 'workload'}",
            f"  total {self.total_cycles:,} cycles @ {self.freq_hz / 1e9:g} GHz = "
            f"{self.seconds * 1e3:.4g} ms, energy {energy * 1e3:.4g} mJ, {gops:.4g} GOPS"
            + (f", {2 * self.macs / energy / 1e12:.3g} TOPS/W" if energy else ""),
            f"  {'kind':<12}{'unit':<16}{'ops':>5}{'operations':>17}{'busy cycles':>16}{'energy uJ':>13}{'share':>7}",
        ]
        for (kind, unit), (count, operations, cycles, joules) in sorted(groups.items(), key=lambda item: -item[1][3]):
            share = joules / energy if energy else 0.0
            lines.append(
                f"  {kind:<12}{unit:<16}{count:>5}{operations:>17,}{cycles:>16,}{joules * 1e6:>13.4g}{share:>7.1%}"
            )
        components = ", ".join(
            f"{k} {v * 1e6:.4g}" for k, v in sorted(self.energy_by_component().items(), key=lambda kv: -kv[1])
        )
        lines.append(f"  energy by component (uJ): {components}")
        lines.extend(f"  note: {note}" for note in self.notes)
        return "\n".join(lines)


def plain(value):
    """``value`` as JSON-ready data: dataclasses as dicts of their fields, tuples as lists, anything else
    unknown as its repr."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if hasattr(value, "__dataclass_fields__"):
        return {k: plain(getattr(value, k)) for k in value.__dataclass_fields__}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    return repr(value)
