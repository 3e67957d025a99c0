"""Report: totals, breakdowns, JSON/CSV export and the readable table."""

import csv
import io
import json

import pytest

from hwmodels import TARGETS, estimate
from hwmodels.report import Report, Row
from tests.hwmodels.workloads import encoder


@pytest.mark.parametrize("target", TARGETS)
def test_breakdowns_add_up(target, tmp_path):
    report = estimate(encoder(16), target)
    assert sum(report.energy_by_component().values()) == pytest.approx(report.energy_j, rel=1e-12)
    assert sum(report.ops_by_unit().values()) == sum(row.operations for row in report.rows)
    assert report.seconds == report.total_cycles / report.freq_hz
    data = json.loads(report.to_json(tmp_path / "r.json"))
    assert data == json.loads((tmp_path / "r.json").read_text())
    assert data["target"] == target and data["total_cycles"] == report.total_cycles
    assert len(data["rows"]) == len(report.rows)
    lines = list(csv.reader(io.StringIO(report.to_csv(tmp_path / "r.csv"))))
    assert lines[0] == ["op", "name", "kind", "unit", "operations", "cycles", "energy_j"]
    assert len(lines) == len(report.rows) + 1
    assert [int(x[5]) for x in lines[1:]] == [row.cycles for row in report.rows]
    text = str(report)
    assert target in text and f"{report.total_cycles:,}" in text and "energy by component" in text


def test_manual_report():
    rows = [
        Row("a", "mm", "matmul", "pe", 100, 10, {"mac": 1e-9}),
        Row("b", "add", "elementwise", "host", 5, 5, {"mac": 1e-10, "sram": 2e-10}),
    ]
    report = Report("toy", rows, 12, 1e9, extra_components={"leak": 1e-10})
    assert report.energy_j == pytest.approx(1.4e-9)
    assert report.energy_by_component() == pytest.approx({"mac": 1.1e-9, "sram": 2e-10, "leak": 1e-10})
    assert report.ops_by_unit() == {"pe": 100, "host": 5}
    assert report.cycles_by_unit() == {"pe": 10, "host": 5}
    assert report.macs == 100
    with pytest.raises(ValueError, match="total_cycles"):
        Report("toy", rows, -1, 1e9)
