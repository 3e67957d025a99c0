"""formats: bit views, BF16 rounding in every mode, INTn and fixed-point quantization."""

import math
import struct
from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from numerics.formats import (
    INT4,
    INT8,
    UINT8,
    FixedFormat,
    IntFormat,
    Rounding,
    bf16_to_bits,
    bits_to_bf16,
    bits_to_fp32,
    dequantize,
    flush_subnormals,
    fp32_to_bits,
    from_fixed,
    lookup,
    quantize,
    round_to_bfloat16,
    to_fixed,
)
from tests.numerics.reference_formats import bf16_code, round_integral

MODES = [m.value for m in Rounding]
DETERMINISTIC = ["nearest_even", "toward_zero", "half_up"]


def f32_from_bits(bits: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(bits, dtype=np.uint32).view(np.float32).copy())


def structured_fp32() -> np.ndarray:
    """Every BF16 code as the high half, with low halves that probe each rounding decision."""
    high = np.arange(65536, dtype=np.uint32) << 16
    lows = np.array([0, 1, 0x7FFF, 0x8000, 0x8001, 0xFFFF, 0x4000, 0xC000], dtype=np.uint32)
    return (high[:, None] | lows[None, :]).reshape(-1)


# --------------------------------------------------------------------------- bit views


def test_bf16_bit_view_round_trips_every_code():
    codes = torch.arange(65536)
    x = bits_to_bf16(codes)
    assert x.dtype == torch.bfloat16
    assert torch.equal(bf16_to_bits(x), codes.to(torch.int32))
    ref = np.arange(65536, dtype=np.uint16).view(ml_dtypes.bfloat16).astype(np.float32)
    same = (x.float().numpy() == ref) | (np.isnan(ref) & np.isnan(x.float().numpy()))
    assert same.all()


@given(st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=64))
def test_fp32_bit_view_round_trips(bits):
    b = torch.tensor(bits, dtype=torch.int64)
    x = bits_to_fp32(b)
    assert torch.equal(fp32_to_bits(x), b)
    assert [struct.unpack("<I", struct.pack("<f", v))[0] for v in x.tolist() if not math.isnan(v)] == [
        u for u, v in zip(bits, x.tolist()) if not math.isnan(v)
    ]


# --------------------------------------------------------------------------- BF16 rounding


def test_nearest_even_matches_torch_and_ml_dtypes_on_structured_fp32():
    u = structured_fp32()
    x = f32_from_bits(u)
    got = bf16_to_bits(round_to_bfloat16(x)).numpy()
    nan = np.isnan(x.numpy())
    assert np.all(got[nan] == 0x7FC0)
    by_torch = bf16_to_bits(x.to(torch.bfloat16)).numpy()
    with np.errstate(invalid="ignore"):  # NaN inputs
        by_ml = x.numpy().astype(ml_dtypes.bfloat16).view(np.uint16).astype(np.int32)
    assert np.array_equal(got[~nan], by_torch[~nan])
    assert np.array_equal(got[~nan], by_ml[~nan])


@pytest.mark.parametrize("mode", DETERMINISTIC)
def test_all_modes_match_exact_reference_on_sampled_fp32(mode):
    u = np.random.default_rng(2).choice(structured_fp32(), 4000, replace=False)
    x = f32_from_bits(u)
    got = bf16_to_bits(round_to_bfloat16(x, mode)).tolist()
    assert got == [bf16_code(v, mode) for v in x.tolist()]


@given(st.lists(st.floats(width=32), min_size=1, max_size=32), st.sampled_from(DETERMINISTIC), st.booleans())
def test_fp32_inputs_match_exact_reference(values, mode, flush):
    x = torch.tensor(values, dtype=torch.float32)
    got = bf16_to_bits(round_to_bfloat16(x, mode, flush_subnormals=flush)).tolist()
    assert got == [bf16_code(v, mode, flush=flush) for v in x.tolist()]


@given(st.lists(st.floats(width=64), min_size=1, max_size=32), st.sampled_from(DETERMINISTIC))
def test_fp64_inputs_round_once(values, mode):
    x = torch.tensor(values, dtype=torch.float64)
    got = bf16_to_bits(round_to_bfloat16(x, mode)).tolist()
    assert got == [bf16_code(v, mode) for v in values]


