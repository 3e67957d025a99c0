"""SoftEx GELU: datapath kernel == scalar reference, the published fits recomputed from the datapath,
special values and argument errors (spec softex.md section 4, fact 10)."""

import json
import math
from importlib import resources

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from numerics.formats import bf16_to_bits, bits_to_bf16, round_to_bfloat16
from numerics.softex import GeluCoefficients, gelu, gelu_datapath
from numerics.softex_gelu import acc_to_bf16, published_coefficients
from tests.numerics import reference_softex as ref

PUBLISHED = json.loads(resources.files("numerics").joinpath("gelu_coefficients.json").read_text())
FIT4 = published_coefficients(4)


def as_bf16(codes) -> torch.Tensor:
    return bits_to_bf16(torch.as_tensor(codes, dtype=torch.int32))


def phi_neg(u: float) -> float:
    """Phi(-u), float64, from math.erfc (independent of the fitting script's scipy/torch)."""
    return 0.5 * math.erfc(u / math.sqrt(2))


# --------------------------------------------------------------------------- kernel == reference


def test_accumulator_conversion_equals_reference_on_every_value():
    acc = torch.arange(1 << 14, dtype=torch.int32)
    assert bf16_to_bits(acc_to_bf16(acc)).tolist() == [ref.acc_to_bf16_code(int(v)) for v in acc]
    assert ref.acc_to_bf16_code(511) == 0x3D00  # 7 kept bits all ones + round bit: carry renormalises to 2^-5


@settings(max_examples=12)
@given(seed=st.integers(0, 2**32 - 1), terms=st.sampled_from([2, 3, 4, 5, 6]))
def test_kernel_equals_reference(seed, terms):
    """Random BF16 codes (every sign, NaN, Inf, subnormals) through gelu and through the raw datapath."""
    coeffs = published_coefficients(terms)
    x_codes = np.random.default_rng(seed).integers(0, 65536, 300).tolist() + [
        0x0000,
        0x8000,
        0x0001,
        0x7F80,
        0xFF80,
        0x7FC0,
        0x3F80,
        0xBF80,
    ]
    got = bf16_to_bits(gelu(as_bf16(x_codes), coefficients=coeffs)).tolist()
    assert got == [ref.gelu_code(c, coeffs.a, coeffs.b) for c in x_codes]
    w_codes = [c | 0x8000 for c in x_codes if (c & 0x7FFF) <= 0x7F80]  # w <= 0, NaN excluded
    s = bf16_to_bits(gelu_datapath(as_bf16(w_codes), coeffs)).tolist()
    assert s == [ref.gelu_datapath_code(c, coeffs.a, coeffs.b) for c in w_codes]


def test_accumulator_wraps_modulo_2_14():
    """Step 5: the 14-bit register wraps. b = 255/256 and 255/65536 sum to < 1 but their half-up codes to
    16320 + 64 = 2^14, so S(0) = 0."""
    b = tuple(bf16_to_bits(round_to_bfloat16(torch.tensor([255 / 256, 255 / 65536]))).tolist())
    coeffs = GeluCoefficients(a=(0x3F80, 0x3F80), b=b)
    zero = as_bf16([0x8000, 0x0000])
    assert bf16_to_bits(gelu_datapath(zero, coeffs)).tolist() == [0, 0]
    assert ref.gelu_datapath_code(0x8000, coeffs.a, coeffs.b) == 0


# --------------------------------------------------------------------------- the published fits


ALL_X = as_bf16(list(range(0, 0x4101)) + list(range(0x8000, 0xC101)))  # every finite BF16 with |x| <= 8
POS_X = as_bf16(list(range(0, 0x4101)))


@pytest.mark.parametrize("terms", [2, 3, 4, 5, 6])
def test_published_fit_figures_recomputed(terms):
    fit = PUBLISHED["fits"][str(terms)]
    coeffs = published_coefficients(terms)
    # codes and decimals agree; S(0) = 1/2 exactly (sum of half-up b codes = 2^13)
    assert [f"0x{c:04X}" for c in coeffs.a] == fit["a_hex"] and [f"0x{c:04X}" for c in coeffs.b] == fit["b_hex"]
    assert list(coeffs.a_values) == fit["a"] and list(coeffs.b_values) == fit["b"]
    assert sum(math.floor(b * 2**14 + 0.5) for b in coeffs.b_values) == 2**13
    # stage 1: E on the 1601-point grid from the real-valued fit
    u = np.linspace(0, 8, 1601)
    a_real, b_real = np.array(fit["a_real"]), np.array(fit["b_real"])
    approx = np.exp(-np.outer(u**2, a_real)) @ b_real
    e = np.max(u * np.abs(approx - np.array([phi_neg(v) for v in u])))
    assert e == pytest.approx(fit["E"], rel=1e-6) and sum(b_real) == pytest.approx(0.5, abs=1e-7)
    # the BF16 codes lie within +-4 codes of the rounded real values (stage 2's box), but for at most one
    # b that absorbs a residue of the sum constraint the box cannot fix (scripts/fit_gelu.py, absorb)
    rounded = bf16_to_bits(round_to_bfloat16(torch.tensor(fit["a_real"] + fit["b_real"], dtype=torch.float64)))
    assert int(((rounded - torch.tensor(list(coeffs.a + coeffs.b))).abs() > 4).sum()) <= 1
    # stage 2: E_S from the datapath over every finite BF16 |x| <= 8
    s = gelu_datapath(-(POS_X * POS_X), coeffs).double()
    xs = POS_X.double()
    err_s = xs * (s - torch.tensor([phi_neg(v) for v in xs.tolist()], dtype=torch.float64)).abs()
    assert err_s.max().item() == pytest.approx(fit["E_S_max"], rel=1e-9)
    assert err_s.mean().item() == pytest.approx(fit["E_S_mean"], rel=1e-9)
    # GELU against float64 erf-GELU
    y = gelu(ALL_X, coefficients=coeffs)
    truth = torch.tensor([0.5 * v * math.erfc(-v / math.sqrt(2)) for v in ALL_X.double().tolist()], dtype=torch.float64)
    assert (y.double() - truth).abs().max().item() == pytest.approx(fit["gelu_max_abs_error"], rel=1e-9)
    exact = bf16_to_bits(y) == bf16_to_bits(round_to_bfloat16(truth))
    assert exact.double().mean().item() == pytest.approx(fit["gelu_exact_share"], rel=1e-12)


