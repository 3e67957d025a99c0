"""Golden vectors: every set is written, read back and checked against the emulators."""

import dataclasses

import pytest
import torch

from numerics.__main__ import main
from numerics.crossbar import HASTILY_SRAM, crossbar_matmul
from numerics.expp import expp
from numerics.formats import bf16_to_bits, bits_to_bf16, bits_to_fp32, fp32_to_bits
from numerics.softex import gelu, softmax
from numerics.sparsity import decode_bitmap, encode_bitmap
from numerics.uclm import exp_lut
from numerics.uclm import softmax as uclm_softmax
from numerics.vectors import FUNCTIONS, read_vectors, write_vectors


def bf16(codes):
    return bits_to_bf16(codes.to(torch.int32).to(torch.int16))


def codes16(x):
    return bf16_to_bits(x).to(torch.int64) & 0xFFFF


def fp32(codes):
    return bits_to_fp32(codes.to(torch.int64).to(torch.int32))


def test_expp_set_has_every_code_and_reads_back(tmp_path):
    write_vectors("expp", tmp_path)
    v = read_vectors(tmp_path)
    x, y = v["stimulus/x"], v["expected/y"]
    assert sorted(x.tolist()) == list(range(65536)) and v["manifest"]["files"]["stimulus/x"]["count"] == 65536
    assert torch.equal(codes16(expp(bf16(x))), y)
    lines = (tmp_path / "expected_y.hex").read_text().split("\n")
    assert all(len(line) == 4 for line in lines[:-1]) and lines[-1] == ""  # $readmemh: 4 hex digits a line


@pytest.mark.parametrize("accumulators", [1, 4])
def test_softmax_set_lanes_8_length_1024(tmp_path, accumulators):
    assert (
        main(
            [
                "vectors",
                "softmax",
                "--lanes",
                "8",
                "--length",
                "1024",
                "--accumulators",
                str(accumulators),
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    v = read_vectors(tmp_path)
    assert v["manifest"]["options"]["accumulators"] == accumulators and v["stimulus/x"].shape == (16, 1024)
    x, y = bf16(v["stimulus/x"]), v["expected/y"]
    assert torch.equal(codes16(softmax(x, lanes=8, accumulators=accumulators)), y)
    assert (y[0] == 0).all()  # the row with no finite logit: all +0
    assert (y[5] == 0x7FC0).all() and (y[6] == 0x7FC0).all()  # NaN and +inf rows: NaN
    assert ((y[2] & 0x7F80) == 0).any() and (y[2] != 0).any()  # subnormal outputs in the wide-range row


def test_partial_beats_and_flushing_are_recorded(tmp_path):
    write_vectors("softmax", tmp_path, lanes=16, length=100, rows=9, flush_subnormals=True)
    v = read_vectors(tmp_path)
    assert v["manifest"]["options"]["partial_beat"] is True
    y = v["expected/y"]
    assert torch.equal(codes16(softmax(bf16(v["stimulus/x"]), lanes=16, flush_subnormals=True)), y)
    assert not (((y & 0x7F80) == 0) & (y != 0)).any()  # no subnormal left


def test_gelu_crossbar_uclm_and_bitmap_sets(tmp_path):
    write_vectors("gelu", tmp_path / "g", terms=3)
    v = read_vectors(tmp_path / "g")
    assert torch.equal(codes16(gelu(bf16(v["stimulus/x"]), terms=3)), v["expected/y"])

    write_vectors("crossbar", tmp_path / "c", preset="hastily", adc_bits=5, m=4, k=128, n=8)
    v = read_vectors(tmp_path / "c")
    x, w, y = v["stimulus/x"], v["stimulus/w"], v["expected/y"]
    config = dataclasses.replace(HASTILY_SRAM, adc_bits=5)
    assert torch.equal(crossbar_matmul(x, w, config), y)
    assert y[0, 0] < x[0].double() @ w[:, 0].double()  # the saturating row: the ADC clipped
    assert x.min() == -128 and x.max() == 127  # signed codes read back sign-extended (the manifest says so)

    write_vectors("uclm_exp", tmp_path / "e", count=64)
    v = read_vectors(tmp_path / "e")
    assert torch.equal(fp32_to_bits(exp_lut(fp32(v["stimulus/x"]))).to(torch.int64) & 0xFFFFFFFF, v["expected/y"])

    write_vectors("uclm_softmax", tmp_path / "s", rows=4, length=32)
    v = read_vectors(tmp_path / "s")
    scale = v["manifest"]["options"]["scale"]
    assert torch.equal(uclm_softmax(v["stimulus/x"], scale=scale, return_codes=True), v["expected/y"])
    assert v["expected/y"][1].tolist() == [0] * 16 + [255] + [0] * 15  # one dominant logit

    write_vectors("bitmap", tmp_path / "b", k=40, n=24, rows=8, cols=8)
    v = read_vectors(tmp_path / "b")
    w = fp32(v["stimulus/w"].reshape(40, 24))
    encoded = encode_bitmap(w, (8, 8))
    assert v["expected/vector_bits"].tolist() == encoded.vector_bits.long().tolist()
    assert v["expected/element_bits"].tolist() == encoded.element_bits.long().tolist()
    assert torch.equal(fp32(v["expected/values"]), encoded.values)
    assert torch.equal(decode_bitmap(encoded), w) and v["manifest"]["options"]["metadata_bits"] == encoded.metadata_bits


def test_sets_are_deterministic_and_seeded(tmp_path):
    for seed, out in ((0, "a"), (0, "b"), (1, "c")):
        write_vectors("softmax", tmp_path / out, length=64, rows=12, seed=seed)
    same = (tmp_path / "a" / "stimulus_x.hex").read_text() == (tmp_path / "b" / "stimulus_x.hex").read_text()
    other = (tmp_path / "a" / "stimulus_x.hex").read_text() != (tmp_path / "c" / "stimulus_x.hex").read_text()
    assert same and other
    assert set(FUNCTIONS) == {"expp", "softmax", "gelu", "crossbar", "uclm_exp", "uclm_softmax", "bitmap"}


def test_bad_requests_get_clear_errors(tmp_path, capsys):
    assert main(["vectors", "softmax", "--lane", "8", "--out", str(tmp_path)]) == 2
    assert "unknown option(s) lane for softmax; valid options: lanes" in capsys.readouterr().err
    assert main(["vectors", "softmax", "--lanes", "65", "--out", str(tmp_path)]) == 2
    assert "lanes must be an integer in [1, 64]" in capsys.readouterr().err
    with pytest.raises(ValueError, match="function must be one of"):
        write_vectors("tanh", tmp_path)
    with pytest.raises(ValueError, match="length must be an int >= 1"):
        write_vectors("softmax", tmp_path, length=0)
    assert not any(tmp_path.iterdir())
