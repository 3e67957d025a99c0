"""The residual report lists every published figure, with values, checks and fit status."""

import csv
import io

from calibration import report
from calibration.__main__ import main
from calibration.evaluate import check
from calibration.published import FIGURES, Figure


def test_report_lists_every_figure(tmp_path, capsys):
    main(["--out", str(tmp_path)])
    printed = capsys.readouterr().out
    rows = list(csv.DictReader(io.StringIO((tmp_path / "report.csv").read_text(encoding="utf-8"))))
    assert [(r["target"], r["figure"], r["published"]) for r in rows] == [
        (f.target, f.measures, f.published) for f in FIGURES
    ]
    markdown = (tmp_path / "report.md").read_text(encoding="utf-8").splitlines()
    fitted = sum(line["fitted"] == "yes" for line in rows)
    assert len(markdown) == 2 + len(FIGURES) + 5 + fitted  # residuals, a blank line, a sentence, a blank, a table
    for figure in FIGURES:
        assert figure.measures[:52] in printed
    by_key = dict(zip((f.key for f in FIGURES), rows))
    assert by_key["softex.area"]["model"] == "n/a" and by_key["softex.area"]["note"] == "no area model"
    assert by_key["softex.vit_throughput"]["fitted"] == "yes"
    assert by_key["hastily.bert_base_tops"]["fitted"] == "yes"
    assert by_key["atleus.bits_slope"]["fitted"] == "no"


def test_a_rejected_fit_is_reported_with_its_best_value():
    fitted = {
        "_rejected": {
            "hastily: mvm_cycles": {
                "best": {"mvm_cycles": 8},
                "errors": {"hastily.bert_base_tops": -0.5, "hastily.bert_large_tops": -0.6},
                "searched": "8 to 2000 cycles",
            }
        }
    }
    status, note = report._fit_status("hastily.bert_large_tops", fitted)
    assert status == "rejected"
    assert note == "no mvm_cycles in 8 to 2000 cycles reproduces it (best mvm_cycles = 8: -60.0%); defaults kept"
    assert report._fit_status("hastily.bert_large_tops", {}) == ("no", "fit group not in fitted.json (run --refit)")


def test_checks():
    base = dict(
        key="atleus.x", target="atleus", measures="m", value=1.0, unit="", workload="w", condition="c", source="s"
    )
    assert check(Figure(**base, relation="<"), 0.5) == "holds"
    assert check(Figure(**base, relation="<"), 1.0) == "fails"
    assert check(Figure(**base, relation=">"), 1.5) == "holds"
    assert check(Figure(**base, relation="range", high=2.0), 2.5) == "fails"
    assert check(Figure(**base), 1.25) == "+25.0%"


def test_the_papers_qualitative_claims_hold():
    """Every bound and range the papers state (ReRAM a minority of Atleus' energy, energy vs bits slope
    below 1, M8F4 saving more than M4F8, HASTILY over PUMA within the abstract's range, ...) holds."""
    lines = {line.figure.key: line for line in report.lines()}
    bounds = [
        key for key, line in lines.items() if line.figure.relation in ("<", ">", "range") and line.model is not None
    ]
    assert {"atleus.reram_energy_share", "atleus.bits_slope", "atleus.m8f4_vs_m4f8"} <= set(bounds)
    assert {key: lines[key].error for key in bounds} == {key: "holds" for key in bounds}
