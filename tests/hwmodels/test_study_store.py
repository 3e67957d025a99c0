"""Durable studies: each finished run on disk at once, summaries rebuilt atomically, interrupted and
failed runs, ``--resume``, and no stale outputs."""

import json

import pytest
import torch

from hwmodels.__main__ import main
from hwmodels.study import runner
from hwmodels.study.store import LOG, ResultStore, run_key

pytest.importorskip("transformers")

STUDY = ["study", "--model", "tiny", "--targets", "fp32,softex,atleus", "--sweep", "atleus.adc_bits=4,5,6"]
"""Six runs of the built-in model."""


def study(out, *extra) -> int:
    try:
        return main([*STUDY, "--out", str(out), *extra])
    except SystemExit as stop:
        return stop.code


def summaries(out) -> dict:
    return {name: (out / name).read_bytes() for name in ("study.json", "study.csv", "study.png")}


def log_lines(out) -> list[dict]:
    return [json.loads(line) for line in (out / LOG).read_text().splitlines()]


def fail_at(monkeypatch, calls: set, error):
    """Make the ``calls``-th (1-based) runs of this process raise ``error``."""
    real, seen = runner.Bench.run, []

    def run(self, spec):
        seen.append(spec)
        if len(seen) in calls:
            raise error
        return real(self, spec)

    monkeypatch.setattr(runner.Bench, "run", run)
    return seen


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("whole")
    assert study(out) == 0
    return out


def test_every_run_is_logged_and_the_summaries_say_the_study_is_complete(uninterrupted):
    lines = log_lines(uninterrupted)
    assert lines[0] == {
        "edgenum_study": 1,
        "model": "tiny-bert (seed 0)",
        "inputs": "25 sentences",
        "inference": "one sentence of 12 tokens",
    }
    assert [line["result"]["target"] for line in lines[1:]] == [
        "fp32",
        "softex",
        "atleus",
        "atleus",
        "atleus",
        "atleus",
    ]
    assert all(line["seconds"] >= 0 and line["peak_rss_mb"] > 0 and ":" in line["worker"] for line in lines[1:])
    data = json.loads((uninterrupted / "study.json").read_text())
    assert (data["planned_runs"], data["finished_runs"], data["failed_runs"], data["complete"]) == (6, 6, 0, True)
    assert "emulation_s" not in data["results"][0]  # wall times live in the log: the same study, the same files