@given(st.lists(st.tuples(st.floats(width=64), st.integers(0, 2**16 - 1)), min_size=1, max_size=32))
def test_stochastic_with_explicit_bits_matches_reference(pairs):
    values, bits = zip(*pairs)
    for dtype in (torch.float32, torch.float64):
        x = torch.tensor(values, dtype=dtype)
        got = round_to_bfloat16(x, "stochastic", random_bits=torch.tensor(bits))
        assert bf16_to_bits(got).tolist() == [bf16_code(v, "stochastic", r) for v, r in zip(x.tolist(), bits)]


def test_double_rounding_is_avoided():
    # 1 + 2^-8 + 2^-30 lies just above the BF16 midpoint between 1 and 1 + 2^-7. Through FP32 it
    # becomes exactly the midpoint (2^-30 is below FP32's ulp) and then rounds to even, down to 1.
    v = 1 + 2.0**-8 + 2.0**-30
    via_fp32 = round_to_bfloat16(torch.tensor([v], dtype=torch.float64).float())
    once = round_to_bfloat16(torch.tensor([v], dtype=torch.float64))
    assert bf16_to_bits(via_fp32).item() == 0x3F80
    assert bf16_to_bits(once).item() == 0x3F81
    # the same below the midpoint, and for half_up, and at FP32's overflow edge
    assert (
        bf16_to_bits(round_to_bfloat16(torch.tensor([1 + 2.0**-8 - 2.0**-40], dtype=torch.float64), "half_up")).item()
        == 0x3F80
    )
    big = torch.tensor([3.4e38, -3.5e38, 1e300], dtype=torch.float64)
    assert bf16_to_bits(round_to_bfloat16(big, "toward_zero")).tolist() == [0x7F7F, 0xFF7F, 0x7F7F]
    assert bf16_to_bits(round_to_bfloat16(big)).tolist() == [0x7F80, 0xFF80, 0x7F80]


def test_special_values_and_ties():
    x = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.0, -0.0], dtype=torch.float32)
    for mode in DETERMINISTIC:
        assert bf16_to_bits(round_to_bfloat16(x, mode)).tolist() == [0x7FC0, 0x7F80, 0xFF80, 0, 0x8000]
    tie_even, tie_odd = 1 + 2.0**-8, 1 + 3 * 2.0**-8  # midpoints above 1 (even) and 1 + 2^-7 (odd)
    ties = torch.tensor([tie_even, tie_odd, -tie_even, -tie_odd], dtype=torch.float32)
    codes = lambda mode: bf16_to_bits(round_to_bfloat16(ties, mode)).tolist()  # noqa: E731
    assert codes("nearest_even") == [0x3F80, 0x3F82, 0xBF80, 0xBF82]
    assert codes("half_up") == [0x3F81, 0x3F82, 0xBF80, 0xBF81]  # toward +infinity
    assert codes("toward_zero") == [0x3F80, 0x3F81, 0xBF80, 0xBF81]


def test_flush_subnormals():
    tiny = torch.tensor([2.0**-133, -(2.0**-130), 2.0**-126, 2.0**-126 - 2.0**-140], dtype=torch.float32)
    assert bf16_to_bits(round_to_bfloat16(tiny)).tolist() == [0x0001, 0x8008, 0x0080, 0x0080]
    assert bf16_to_bits(round_to_bfloat16(tiny, flush_subnormals=True)).tolist() == [0, 0x8000, 0x0080, 0x0080]


