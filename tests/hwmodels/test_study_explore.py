"""``edgenum explore``: declared ranges checked before the search, NSGA-II trials that are study runs,
reproducible with a seed, resumable, and the Pareto front of what it found."""

import json

import pytest

from hwmodels import study
from hwmodels.__main__ import main
from hwmodels.study import explore
from hwmodels.study.explore import Dimension, parse_range, parse_ranges

optuna = pytest.importorskip("optuna")
pytest.importorskip("transformers")


@pytest.mark.parametrize(
    "text,dimension",
    [
        ("adc_bits=4:8", Dimension("adc_bits", low=4, high=8)),
        ("atleus.adc_bits=4:8", Dimension("adc_bits", low=4, high=8)),  # the target may be named
        ("sparsity=0.1:0.9", Dimension("sparsity", low=0.1, high=0.9)),
        ("quant=M8F4,M4F8", Dimension("quant", choices=("M8F4", "M4F8"))),
        ("lora_rank=0,4,8", Dimension("lora_rank", choices=(0, 4, 8))),
    ],
)
def test_a_range_is_parsed(text, dimension):
    assert parse_range("atleus", text) == dimension


@pytest.mark.parametrize(
    "text,match",
    [
        ("adc_bits", "expected OPTION=LOW:HIGH"),
        ("adc_bits=8:4", "LOW < HIGH"),
        ("adc_bits=4:x", "with numbers"),
        ("quant=M8F4", "two values or more"),
        ("hastily.adc_bits=4:8", "expected OPTION"),  # another target's option
    ],
)
def test_a_bad_range_is_refused(text, match):
    with pytest.raises(study.StudyError, match=match) as error:
        parse_range("atleus", text)
    assert error.value.argument == "range"


def test_every_value_of_a_short_int_range_is_checked_before_the_search():
    assert Dimension("lanes", low=1, high=4).checked == [1, 2, 3, 4]
    assert Dimension("x", low=1, high=1000).checked == [1, 1000]  # long ranges: their ends
    with pytest.raises(study.StudyError, match="accumulators=2 is not allowed: softex: accumulators must be 1 or 4"):
        parse_ranges("softex", ["accumulators=1:4"])
    with pytest.raises(study.StudyError, match="has no cost model"):
        parse_ranges("fp32", ["x=1:2"])
    with pytest.raises(study.StudyError, match="searched twice, or also set"):
        parse_ranges("atleus", ["adc_bits=4:8"], ["atleus.adc_bits=6"])
    with pytest.raises(study.StudyError, match="sets an option of hastily"):
        parse_ranges("atleus", ["adc_bits=4:8"], ["hastily.adc_bits=6"])


@pytest.fixture(scope="module")
def tiny():
    return study.tiny_subject(["A man plays a guitar.", "Someone plays the guitar.", "The cat sleeps."])


def test_a_search_runs_distinct_trials_that_are_study_runs(tiny, tmp_path):
    ranges = parse_ranges("hastily", ["adc_bits=3:8", "pipelining=true,false"])
    store = study.ResultStore(tmp_path, tiny, plot=False, planned=8)
    results = explore.explore(tiny, "hastily", ranges, trials=8, seed=3, store=store)
    keys = [study.run_key(r.run) for r in results]
    assert len(set(keys)) == len(keys) <= 8 and all(r.ok for r in results)
    assert all(3 <= r.run.options["adc_bits"] <= 8 for r in results)
    direct = study.run_study(tiny, [r.run for r in results])  # each trial is the study's run of its options
    assert [r.to_dict() for r in direct] == [r.to_dict() for r in results]
    assert [study.run_key(r.run) for r in store.results()] == keys  # every trial written as it finished
    again = explore.explore(tiny, "hastily", ranges, trials=8, seed=3)
    assert [study.run_key(r.run) for r in again] == keys  # the seed fixes the search


def test_a_resumed_search_counts_the_trials_it_already_has(tiny, tmp_path, monkeypatch):
    ranges = parse_ranges("atleus", ["adc_bits=4:8"])
    first = explore.explore(tiny, "atleus", ranges, trials=3, store=study.ResultStore(tmp_path, tiny, plot=False))
    ran = []
    real = study.Bench.run
    monkeypatch.setattr(study.Bench, "run", lambda self, run: ran.append(run) or real(self, run))
    store = study.ResultStore(tmp_path, tiny, plot=False, resume=True)
    second = explore.explore(tiny, "atleus", ranges, trials=5, store=store)
    assert [r.to_dict() for r in second[: len(first)]] == [r.to_dict() for r in first]
    assert len(ran) == len(second) - len(first) and not any(r in [f.run for f in first] for r in ran)


def test_cli_explore_writes_trials_and_plots_the_front(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "out"
    argv = ["explore", "--model", "tiny", "--target", "atleus", "--range", "adc_bits=4:8"]
    assert (
        main([*argv, "--range", "quant=M8F8,M4F4", "--trials", "6", "--objective", "latency", "--out", str(out)]) == 0
    )
    captured = capsys.readouterr()
    assert "Pareto front of accuracy vs latency (" in captured.out
    data = json.loads((out / "study.json").read_text())
    assert data["planned_runs"] == 6 and data["finished_runs"] == len(data["results"]) >= 1
    front = [r for r in data["results"] if r["pareto"]]
    for r in front:  # no trial beats a front point on both objectives
        assert not any(
            o["latency_s"] <= r["latency_s"]
            and o["metrics"]["mean_cosine"] >= r["metrics"]["mean_cosine"]
            and (o["latency_s"], o["metrics"]["mean_cosine"]) != (r["latency_s"], r["metrics"]["mean_cosine"])
            for o in data["results"]
        )
    assert (out / "study.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_explore_mistakes_are_one_error_line(tmp_path, capsys):
    argv = [
        "explore",
        "--model",
        "tiny",
        "--target",
        "softex",
        "--range",
        "accumulators=1:4",
        "--out",
        str(tmp_path / "o"),
    ]
    assert main(argv) == 2
    assert capsys.readouterr().err.strip().startswith("edgenum explore: error: --range: accumulators=2 is not allowed")
    assert not (tmp_path / "o").exists()