def test_published_fits_meet_the_spec():
    """Spec 4.3: stage 1 E ~ 5.4e-3, 1.3e-3, 5.8e-4, 3.0e-4, 1.0e-4; E_S after rounding ~ 6.6e-3, 2.9e-3,
    1.6e-3, 1.3e-3, 1.2e-3; a 4-term E_S above 2e-3 signals a bug. The search never makes things worse."""
    fits = [PUBLISHED["fits"][str(n)] for n in (2, 3, 4, 5, 6)]
    for fit, e in zip(fits, (5.4e-3, 1.3e-3, 5.8e-4, 3.0e-4, 1.0e-4)):
        assert fit["E"] <= 1.1 * e
    assert [f["E"] for f in fits] == sorted((f["E"] for f in fits), reverse=True)
    for n, fit, e in zip((2, 3, 4, 5, 6), fits, (6.6e-3, 2.9e-3, 1.6e-3, 1.3e-3, 1.2e-3)):
        assert fit["E_S_max"] <= min(fit["E_S_rounded"], 1.2 * e)
        # N = 6: rounding its six real a to BF16 costs more than the indicative 1.2e-3 (1.54e-3);
        # stage 2 brings it back to 1.30e-3
        assert n == 6 or fit["E_S_rounded"] <= 1.2 * e
    assert fits[2]["E_S_max"] <= 2e-3


# --------------------------------------------------------------------------- special values, errors


def test_special_values():
    x = torch.tensor([float("nan"), float("inf"), float("-inf"), 1e30, -1e30, 0.0, -0.0, 1e-3, -1e-3, 9.0, -9.0])
    y = gelu(x.to(torch.bfloat16))
    xb = x.to(torch.bfloat16)
    codes = bf16_to_bits(y).tolist()
    assert math.isnan(y[0].item())
    assert codes[1] == 0x7F80 and codes[2] == 0x8000  # +Inf, -0.0
    assert codes[3] == bf16_to_bits(xb[3:4]).item() and codes[4] == 0x8000  # x^2 overflows: S = 0
    assert codes[5] == 0x0000 and codes[6] == 0x8000
    assert y[7].item() == xb[7].item() / 2 and y[8].item() == xb[8].item() / 2  # S(0) = 1/2: y = x/2 for tiny x
    assert y[9].item() == 9.0 and codes[10] == 0x8000  # beyond 8: S = 0 exactly


def test_shapes():
    x = (torch.randn(3, 5, 7) * 3).to(torch.bfloat16)
    y = gelu(x)
    assert y.shape == x.shape and y.dtype == torch.bfloat16
    assert torch.equal(y.reshape(-1), gelu(x.reshape(-1)))
    assert gelu(torch.empty(0, dtype=torch.bfloat16)).shape == (0,)


@pytest.mark.parametrize("bad", [torch.zeros(3), torch.zeros(3, dtype=torch.float16), [1.0]])
def test_rejects_non_bfloat16(bad):
    with pytest.raises(TypeError, match="bfloat16"):
        gelu(bad)


@pytest.mark.parametrize(
    "a,b,name",
    [
        ((0x0000, 0x3F80), (0x3E00, 0x3E00), "a_i"),  # a = 0
        ((0xBF80, 0x3F80), (0x3E00, 0x3E00), "a_i"),  # a < 0
        ((0x7F80, 0x3F80), (0x3E00, 0x3E00), "a_i"),  # a = Inf
        ((0x3F80, 0x3F80), (0x3E00, 0x0000), "b_i"),  # b = 0
        ((0x3F80, 0x3F80), (0x3E00, 0x7FC0), "b_i"),  # b = NaN
        ((0x3F80, 0x3F80), (0x3F00, 0x3F00), "sum of b_i"),  # 1/2 + 1/2
        ((0x3F80,), (0x3E00, 0x3E00), "same length"),
        ((0x3F80, 0x1FFFF), (0x3E00, 0x3E00), "BF16 codes"),
    ],
)
def test_rejects_bad_coefficients(a, b, name):
    with pytest.raises(ValueError, match=name):
        GeluCoefficients(a, b)


def test_rejects_bad_terms_and_inputs():
    x = torch.ones(2, dtype=torch.bfloat16)
    for terms in (1, 7, 0, True):
        with pytest.raises(ValueError, match="terms"):
            gelu(x, terms=terms)
    with pytest.raises(ValueError, match="w must be <= 0"):
        gelu_datapath(x, FIT4)
    with pytest.raises(TypeError, match="GeluCoefficients"):
        gelu(x, coefficients=(1, 2))