def test_stochastic_is_reproducible_and_unbiased():
    x = torch.full((200_000,), 1 + 77 / 256 * 2.0**-7, dtype=torch.float32)  # 77/256 of an ulp above 1
    a = round_to_bfloat16(x, "stochastic", generator=torch.Generator().manual_seed(7))
    b = round_to_bfloat16(x, "stochastic", generator=torch.Generator().manual_seed(7))
    c = round_to_bfloat16(x, "stochastic", generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert set(bf16_to_bits(a).unique().tolist()) == {0x3F80, 0x3F81}
    p = 77 / 256
    ups = (bf16_to_bits(a) == 0x3F81).double().mean().item()
    assert abs(ups - p) < 5 * math.sqrt(p * (1 - p) / x.numel())
    neg = round_to_bfloat16(-x, "stochastic", generator=torch.Generator().manual_seed(9))
    ups = (bf16_to_bits(neg) == 0xBF81).double().mean().item()  # magnitude rounds up just as often
    assert abs(ups - p) < 5 * math.sqrt(p * (1 - p) / x.numel())


def test_stochastic_bits_at_the_extremes():
    x = torch.tensor([1 + 2.0**-23, 1.0, 1 + 2.0**-7 - 2.0**-23], dtype=torch.float32)
    zeros = round_to_bfloat16(x, "stochastic", random_bits=torch.tensor(0))
    ones = round_to_bfloat16(x, "stochastic", random_bits=torch.tensor(0xFFFF))
    assert torch.equal(zeros, round_to_bfloat16(x, "toward_zero"))
    assert bf16_to_bits(ones).tolist() == [0x3F81, 0x3F80, 0x3F81]  # up unless exact


def test_rounding_rejects_bad_input_and_changes_nothing():
    x = torch.tensor([1.5, 2.5])
    before = x.clone()
    with pytest.raises(TypeError, match="float32, float64"):
        round_to_bfloat16(torch.tensor([1, 2]))
    with pytest.raises(TypeError):
        round_to_bfloat16(x.to(torch.float16))
    with pytest.raises(ValueError, match="rounding must be one of"):
        round_to_bfloat16(x, "nearest")
    with pytest.raises(ValueError, match="generator"):
        round_to_bfloat16(x, "stochastic")
    with pytest.raises(ValueError, match=r"\[0, 2\*\*16\)"):
        round_to_bfloat16(x, "stochastic", random_bits=torch.tensor([0, 65536]))
    with pytest.raises(TypeError, match="integer"):
        round_to_bfloat16(x, "stochastic", random_bits=torch.tensor([0.5, 0.5]))
    with pytest.raises(ValueError, match="broadcast"):
        round_to_bfloat16(x, "stochastic", random_bits=torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="only to rounding='stochastic'"):
        round_to_bfloat16(x, generator=torch.Generator())
    assert torch.equal(x, before)


# --------------------------------------------------------------------------- integers


def test_int_formats():
    assert (INT8.qmin, INT8.qmax, INT8.torch_dtype, INT8.name) == (-128, 127, torch.int8, "int8")
    assert (UINT8.qmin, UINT8.qmax, UINT8.torch_dtype, UINT8.name) == (0, 255, torch.uint8, "uint8")
    assert (INT4.qmin, INT4.qmax, INT4.torch_dtype) == (-8, 7, torch.int8)
    assert IntFormat(1, True).qmin == -1 and IntFormat(1, True).qmax == 0
    assert IntFormat(32, False).torch_dtype == torch.int64
    for bad in (0, -3, 33, 2.5, True):
        with pytest.raises(ValueError, match="bits"):
            IntFormat(bad)
    with pytest.raises(ValueError, match="signed must be True or False"):
        IntFormat(8, "yes")


@pytest.mark.parametrize(
    "mode,want",
    [
        ("nearest_even", [-2, -2, -2, 0, 0, 2, 2, 4]),
        ("toward_zero", [-2, -2, -1, 0, 0, 1, 2, 3]),
        ("half_up", [-2, -2, -1, 0, 1, 2, 3, 4]),
    ],
)
def test_quantize_rounding_modes_on_ties(mode, want):
    x = torch.tensor([-2.5, -2.0, -1.5, -0.25, 0.5, 1.5, 2.5, 3.5])
    assert quantize(x, "int8", 1.0, rounding=mode).tolist() == want


@given(
    st.lists(st.floats(-300, 300, width=32), min_size=1, max_size=40),
    st.integers(1, 12),
    st.booleans(),
    st.sampled_from(DETERMINISTIC),
    st.floats(2.0**-10, 2.0**4, width=32),
)
def test_quantize_matches_exact_reference(values, bits, signed, mode, scale):
    fmt = IntFormat(bits, signed)
    x = torch.tensor(values, dtype=torch.float32)
    got = quantize(x, fmt, scale, rounding=mode)
    assert got.dtype == fmt.torch_dtype
    want = [min(max(round_integral(Fraction(v) / Fraction(scale), mode), fmt.qmin), fmt.qmax) for v in x.tolist()]
    assert got.tolist() == want
    back = dequantize(got, fmt, scale)
    assert back.tolist() == [
        float(torch.tensor(float(Fraction(q) * Fraction(scale)), dtype=torch.float32)) for q in got.tolist()
    ]  # q·scale rounded once to FP32
    # the codes themselves are within half a step (a whole one toward zero) of every value inside the range,
    # checked exactly: FP32's rounding of q·scale may add an ulp
    bound = Fraction(scale) if mode == "toward_zero" else Fraction(scale) / 2
    for v, q in zip(x.tolist(), got.tolist()):
        if fmt.qmin * Fraction(scale) <= Fraction(v) <= fmt.qmax * Fraction(scale):
            assert abs(q * Fraction(scale) - Fraction(v)) <= bound


def test_per_channel_and_per_block_equal_per_tensor_pieces():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(6, 8, generator=g) * 4
    ch = torch.tensor([0.5, 0.25, 1.0, 0.125, 2.0, 0.75])
    q = quantize(x, INT8, ch, axis=0)
    for i in range(6):
        assert torch.equal(q[i], quantize(x[i], INT8, float(ch[i])))
    blk = torch.rand(6, 2, generator=g) + 0.1  # blocks of 4 along axis 1
    qb = quantize(x, INT4, blk, axis=1, block_size=4)
    for i in range(6):
        for j in range(2):
            assert torch.equal(qb[i, 4 * j : 4 * j + 4], quantize(x[i, 4 * j : 4 * j + 4], INT4, float(blk[i, j])))
    back = dequantize(qb, INT4, blk, axis=1, block_size=4)
    assert torch.equal(back, qb.float() * blk.repeat_interleave(4, dim=1))


def test_asymmetric_zero_point_and_saturation():
    x = torch.tensor([-float("inf"), -1.0, 0.0, 0.26, 100.0, float("inf")])
    q = quantize(x, UINT8, 0.5, zero_point=128)
    assert q.tolist() == [0, 126, 128, 129, 255, 255]
    assert dequantize(q, UINT8, 0.5, zero_point=128).tolist() == [-64.0, -1.0, 0.0, 0.5, 63.5, 63.5]


def test_stochastic_quantize_reproducible_and_unbiased():
    x = torch.full((100_000,), 0.3)
    g = lambda s: torch.Generator().manual_seed(s)  # noqa: E731
    a = quantize(x, INT8, 1.0, rounding="stochastic", generator=g(1))
    assert torch.equal(a, quantize(x, INT8, 1.0, rounding="stochastic", generator=g(1)))
    p = math.floor(0.3 * 2**16) / 2**16  # the discarded fraction truncated to 16 bits (float32 0.3 ~ 0.3)
    assert abs(a.double().mean().item() - p) < 5 * math.sqrt(p * (1 - p) / x.numel())
    bits = torch.tensor([0, 2**16 - 1])
    assert quantize(torch.tensor([-1.5, -1.5]), INT8, 1.0, rounding="stochastic", random_bits=bits).tolist() == [-1, -2]


def test_quantize_rejects_bad_input_and_changes_nothing():
    x = torch.randn(4, 6)
    before = x.clone()
    cases = [
        (TypeError, "dtype", lambda: quantize(torch.arange(4), INT8, 1.0)),
        (ValueError, "bits", lambda: quantize(x, IntFormat(0), 1.0)),
        (ValueError, "format", lambda: quantize(x, "int", 1.0)),
        (ValueError, "scale", lambda: quantize(x, INT8, 0.0)),
        (ValueError, "scale", lambda: quantize(x, INT8, -1.0)),
        (ValueError, "scale", lambda: quantize(x, INT8, float("nan"))),
        (ValueError, "block_size=4 does not divide", lambda: quantize(x, INT8, torch.ones(4, 1), axis=1, block_size=4)),
        (ValueError, "block_size must be", lambda: quantize(x, INT8, torch.ones(4, 6), axis=1, block_size=0)),
        (ValueError, "block_size needs axis", lambda: quantize(x, INT8, 1.0, block_size=2)),
        (ValueError, r"shape \(4,\)", lambda: quantize(x, INT8, torch.ones(6), axis=0)),
        (ValueError, "axis", lambda: quantize(x, INT8, torch.ones(4), axis=2)),
        (ValueError, "NaN", lambda: quantize(torch.tensor([float("nan")]), INT8, 1.0)),
        (ValueError, "zero_point must hold integers", lambda: quantize(x, UINT8, 1.0, zero_point=0.5)),
        (ValueError, "only to rounding='stochastic'", lambda: quantize(x, INT8, 1.0, generator=torch.Generator())),
        (ValueError, "outside int4", lambda: dequantize(torch.tensor([8]), INT4, 1.0)),
        # one bad value among per-channel and per-block scales, before and after expansion to x's shape
        (ValueError, "finite and > 0", lambda: quantize(x, INT8, torch.tensor([1.0, 1.0, float("inf"), 1.0]), axis=0)),
        (ValueError, "finite and > 0", lambda: quantize(x, INT8, torch.tensor([[1.0, 0.0]] * 4), axis=1, block_size=3)),
        (
            ValueError,
            "finite and > 0",
            lambda: dequantize(torch.zeros(4, 6, dtype=torch.int8), INT8, torch.tensor([1.0, -1.0, 1.0, 1.0]), axis=0),
        ),
        (TypeError, "scale must be real", lambda: quantize(x, INT8, torch.tensor(True))),
    ]
    for exc, msg, call in cases:
        with pytest.raises(exc, match=msg):
            call()
    assert torch.equal(x, before)


# --------------------------------------------------------------------------- fixed point


def test_fixed_point_q1_15_and_saturation():
    q115 = FixedFormat(1, 15, signed=False)
    assert (q115.bits, q115.name) == (16, "uQ1.15")
    d = torch.arange(128, dtype=torch.float64)
    codes = to_fixed(2.0 ** (d / 128), q115)
    assert codes.tolist() == [round(2 ** (i / 128) * 2**15) for i in range(128)]  # no exact ties here
    assert to_fixed(torch.tensor([2.5, -1.0]), q115).tolist() == [2**16 - 1, 0]
    back = from_fixed(codes, q115, dtype=torch.float64)
    assert torch.all((back - 2.0 ** (d / 128)).abs() <= 2.0**-16)
    s = FixedFormat(2, 5)
    assert (s.bits, s.int_format.qmin, s.int_format.qmax) == (8, -128, 127)
    assert to_fixed(torch.tensor([-4.0, 3.99, -5.0]), s).tolist() == [-128, 127, -128]
    for kw in ({"int_bits": -1, "frac_bits": 3}, {"int_bits": 1, "frac_bits": -2}, {"int_bits": 20, "frac_bits": 20}):
        with pytest.raises(ValueError):
            FixedFormat(**kw)


# --------------------------------------------------------------------------- lookup


@pytest.mark.parametrize("threads", [1, 2])
def test_lookup_gathers_by_code_across_chunks(threads):
    table = torch.arange(65536, dtype=torch.int32) * 3 % 65521  # any function of the code
    codes = torch.randint(0, 65536, (3, 100_000), generator=torch.Generator().manual_seed(0))
    x = bits_to_bf16(codes).t()  # non-contiguous, more than one chunk (one thread takes larger ones)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        got = lookup(table, x)
    finally:
        torch.set_num_threads(before)
    assert got.shape == x.shape and got.dtype == torch.int32
    assert torch.equal(got, (codes.t() * 3 % 65521).to(torch.int32))
    with pytest.raises(ValueError, match="65536"):
        lookup(table[:100], x)
    with pytest.raises(TypeError, match="bfloat16"):
        lookup(table, x.float())


def test_flush_subnormals_on_every_bf16_code():
    codes = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16)
    got = bf16_to_bits(flush_subnormals(bits_to_bf16(codes))).to(torch.int32) & 0xFFFF
    c = codes.to(torch.int32) & 0xFFFF
    want = torch.where((c & 0x7F80) == 0, c & 0x8000, c)  # exponent field 0: keep only the sign
    assert torch.equal(got, want)
    x = torch.tensor([2.0**-127, -(2.0**-149), 2.0**-126, 0.0], dtype=torch.float32)
    assert fp32_to_bits(flush_subnormals(x)).tolist() == [0, 0x80000000, 0x00800000, 0]  # -0 keeps its sign
    with pytest.raises(TypeError, match="bfloat16 or float32"):
        flush_subnormals(torch.zeros(2, dtype=torch.float64))
