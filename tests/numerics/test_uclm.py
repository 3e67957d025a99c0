"""UCLM lookup exponential and softmax: table, error bounds, reference agreement, validation."""

import dataclasses
import math
import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from numerics.uclm import HASTILY_UCLM, UCLMConfig, exp_lut, lut_table, softmax
from tests.numerics.kernel_modes import kernel_mode
from tests.numerics.reference_uclm import UCLMArrayRef, exp_lut_ref, softmax_ref, table_ref

FAST = settings(max_examples=40, deadline=None)
LN2 = math.log(2)
GRID = torch.linspace(-20.0, 0.0, 1_000_001, dtype=torch.float64)


def test_table_matches_spec_and_decimal_reference():
    t = lut_table()
    assert tuple(t.tolist()) == table_ref()
    assert t[0] == 32768 and t[127] == 65182 and t.max() < 2**16
    assert (t.diff() > 0).all()


def test_rom_lookup_returns_table_and_keeps_weights():
    rng = random.Random(0)
    ram = [[rng.randint(0, 1) for _ in range(64)] for _ in range(64)]
    array = UCLMArrayRef(lut_table().tolist(), ram)
    assert tuple(array.lookup(d) for d in range(128)) == table_ref()
    assert array.ram == ram and array.cycles == 4 * 128


def max_rel_error(cfg):
    y = exp_lut(GRID, cfg).double()
    ref = torch.exp(GRID)
    return ((y - ref).abs() / ref).max().item()


@pytest.mark.parametrize(
    "lut_frac_bits, frac_bits, er_mode, percent",
    [
        (None, None, "one", 0.5401),  # supremum 1 - 2**(-1/128)
        (None, None, "linear", 0.0015),  # ~ (ln2/128)**2 / 2
        (15, None, "one", 0.5413),
        (15, None, "linear", 0.0027),
    ],
)
def test_exp_error_matches_spec_digits(lut_frac_bits, frac_bits, er_mode, percent):
    cfg = UCLMConfig(lut_frac_bits=lut_frac_bits, frac_bits=frac_bits, er_mode=er_mode)
    assert round(100 * max_rel_error(cfg), 4) == percent


def test_exact_table_supremum_from_formula():
    # Without correction the error is at most 1 - 2**(-1/128) (r just below ln2/128), plus
    # the float32 rounding of the output.
    sup = 1 - 2 ** (-1 / 128)
    err = max_rel_error(UCLMConfig(lut_frac_bits=None, frac_bits=None))
    assert sup * 0.999 < err <= sup + 2.0**-24


@pytest.mark.parametrize("er_mode, percent", [("one", 0.5413), ("linear", 0.0028)])
def test_default_fixed_point_bounds(er_mode, percent):
    # Spec: defaults (F = 20) <= 0.5413 % and <= 0.0028 %, to the digits shown.
    assert round(100 * max_rel_error(dataclasses.replace(HASTILY_UCLM, er_mode=er_mode)), 4) <= percent


@pytest.mark.parametrize("er_mode", ["one", "linear"])
@pytest.mark.parametrize("exp_bits", [16, 32])
def test_exp_matches_reference(er_mode, exp_bits):
    cfg = dataclasses.replace(HASTILY_UCLM, er_mode=er_mode, exp_bits=exp_bits)
    g = torch.Generator().manual_seed(exp_bits)
    x = torch.cat(
        [
            torch.rand(3000, generator=g, dtype=torch.float64) * -30,
            torch.tensor([0.0, -0.0, -math.inf, -1e-30, -LN2, -(exp_bits - 1) * LN2]),
        ]
    )
    for wl in (False, True):
        y = exp_lut(x, cfg, width_limited=wl)
        ref = torch.tensor([exp_lut_ref(v, cfg, wl) for v in x.tolist()], dtype=torch.float64)
        assert torch.equal(y, ref.to(torch.float32))
    xp = torch.rand(500, generator=g, dtype=torch.float64) * 60
    ref = torch.tensor([exp_lut_ref(v, cfg) for v in xp.tolist()], dtype=torch.float64)
    assert torch.equal(exp_lut(xp, cfg), ref.to(torch.float32))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_exp_accepts_narrow_floats_exactly(dtype):
    x = (torch.rand(1000, generator=torch.Generator().manual_seed(1)) * -15).to(dtype)
    assert torch.equal(exp_lut(x), exp_lut(x.double()))


