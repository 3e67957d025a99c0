"""Block-wise weight quantization, input quantization and range observers."""

import dataclasses
import math

import ml_dtypes
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from numerics.crossbar import ATLEUS_RERAM, HASTILY_SRAM
from numerics.formats import quantize
from numerics.quant import (
    M8F4,
    MinMaxObserver,
    PercentileObserver,
    QuantConfig,
    block_shape,
    observe_inputs,
    quantize_input,
    quantize_weight,
)
from tests.numerics.kernel_modes import kernel_mode


def weight(k=300, n=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    # Rows and columns of different magnitudes, so finer blocks help.
    return torch.randn(k, n, generator=g) * torch.rand(k, 1, generator=g) * torch.rand(1, n, generator=g)


def test_block_shapes_follow_spec():
    assert block_shape("crossbar", 384, 1536, 8) == (128, 32)
    assert block_shape("crossbar", 384, 1536, 4) == (128, 64)
    assert block_shape("crossbar", 384, 1536, 8, HASTILY_SRAM) == (64, 64)
    assert block_shape("row_block", 384, 1536, 8) == (128, 1536)
    assert block_shape("channel", 384, 1536, 8) == (384, 1)
    assert block_shape("tensor", 384, 1536, 8) == (384, 1536)


def scalar_block_quant(w, rb, cb, bits):
    """Independent float64 reference of §2.1 steps 1-3 (symmetric, fp32 scales)."""
    q_m = 2 ** (bits - 1) - 1
    k, n = w.shape
    codes = np.zeros((k, n), dtype=np.int64)
    scales = {}
    wn = w.double().numpy()
    for p in range(0, k, rb):
        for g in range(0, n, cb):
            blk = wn[p : p + rb, g : g + cb]
            a = np.abs(blk).max()
            c = float(np.float32(a / q_m)) if a > 0 else 1.0
            codes[p : p + rb, g : g + cb] = np.clip(np.round(blk / c), -q_m, q_m)
            scales[p // rb, g // cb] = c
    return codes, scales


@pytest.mark.parametrize("gran", ["crossbar", "row_block", "channel", "tensor"])
@pytest.mark.parametrize("bits", [4, 8])
def test_symmetric_matches_scalar_reference(gran, bits):
    w = weight()
    wq = quantize_weight(w, bits, granularity=gran)
    codes, scales = scalar_block_quant(w, wq.block_rows, wq.block_cols, bits)
    assert np.array_equal(wq.codes.numpy(), codes)
    assert wq.scales.shape == (max(k for k, _ in scales) + 1, max(g for _, g in scales) + 1)
    assert all(wq.scales[k].item() == v for k, v in scales.items())


@pytest.mark.parametrize("fmt", ["fp32", "pow2"])
@pytest.mark.parametrize("gran", ["crossbar", "row_block", "channel", "tensor"])
def test_error_bounded_by_half_step(fmt, gran):
    w = weight()
    wq = quantize_weight(w, 4, granularity=gran, scale_format=fmt)
    q_m = 7
    assert wq.codes.abs().max() <= q_m
    c = wq.expand(wq.scales)
    assert ((w.double() - wq.dequantize().double()).abs() <= c / 2 + 1e-7 * c).all()
    if fmt == "pow2":
        assert torch.equal(torch.log2(wq.scales), torch.log2(wq.scales).round())
    else:  # absmax of every block maps to +-q_m
        amax = (wq.codes.abs() == q_m).double()
        p, g = wq.scales.shape
        per_block = torch.nn.functional.pad(amax, (0, g * wq.block_cols - 200, 0, p * wq.block_rows - 300))
        assert (per_block.view(p, wq.block_rows, g, wq.block_cols).amax((1, 3)) == 1).all()


def test_half_step_bound_never_grows_with_finer_blocks():
    w = weight()
    bounds = [quantize_weight(w, 4, granularity=g) for g in ("tensor", "row_block", "crossbar")]
    per_elem = [wq.expand(wq.scales) / 2 for wq in bounds]
    assert (per_elem[1] <= per_elem[0]).all() and (per_elem[2] <= per_elem[1]).all()
    mse = [((w - wq.dequantize()) ** 2).mean().item() for wq in bounds]
    assert mse[2] < mse[0]


def test_float8_double_quantization_against_ml_dtypes():
    w = weight(600, 700, seed=2)
    wq = quantize_weight(w, 8, scale_format="float8_e4m3fn")
    raw = quantize_weight(w, 8).scales  # fp32 scales c (float32(a/q_m))
    a = w.double().abs()
    p, g = wq.scales.shape
    wp = torch.nn.functional.pad(a, (0, g * 32 - 700, 0, p * 128 - 600))
    c = (wp.view(p, 128, g, 32).amax((1, 3)) / 127).flatten().numpy()
    expected = np.empty_like(c)
    for lo in range(0, c.size, 256):
        grp = c[lo : lo + 256]
        s = float(np.float32(grp.max() / 448))
        expected[lo : lo + 256] = (grp / s).astype(ml_dtypes.float8_e4m3fn).astype(np.float64) * s
    assert np.array_equal(wq.scales.flatten().numpy(), expected)
    assert not torch.equal(wq.scales, raw)
    assert wq.codes.abs().max() <= 127


def test_asymmetric_codes_and_reconstruction():
    w = weight() + 0.3
    wq = quantize_weight(w, 4, granularity="channel", symmetric=False)
    assert wq.codes.min() >= -8 and wq.codes.max() <= 7 and wq.zero_points is not None
    c = wq.expand(wq.scales)
    assert ((w.double() - wq.dequantize().double()).abs() <= c / 2 + 1e-6 * c).all()
    # Zero is exactly representable: W = 0 maps to its zero point.
    w0 = w.clone()
    w0[5] = 0
    wq0 = quantize_weight(w0, 4, granularity="channel", symmetric=False)
    assert torch.equal(wq0.dequantize()[5], torch.zeros(200))


def test_stochastic_rounding_is_seeded_and_unbiased():
    w = torch.full((128, 32), 0.3) * torch.linspace(0.5, 1, 32)
    w[0] = 1.0  # absmax per column block
    runs = [quantize_weight(w, 4, rounding="stochastic", generator=torch.Generator().manual_seed(s)) for s in (1, 1, 2)]
    assert torch.equal(runs[0].codes, runs[1].codes) and not torch.equal(runs[0].codes, runs[2].codes)
    many = torch.stack(
        [
            quantize_weight(w, 4, rounding="stochastic", generator=torch.Generator().manual_seed(s)).dequantize()
            for s in range(200)
        ]
    ).mean(0)
    assert (many - w).abs().max() < 0.03


def test_quantize_input_per_row_and_tensor():
    x = torch.tensor([[0.5, -1.27, 0.0], [0.0, 0.0, 0.0], [2.54, 1.0, -0.01]])
    codes, s = quantize_input(x)
    assert s.flatten().tolist() == pytest.approx([0.01, 1.0, 0.02])
    assert codes.tolist() == [[50, -127, 0], [0, 0, 0], [127, 50, 0]]  # by hand: x / s
    codes, s = quantize_input(x, scale=0.5)  # -1.27 / 0.5 = -2.54 -> -3; -0.01 / 0.5 -> 0
    assert codes[0].tolist() == [1, -3, 0] and codes[2].tolist() == [5, 2, 0]
    tie, _ = quantize_input(torch.tensor([-1.25, 0.75]), scale=0.5)  # -2.5, 1.5: ties to even
    assert tie.tolist() == [-2, 2]
    # the quotient in float64: 1.074803113937378 / (3 / 127) = 45.49999849 -> 45 (float32 gives 45.5 -> 46)
    for kernels in ("compiled", "eager"):
        with kernel_mode(kernels):
            near, _ = quantize_input(torch.tensor([[3.0, 1.074803113937378, -0.0, 1.5 * 3 / 127]]))
        assert near.tolist() == [[127, 45, 0, 2]]  # -0 -> 0; float32(1.5·3/127) / (3/127) = 1.50000007 -> 2


@settings(max_examples=60, deadline=None)
@given(
    bits=st.integers(2, 16),
    rows=st.lists(
        st.lists(st.floats(-1e6, 1e6, allow_subnormal=True, width=32), min_size=3, max_size=3), min_size=1, max_size=5
    ),
    dtype=st.sampled_from([torch.int64, torch.float32]),
    kernels=st.sampled_from(["compiled", "eager"]),
)
def test_quantize_input_rows_are_quantize_per_row(bits, rows, dtype, kernels):
    # the per-row path of a layer's every call skips quantize's checks for finite rows; its codes must be
    # quantize's with the row scales s = max|x| / q_m (1 for a zero row), clamped to ±q_m
    x = torch.tensor(rows, dtype=torch.float32)
    q_m = 2 ** (bits - 1) - 1
    a = x.abs().amax(-1).double()
    s = torch.where(a > 0, a / q_m, 1.0)
    expected = quantize(x, f"int{bits}", s, axis=0).to(torch.int64).clamp(-q_m, q_m)
    with kernel_mode(kernels):
        codes, scales = quantize_input(x, bits, dtype=dtype)
    assert codes.dtype == dtype and torch.equal(codes.to(torch.int64), expected)
    assert torch.equal(scales.flatten(), s)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
@pytest.mark.parametrize("kernels", ["compiled", "eager"])
def test_quantize_input_refuses_non_finite_rows(bad, kernels):
    x = torch.ones(2, 3)
    x[1, 2] = bad
    with kernel_mode(kernels), pytest.raises(ValueError, match="NaN|finite"):
        quantize_input(x)


def test_observers():
    mm, pc = MinMaxObserver(), PercentileObserver(50.0)
    for batch in (torch.tensor([1.0, -3.0, 2.0, 0.5]), torch.tensor([0.1, 0.2, 0.3, 6.0])):
        mm.observe(batch)
        pc.observe(batch)
    assert mm.absmax() == 6.0 and mm.scale(8) == pytest.approx(6 / 127)
    # Per-batch medians of |x| (rank ceil(0.5*4)=2): 1.0 and 0.2 -> max 1.0.
    assert pc.absmax() == 1.0
    with pytest.raises(ValueError, match="no data"):
        MinMaxObserver().scale()
    with pytest.raises(ValueError, match="percentile"):
        PercentileObserver(0)


def test_observe_inputs_hooks_named_modules():
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    batches = [torch.ones(2, 4) * v for v in (1.0, -5.0)]
    obs = observe_inputs(model, batches, ["0", "2"])
    assert obs["0"].absmax() == 5.0
    assert not model[0]._forward_pre_hooks  # hooks removed
    with pytest.raises(ValueError, match="names"):
        observe_inputs(model, batches, ["9"])


def test_calibration_sees_inference_activations_and_restores_training_mode():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.5), torch.nn.Linear(8, 2)).train()
    model[2].eval()  # a mixed state, restored module by module
    batches = [torch.randn(16, 4) for _ in range(3)]
    got = observe_inputs(model, batches, ["2"])["2"].absmax()
    assert [m.training for m in model] == [True, True, False]
    want = observe_inputs(model.eval(), batches, ["2"])["2"].absmax()
    assert got == want  # no dropout: the same activations as in inference


def test_config_validation():
    assert M8F4.mha_weight_bits == 8 and M8F4.ffn_weight_bits == 4
    for field, value in [
        ("mha_weight_bits", 1),
        ("ffn_weight_bits", 17),
        ("granularity", "row"),
        ("scale_format", "fp16"),
        ("rounding", "up"),
        ("input_bits", 0),
        ("input_granularity", "channel"),
    ]:
        with pytest.raises(ValueError, match=field if field != "rounding" else "rounding"):
            dataclasses.replace(QuantConfig(), **{field: value})
    with pytest.raises(TypeError):
        quantize_weight(torch.ones(3, 3, dtype=torch.int64), 8)
    with pytest.raises(ValueError, match="finite"):
        quantize_weight(torch.tensor([[float("nan")]]), 8)
    with pytest.raises(ValueError, match="bits"):
        quantize_weight(torch.ones(3, 3), 1)
    with pytest.raises(ValueError, match="scale_format"):
        quantize_weight(torch.ones(3, 3), 8, symmetric=False, scale_format="pow2")
    with pytest.raises(ValueError, match="granularity"):
        quantize_weight(torch.ones(3, 3), 8, granularity="row")
    assert ATLEUS_RERAM.rows == 128