def test_an_interrupted_study_keeps_its_finished_runs_and_resume_completes_it(
    uninterrupted, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "out"
    seen = fail_at(monkeypatch, {3}, KeyboardInterrupt())
    assert study(out) == 130
    assert len(seen) == 3 and "interrupted: 2 of 6 runs finished" in capsys.readouterr().err
    assert [line["result"]["target"] for line in log_lines(out)[1:]] == ["fp32", "softex"]
    data = json.loads((out / "study.json").read_text())
    assert (data["finished_runs"], data["complete"]) == (2, False)

    monkeypatch.undo()
    seen = fail_at(monkeypatch, set(), None)
    assert study(out, "--resume") == 0
    assert [s.target for s in seen] == ["atleus"] * 4  # fp32 and softex were not run again
    assert "6 runs on cpu, 2 already in" in capsys.readouterr().err
    assert summaries(out) == summaries(uninterrupted)  # byte for byte, plot included


def test_a_line_cut_short_by_an_interrupt_is_dropped_on_resume(uninterrupted, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    text = (uninterrupted / LOG).read_text().splitlines()
    (out / LOG).write_text("\n".join(text[:3]) + "\n" + text[3][: len(text[3]) // 2])  # header, 2 runs, half a line
    assert study(out, "--resume") == 0
    assert len(log_lines(out)) == 1 + 6  # the half line is gone, 4 runs appended
    assert summaries(out) == summaries(uninterrupted)


def test_a_failed_run_is_recorded_and_the_study_goes_on(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    fail_at(monkeypatch, {2}, RuntimeError("the SoftEx emulation broke"))
    assert study(out) == 1  # finished, with a failure
    captured = capsys.readouterr()
    assert "softex (defaults) failed: RuntimeError: the SoftEx emulation broke" in captured.out
    data = json.loads((out / "study.json").read_text())
    assert data["failed_runs"] == 1 and data["finished_runs"] == 6
    assert data["results"][1]["error"] == "RuntimeError: the SoftEx emulation broke"
    assert data["results"][1]["metrics"] == {} and data["results"][1]["pareto"] is False
    assert "RuntimeError: the SoftEx emulation broke" in (out / "study.csv").read_text()

    monkeypatch.undo()
    seen = fail_at(monkeypatch, set(), None)
    assert study(out, "--resume") == 0  # a failed run is run again
    assert [s.target for s in seen] == ["softex"]


def test_fail_fast_stops_at_the_first_failure(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    seen = fail_at(monkeypatch, {2}, RuntimeError("broke"))
    assert study(out, "--fail-fast") == 1
    assert len(seen) == 2 and "--fail-fast" in capsys.readouterr().err
    data = json.loads((out / "study.json").read_text())
    assert (data["finished_runs"], data["failed_runs"], data["complete"]) == (2, 1, False)


def test_an_earlier_study_is_never_left_looking_current(uninterrupted, tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    for name in ("runs.jsonl", "study.json", "study.csv", "study.png"):
        (out / name).write_bytes((uninterrupted / name).read_bytes())
    seen = fail_at(monkeypatch, {1}, KeyboardInterrupt())  # the new study stops before finishing anything
    assert main(["study", "--model", "tiny", "--targets", "hastily", "--out", str(out)]) == 130
    assert len(seen) == 1
    data = json.loads((out / "study.json").read_text())
    assert (data["results"], data["planned_runs"], data["complete"]) == ([], 1, False)
    assert not (out / "study.png").exists() and len(log_lines(out)) == 1  # the header only


def test_resume_refuses_a_folder_of_another_study(uninterrupted, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / LOG).write_bytes((uninterrupted / LOG).read_bytes())
    argv = ["study", "--model", "resnet18", "--images", "1", "--image-size", "32", "--targets", "fp32"]
    assert main([*argv, "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("edgenum study: error: --out: ") and "holds a study of tiny-bert (seed 0)" in err
    assert (out / LOG).read_bytes() == (uninterrupted / LOG).read_bytes()  # left as it was


def test_a_failure_while_writing_leaves_the_previous_summaries_whole(uninterrupted, tmp_path, monkeypatch):
    from hwmodels.study import Result, Subject, outputs

    out = tmp_path / "out"
    out.mkdir()
    for name in ("study.json", "study.csv"):
        (out / name).write_bytes((uninterrupted / name).read_bytes())
    before = {name: (out / name).read_bytes() for name in ("study.json", "study.csv")}

    def broken_plot(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(outputs, "plot_study", broken_plot)
    results = [Result.from_dict(line["result"]) for line in log_lines(uninterrupted)[1:]]
    with pytest.raises(OSError, match="No space left"):
        outputs.write_outputs(Subject("m", None, {"x": torch.zeros(2, 3)}, {"x": torch.zeros(1, 3)}), results, out)
    assert {name: (out / name).read_bytes() for name in before} == before  # json and csv untouched
    assert sorted(p.name for p in out.iterdir()) == ["study.csv", "study.json"]  # no temporaries left


def test_a_run_is_known_by_its_target_and_options_in_any_order():
    from hwmodels.study import Run

    assert run_key(Run("atleus", {"adc_bits": 6, "quant": "M8F4"})) == run_key(
        Run("atleus", {"quant": "M8F4", "adc_bits": 6})
    )
    assert run_key(Run("atleus", {"adc_bits": 6})) != run_key(Run("hastily", {"adc_bits": 6}))
    assert run_key(Run("atleus", {"adc_bits": 6})) != run_key(Run("atleus", {"adc_bits": 7}))


def test_the_store_refuses_an_unwritable_folder(tmp_path):
    from hwmodels.study import StudyError, tiny_subject

    (tmp_path / "file").write_text("")
    with pytest.raises(StudyError, match="is a file, not a folder") as error:
        ResultStore(tmp_path / "file", tiny_subject())
    assert error.value.argument == "out"