@pytest.mark.parametrize("exp_bits", [16, 32])
def test_width_limited_underflow_and_bound(exp_bits):
    cfg = dataclasses.replace(HASTILY_UCLM, exp_bits=exp_bits)
    threshold = -(exp_bits - 1) * LN2
    x = torch.linspace(threshold - 3, 0, 200001, dtype=torch.float64)
    x = x[(x - threshold).abs() > 1e-9]
    e = exp_lut(x, cfg, width_limited=True).double()
    assert torch.equal(e == 0, x < threshold)
    ref = torch.exp(x)
    # B from the spec, plus the truncation 2**-(P-1) and the float32 output rounding.
    assert ((e - ref).abs() <= 0.005413 * ref + 2.0 ** -(exp_bits - 1) + 2.0**-24 * ref).all()


def test_exp_large_inputs_and_infinities():
    y = exp_lut(torch.tensor([math.inf, 200.0, 10.0, -math.inf]))
    assert y[0] == math.inf and y[1] == math.inf and y[3] == 0
    assert abs(y[2].item() / math.exp(10) - 1) < 0.005413


# --------------------------------------------------------------------- softmax
def bound_ok(probs, ref, cfg, length, b):
    slack = 0.5 / cfg.out_max + 1.1 * b * ref + (length + 1) * 2.0 ** -(cfg.exp_bits - 1)
    return ((probs.double() - ref).abs() <= slack).all()


@pytest.mark.parametrize("exp_bits", [16, 32])
@pytest.mark.parametrize("length", [1, 7, 128, 1024])
def test_softmax_float_bound_and_argmax(exp_bits, length):
    cfg = dataclasses.replace(HASTILY_UCLM, exp_bits=exp_bits)
    g = torch.Generator().manual_seed(length)
    x = torch.randn(6, length, generator=g) * 4
    p = softmax(x, config=cfg)
    ref = torch.softmax(x.double(), -1)
    assert bound_ok(p, ref, cfg, length, 0.005413)
    codes = softmax(x, config=cfg, return_codes=True)
    assert codes.dtype == torch.int64 and codes.min() >= 0 and codes.max() <= 255
    top = codes.gather(-1, x.argmax(-1, keepdim=True))
    assert (top == codes.max(-1, keepdim=True).values).all()


def test_softmax_integer_logits_shift_invariant_and_bounded():
    g = torch.Generator().manual_seed(3)
    s = torch.randint(-3000, 3000, (4, 50), generator=g)
    scale = 0.004
    a = softmax(s, scale=scale, return_codes=True)
    b = softmax(s + 12345, scale=scale, return_codes=True)
    assert torch.equal(a, b)
    ref = torch.softmax(s.double() * scale, -1)
    assert bound_ok(softmax(s, scale=scale), ref, HASTILY_UCLM, 50, 0.005413)


@FAST
@given(
    length=st.integers(1, 40),
    seed=st.integers(0, 2**31),
    er=st.sampled_from(["one", "linear"]),
    p=st.sampled_from([16, 24, 32]),
    signed=st.booleans(),
    rounding=st.sampled_from(["half_up", "toward_zero"]),
    integer=st.booleans(),
)
def test_softmax_matches_reference(length, seed, er, p, signed, rounding, integer):
    cfg = dataclasses.replace(HASTILY_UCLM, er_mode=er, exp_bits=p, out_signed=signed, div_rounding=rounding)
    g = torch.Generator().manual_seed(seed)
    if integer:
        x = torch.randint(-5000, 5000, (3, length), generator=g)
        scale = 0.003
    else:
        x = torch.randn(3, length, generator=g) * 6
        scale = 1.0
    ref = [softmax_ref(row, cfg, scale) for row in x.tolist()]
    for kernels in ("auto", "eager"):  # the compiled kernel where it applies, and the torch path
        with kernel_mode(kernels):
            codes = softmax(x, scale=scale, config=cfg, return_codes=True)
        assert codes.tolist() == ref
        assert codes.max() <= cfg.out_max


