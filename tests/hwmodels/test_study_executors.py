"""Parallel and distributed studies give the sequential study's results, bit for bit; workers
rebuild the subject from its description."""

import json
import os

import pytest

from hwmodels import study
from hwmodels.__main__ import main
from hwmodels.study import LocalPool, Sequential, SubjectSpec

pytest.importorskip("transformers")

SENTENCES = ["A man plays a guitar.", "Someone plays the guitar.", "The cat sleeps.", "Markets fell today."]


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    path = tmp_path_factory.mktemp("sentences") / "s.txt"
    path.write_text("\n".join(SENTENCES) + "\n")
    return SubjectSpec("tiny", sentences=str(path))


@pytest.fixture(scope="module")
def runs():
    return study.plan(["fp32", "softex", "hastily", "flexisaga"], sweeps=["atleus.adc_bits=4,6"])


@pytest.fixture(scope="module")
def sequential(spec, runs):
    return [r.to_dict() for r in study.run_study(spec, runs)]


def test_a_spec_builds_the_same_subject_every_time(spec):
    a, b = spec.build(), spec.build()
    assert a.name == b.name == "tiny-bert (seed 0)" and a.count == 4
    assert all((x == y).all() for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values()))
    assert SubjectSpec("tiny", seed=1).build().name == "tiny-bert (seed 1)"


def test_a_local_pool_gives_the_sequential_results(spec, runs, sequential):
    results = study.run_study(spec, runs, executor=LocalPool(2))
    assert [r.to_dict() for r in results] == sequential  # in plan order, every metric and cost bit for bit


def test_a_dask_cluster_gives_the_sequential_results(spec, runs, sequential):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster:
        executor = study.DaskCluster(cluster.scheduler_address)
        try:
            assert executor.parallelism == 2
            results = study.run_study(spec, runs, executor=executor)
        finally:
            executor.close()
    assert [r.to_dict() for r in results] == sequential


def test_parallel_executors_need_a_description_not_weights(spec, runs):
    with pytest.raises(TypeError, match="pass a SubjectSpec"):
        study.run_study(spec.build(), runs, executor=LocalPool(2))
    with pytest.raises(ValueError, match="workers must be a positive int"):
        LocalPool(0)


def test_the_sequential_executor_builds_nothing_when_nothing_is_pending(spec):
    assert list(Sequential().results(SubjectSpec("/no/such/model"), [], "cpu")) == []


def test_cli_workers_write_the_files_of_a_sequential_study(spec, tmp_path):
    argv = ["study", "--model", "tiny", "--sentences", spec.sentences, "--targets", "fp32,atleus"]
    argv += ["--sweep", "atleus.adc_bits=4,5,6", "--no-plot"]
    assert main([*argv, "--out", str(tmp_path / "seq")]) == 0
    assert main([*argv, "--out", str(tmp_path / "par"), "--workers", "2"]) == 0
    for name in ("study.json", "study.csv"):
        assert (tmp_path / "par" / name).read_bytes() == (tmp_path / "seq" / name).read_bytes()
    lines = [json.loads(line) for line in (tmp_path / "par" / "runs.jsonl").read_text().splitlines()[1:]]
    assert len(lines) == 5 and all(str(os.getpid()) not in line["worker"] for line in lines)  # run elsewhere
