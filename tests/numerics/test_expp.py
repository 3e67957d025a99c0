"""expp: kernel == scalar reference on every code, the spec's accuracy facts and corner cases."""

import math

import ml_dtypes
import numpy as np
import pytest
import torch

from numerics.expp import expp, expp_codes, expp_table
from numerics.formats import bf16_to_bits, bits_to_bf16, round_to_bfloat16
from tests.numerics.reference_expp import correction, expp_code

ALL = np.arange(65536)


def values(codes) -> np.ndarray:
    """float64 values of BF16 codes, through ml_dtypes (independent of the code under test)."""
    with np.errstate(invalid="ignore"):  # NaN codes
        return np.asarray(codes, dtype=np.uint16).view(ml_dtypes.bfloat16).astype(np.float64)


def run(codes) -> np.ndarray:
    return bf16_to_bits(expp(bits_to_bf16(torch.as_tensor(codes, dtype=torch.int32)))).numpy()


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    return np.array([expp_code(int(b)) for b in ALL])


def test_table_equals_reference_on_all_codes(reference):
    assert np.array_equal(expp_codes(torch.arange(65536)).numpy(), reference)
    assert np.array_equal(bf16_to_bits(expp_table()).numpy(), reference)


def test_kernel_equals_reference_through_lookup(reference):
    # several chunks, a permutation, an odd shape and a non-contiguous view
    perm = np.random.default_rng(0).permutation(np.tile(ALL, 5))
    codes = torch.as_tensor(perm).reshape(5, 256, 256).transpose(0, 2)
    got = bf16_to_bits(expp(bits_to_bf16(codes))).numpy()
    assert got.shape == (256, 256, 5)
    assert np.array_equal(got, reference[codes.numpy()])


@pytest.mark.parametrize(
    "code,want",
    [
        (0x3F80, 0x402E),
        (0xBF80, 0x3EBC),
        (0x4000, 0x40EC),
        (0xC120, 0x383E),
        (0x42B1, 0x7F4D),
        (0x42B2, 0x7F80),
        (0xC2AE, 0x00B3),
        (0xC2AF, 0x0000),
        (0x0000, 0x3F80),
        (0x8000, 0x3F80),
        (0x0001, 0x3F80),
        (0x7FC0, 0x7F80),
        (0xFFC0, 0x0000),
        (0xFF80, 0x0000),
    ],
)
def test_spec_spot_codes(code, want):
    assert run([code])[0] == want


def test_corner_cases(reference):
    x = values(ALL)
    finite = np.isfinite(x)
    tiny = finite & (np.abs(x) < 2.0**-9)  # +-0, subnormals, |x| < 2^-9
    assert tiny.sum() > 2 * 128 and np.all(reference[tiny] == 0x3F80)
    pos_inf = (finite & (x >= 89.0)) | (x == np.inf) | (np.isnan(x) & (ALL < 0x8000))
    assert np.all(reference[pos_inf] == 0x7F80)
    zero = (finite & (x <= -87.5)) | (x == -np.inf) | (np.isnan(x) & (ALL >= 0x8000))
    assert np.all(reference[zero] == 0x0000)
    assert reference.max() == 0x7F80  # never negative (sign 0), never NaN
    finite_out = reference[reference < 0x7F80]
    assert finite_out.max() == 0x7F4D and reference[ALL == 0x42B1][0] == 0x7F4D
    assert finite_out[finite_out > 0].min() == 0x00B3


def test_correction_table_against_rounded_exponential():
    """Spec fact 1: f' = RNE(128 (2^(f/128) - 1)) on 116 of 128 codes, with the listed exceptions."""
    f = np.arange(128)
    table = np.array([correction(int(i)) for i in f])
    exact = np.rint(128 * (2.0 ** (f / 128) - 1))  # no exact ties occur: 2^(f/128) is irrational for f > 0
    diff = table - exact
    assert (diff == 0).sum() == 116
    assert sorted(f[diff == -1]) == [1, 4, 5, 8, 12, 16, 20, 25, 91]
    assert sorted(f[diff == 1]) == [107, 111, 121]


def test_correction_mean_relative_error():
    """Spec fact 2: mean 0.1436 % (max 0.614 %); a correctly rounded table gives 0.1308 %."""
    f = np.arange(128)
    truth = 2.0 ** (f / 128)
    rel = np.abs(1 + np.array([correction(int(i)) for i in f]) / 128 - truth) / truth
    assert 100 * rel.mean() == pytest.approx(0.1436, abs=5e-5)
    assert 100 * rel.max() == pytest.approx(0.614, abs=5e-4)
    rne = np.abs(1 + np.rint(128 * (truth - 1)) / 128 - truth) / truth
    assert 100 * rne.mean() == pytest.approx(0.1308, abs=5e-5)


def test_within_one_ulp_of_correctly_rounded_exp(reference):
    """Spec fact 3: over the 34,145 inputs with a normal result, 32,990 exact and 1,155 off by one."""
    x = values(ALL)
    normal = np.isfinite(x) & (x >= -87.0) & (x <= 88.5)
    assert normal.sum() == 34145
    truth = np.exp(x[normal])
    cr = bf16_to_bits(round_to_bfloat16(torch.from_numpy(truth))).numpy()
    off = np.abs(reference[normal] - cr)
    assert off.max() == 1
    assert (off == 0).sum() == 32990 and (off == 1).sum() == 1155


def test_relative_error_on_uniform_scores():
    """Spec fact 4: x ~ U(-10, 0) in BF16: full expp ~0.186 % mean (max 0.706 %), Schraudolph alone
    ~4.05 % (max 6.43 %), correctly rounded BF16 0.143 %."""
    rng = np.random.default_rng(1)
    x32 = torch.from_numpy(rng.uniform(-10, 0, 400_000).astype(np.float32))
    codes = bf16_to_bits(round_to_bfloat16(x32)).numpy()
    xv = values(codes)
    truth = np.exp(xv)
    schraudolph_table = np.array([expp_code(int(b), correct=False) for b in ALL])
    rel = lambda c: np.abs(values(c) - truth) / truth  # noqa: E731
    full, bare = rel(run(codes)), rel(schraudolph_table[codes])
    assert 100 * full.mean() == pytest.approx(0.186, abs=0.003) and 100 * full.max() <= 0.7065
    assert 100 * bare.mean() == pytest.approx(4.05, abs=0.02) and 100 * bare.max() <= 6.435
    cr = rel(bf16_to_bits(round_to_bfloat16(torch.from_numpy(truth))).numpy())
    assert 100 * cr.mean() == pytest.approx(0.143, abs=0.003)


def test_shapes_and_empty():
    assert expp(torch.empty(0, 3, dtype=torch.bfloat16)).shape == (0, 3)
    scalar = expp(torch.tensor(1.0, dtype=torch.bfloat16))
    assert scalar.shape == () and scalar.dtype == torch.bfloat16
    assert float(scalar) == pytest.approx(math.e, rel=4e-3)


@pytest.mark.parametrize(
    "bad", [torch.zeros(3), torch.zeros(3, dtype=torch.float16), torch.zeros(3, dtype=torch.int16), [1.0, 2.0]]
)
def test_rejects_non_bfloat16(bad):
    with pytest.raises(TypeError, match="bfloat16"):
        expp(bad)