def test_softmax_dim_and_masking():
    x = torch.randn(3, 5, 4, generator=torch.Generator().manual_seed(0))
    a = softmax(x, dim=1, return_codes=True)
    b = softmax(x.transpose(1, 2), dim=-1, return_codes=True).transpose(1, 2)
    assert torch.equal(a, b)
    masked = torch.tensor([[0.0, -math.inf, 1.0]])
    codes = softmax(masked, return_codes=True)
    assert codes[0, 1] == 0 and codes[0, 2] > codes[0, 0]


def test_softmax_max_element_exact_mantissa():
    # A one-element row: e = 2**(P-1) exactly, so the code is Q_o.
    assert softmax(torch.tensor([[3.7]]), return_codes=True).item() == 255
    signed = dataclasses.replace(HASTILY_UCLM, out_signed=True)
    assert softmax(torch.tensor([[3.7]]), config=signed, return_codes=True).item() == 127


# ------------------------------------------------------------------ validation
@pytest.mark.parametrize(
    "field, value",
    [
        ("lut_entries", 100),
        ("lut_entries", 1),
        ("lut_frac_bits", 0),
        ("frac_bits", 6),
        ("er_mode", "cubic"),
        ("ln2_frac_bits", 0),
        ("exp_bits", 15),
        ("exp_bits", 53),
        ("sum_bits", 31),
        ("out_bits", 1),
        ("div_rounding", "stochastic"),
    ],
)
def test_invalid_config_names_field(field, value):
    with pytest.raises(ValueError, match=field):
        dataclasses.replace(HASTILY_UCLM, **{field: value})


def test_rows_without_a_finite_logit_give_zero_codes_and_numpy_scales_work():
    import numpy as np

    x = torch.tensor([[0.0, -1.0, -math.inf], [-math.inf] * 3])
    codes = softmax(x, return_codes=True)
    assert codes[1].tolist() == [0, 0, 0]
    assert torch.equal(codes[0], softmax(x[:1], return_codes=True)[0])  # other rows untouched
    ints = torch.tensor([[3, 1, 0]])
    assert torch.equal(softmax(ints, scale=np.float32(0.5)), softmax(ints, scale=0.5))


def test_bad_inputs():
    with pytest.raises(TypeError, match="floating"):
        exp_lut(torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="NaN"):
        exp_lut(torch.tensor([math.nan]))
    with pytest.raises(ValueError, match="x <= 0"):
        exp_lut(torch.tensor([0.5]), width_limited=True)
    with pytest.raises(ValueError, match="width_limited"):
        exp_lut(torch.tensor([-0.5]), UCLMConfig(lut_frac_bits=None), width_limited=True)
    with pytest.raises(ValueError, match="scale"):
        softmax(torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="scale"):
        softmax(torch.tensor([1.0, 2.0]), scale=-1.0)
    with pytest.raises(ValueError, match="sum_bits"):
        softmax(torch.zeros(2, 1 << 17), config=dataclasses.replace(HASTILY_UCLM, sum_bits=48))
    with pytest.raises(ValueError, match=r"\+inf"):
        softmax(torch.tensor([[0.0, math.inf]]))
    with pytest.raises(ValueError, match=r"dim must be an int in \[-2, 1\]"):
        softmax(torch.zeros(2, 3), dim=5)
    with pytest.raises(ValueError, match=r"span less than 2\*\*62"):
        softmax(torch.tensor([-(2**62), 2**62]), scale=1.0)
    with pytest.raises(ValueError, match="non-empty"):
        softmax(torch.zeros(2, 0))
    with pytest.raises(TypeError, match="UCLMConfig"):
        exp_lut(torch.zeros(2), "uclm")


@pytest.mark.parametrize("kernel", ["auto", "eager"])
def test_softmax_refuses_nan_and_plus_inf_on_both_paths(kernel):
    # the compiled kernel checks the logits in its own pass and hands a bad row back to the torch checks
    with kernel_mode(kernel):
        with pytest.raises(ValueError, match="NaN"):
            softmax(torch.tensor([[0.0, 1.0], [math.nan, 0.0]], dtype=torch.float64))
        with pytest.raises(ValueError, match=r"\+inf"):
            softmax(torch.tensor([[0.0, 1.0], [-math.inf, math.inf]], dtype=torch.float64))
        # -inf alone is a masked logit, not an error
        assert softmax(torch.tensor([[0.0, -math.inf]], dtype=torch.float64), return_codes=True)[0, 1] == 0
