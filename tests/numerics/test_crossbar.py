"""Crossbar MVM: exactness, clipping rules, bit decompositions, randomness, validation."""

import dataclasses

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from numerics import crossbar as xb
from numerics import derived as derived_module
from numerics.crossbar import (
    ATLEUS_RERAM,
    HASTILY_SRAM,
    CrossbarConfig,
    adc_convert,
    crossbar_matmul,
    input_planes,
    program_weights,
    weight_slices,
)
from tests.numerics.kernel_modes import kernel_mode
from tests.numerics.reference_crossbar import crossbar_matmul_ref

FAST = settings(max_examples=40, deadline=None)


@st.composite
def configs(draw, clipping: bool):
    cell_bits = draw(st.integers(1, 4))
    enc = draw(st.sampled_from(["offset", "differential"] + (["twos_complement"] if cell_bits == 1 else [])))
    weight_bits = draw(st.integers(2, 8))
    slices = -(-weight_bits // cell_bits)
    return CrossbarConfig(
        rows=draw(st.integers(1, 40)),
        cols=draw(st.integers(slices, 40)),
        cell_bits=cell_bits,
        slice_placement=draw(st.sampled_from(["columns", "arrays"])),
        weight_bits=weight_bits,
        input_bits=draw(st.integers(2, 8)),
        adc_bits=draw(st.integers(1, 5)) if clipping else 16,
        adc_mode=draw(st.sampled_from(["saturate", "truncate"] if clipping else ["exact", "saturate", "truncate"])),
        weight_encoding=enc,
        flip_columns=draw(st.booleans()),
        input_encoding=draw(st.sampled_from(["twos_complement", "unsigned"])),
        accumulator_bits=draw(st.sampled_from([8, 12, 32])),  # narrow ones wrap the block sum
    )


def random_codes(cfg, batch, k, n, seed):
    g = torch.Generator().manual_seed(seed)
    xlo, xhi = cfg.input_range
    wlo, whi = cfg.weight_range
    x = torch.randint(xlo, xhi + 1, (*batch, k), generator=g)
    w = torch.randint(wlo, whi + 1, (k, n), generator=g)
    return x, w


# ------------------------------------------------------------------ exactness
@FAST
@given(
    cfg=configs(clipping=False),
    k=st.integers(1, 90),
    n=st.integers(1, 50),
    batch=st.sampled_from([(), (3,), (2, 2)]),
    seed=st.integers(0, 2**31),
)
def test_wide_adc_equals_integer_matmul(cfg, k, n, batch, seed):
    x, w = random_codes(cfg, batch, k, n, seed)
    expected = x.to(torch.int64) @ w.to(torch.int64)
    assert not cfg.can_clip
    y = crossbar_matmul(x, w, dataclasses.replace(cfg, accumulator_bits=64))  # nothing wraps
    assert y.dtype == torch.int64 and torch.equal(y, expected)
    # a narrower accumulator keeps the low bits, two's complement
    half = 1 << (cfg.accumulator_bits - 1)
    wrapped = torch.remainder(expected + half, 2 * half) - half
    assert torch.equal(crossbar_matmul(x, w, cfg), wrapped)
    # The bit-plane path (taken when clipping is possible) is exact here too.
    prog = program_weights(w, cfg)
    planes = xb._clipping_blocks(x.reshape(-1, k).to(torch.int64), prog, cfg, None)[..., :n]
    assert torch.equal(planes.sum(1).reshape(expected.shape), expected)


@pytest.mark.parametrize("bits", [2, 4, 6, 8])
@pytest.mark.parametrize("enc", ["offset", "differential"])
@pytest.mark.parametrize("flip", [True, False])
def test_atleus_exact_adc_all_encodings(bits, enc, flip):
    cfg = dataclasses.replace(ATLEUS_RERAM, weight_bits=bits, weight_encoding=enc, flip_columns=flip, adc_mode="exact")
    x, w = random_codes(cfg, (5,), 300, 70, seed=bits)
    assert torch.equal(crossbar_matmul(x, w, cfg), x @ w)


@pytest.mark.parametrize("mode", ["saturate", "truncate"])
def test_atleus_preset_never_clips(mode):
    # Flipping caps every count at 128*3/2 = 192 <= 255, so even worst-case data is exact.
    cfg = dataclasses.replace(ATLEUS_RERAM, adc_mode=mode)
    assert cfg.max_count == 192 and not cfg.can_clip
    x = torch.tensor([[-128] * 256, [127] * 256, [-1] * 256])
    w = torch.tensor([[127, -128, -1, 0]] * 256)
    prog = program_weights(w, cfg)
    planes = xb._clipping_blocks(x, prog, cfg, None)[..., :4].sum(1)
    assert torch.equal(planes, x @ w) and torch.equal(crossbar_matmul(x, w, cfg), x @ w)


def test_partials_and_accumulator_wrap():
    cfg = dataclasses.replace(HASTILY_SRAM, adc_mode="exact", accumulator_bits=12)
    x, w = random_codes(cfg, (4,), 150, 9, seed=1)
    parts = crossbar_matmul(x, w, cfg, partials=True)
    assert parts.shape == (4, 3, 9)
    xp = torch.nn.functional.pad(x, (0, 42)).reshape(4, 3, 64)
    wp = torch.nn.functional.pad(w, (0, 0, 0, 42)).reshape(3, 64, 9)
    assert torch.equal(parts, torch.einsum("bpk,pkn->bpn", xp, wp))
    wrapped = (x @ w + 2048) % 4096 - 2048  # 12-bit two's complement by hand
    assert torch.equal(crossbar_matmul(x, w, cfg), wrapped)


# ------------------------------------------------------- hand-computed clipping
def test_atleus_flip_off_worst_case():
    # x = -1 on 128 rows, w = 127 (u = 255: all four slices at level 3): every count is
    # 128*3 = 384 > 255 -> 255.  sum_t sigma_t 2^t = -1, sum_m 4^m*255 = 21675, offset
    # correction -128*(-128) -> -21675 + 16384 = -5291 instead of -16256 (atleus.md §3.2).
    cfg = dataclasses.replace(ATLEUS_RERAM, flip_columns=False)
    x = torch.full((1, 128), -1)
    w = torch.full((128, 1), 127)
    assert crossbar_matmul(x, w, cfg).item() == -5291
    assert crossbar_matmul(x, w, ATLEUS_RERAM).item() == -16256


def test_hastily_worst_case():
    # x = -1, w = -1 over a full 64-row block: every plane counts 64 -> 63; both significance
    # sums are -1, so y = 63 instead of 64 (hastily.md §3.2).
    x = torch.full((1, 64), -1)
    w = torch.full((64, 1), -1)
    assert crossbar_matmul(x, w, HASTILY_SRAM).item() == 63
    assert crossbar_matmul(x[:, :63], w[:63], HASTILY_SRAM).item() == 63  # count 63 fits


@pytest.mark.parametrize("adc_bits", [1, 2, 3, 4, 5, 6, 7])
def test_saturation_exactly_above_full_scale(adc_bits):
    # x = 1 and w = 1 on c of 64 rows light only plane (t=0, b=0) with count c, so the
    # result is min(c, 2**adc_bits - 1): it clips exactly when c exceeds the ADC range.
    cfg = dataclasses.replace(HASTILY_SRAM, adc_bits=adc_bits)
    c = torch.arange(65)
    x = (torch.arange(64)[None] < c[:, None]).to(torch.int64)  # (65, 64), row c has c ones
    w = torch.ones(64, 1, dtype=torch.int64)
    y = crossbar_matmul(x, w, cfg)[:, 0]
    assert torch.equal(y, torch.clamp(c, max=2**adc_bits - 1))


def test_truncate_keeps_top_bits():
    # 64 rows, 1-bit cells: A = bit_length(64) = 7; a 4-bit ADC keeps multiples of 2**3.
    cfg = dataclasses.replace(HASTILY_SRAM, adc_bits=4, adc_mode="truncate")
    c = torch.arange(65)
    x = (torch.arange(64)[None] < c[:, None]).to(torch.int64)
    y = crossbar_matmul(x, torch.ones(64, 1, dtype=torch.int64), cfg)[:, 0]
    assert torch.equal(y, 8 * (c // 8))


@pytest.mark.parametrize("base", [ATLEUS_RERAM, HASTILY_SRAM])
@pytest.mark.parametrize("mode", ["saturate", "truncate"])
def test_conversion_error_non_increasing_in_adc_bits(base, mode):
    cfg0 = dataclasses.replace(base, flip_columns=False, adc_mode=mode)
    counts = torch.arange(cfg0.max_count + 1, dtype=torch.float64)
    prev = None
    for bits in range(1, 12):
        cfg = dataclasses.replace(cfg0, adc_bits=bits)
        err = (counts - adc_convert(counts, cfg)).abs()
        if mode == "truncate":
            delta = 2 ** max(0, cfg.max_count.bit_length() - bits)
            in_range = counts < delta * 2**bits
            assert torch.equal(err[in_range], torch.remainder(counts, delta)[in_range])
        if prev is not None:
            assert (err <= prev).all()
        prev = err
    assert prev.max() == 0


def test_hastily_workload_error_non_increasing_in_adc_bits():
    # Bias inputs and weights positive-heavy so that many counts exceed small ADC ranges.
    g = torch.Generator().manual_seed(7)
    x = torch.randint(-128, 128, (16, 256), generator=g) | 0x0F
    w = torch.randint(-128, 128, (256, 32), generator=g) | 0x0F
    exact = x @ w
    errs = [
        (crossbar_matmul(x, w, dataclasses.replace(HASTILY_SRAM, adc_bits=b)) - exact).abs().double().mean().item()
        for b in range(4, 8)
    ]
    assert all(a >= b for a, b in zip(errs, errs[1:])) and errs[0] > 0 and errs[-1] == 0


# ------------------------------------------------------------ bit decompositions
@pytest.mark.parametrize("cell_bits", [1, 2, 3, 4])
@pytest.mark.parametrize("enc", ["offset", "differential", "twos_complement"])
@pytest.mark.parametrize("weight_bits", [2, 5, 8, 11])
def test_weight_slices_reconstruct_exhaustively(cell_bits, enc, weight_bits):
    if enc == "twos_complement" and cell_bits != 1:
        return
    cfg = CrossbarConfig(cell_bits=cell_bits, weight_encoding=enc, weight_bits=weight_bits, cols=16)
    lo, hi = cfg.weight_range
    w = torch.arange(lo, hi + 1)
    g = weight_slices(w, cfg)
    assert g.min() >= 0 and g.max() <= cfg.levels and g.shape[-1] == cfg.slices
    u = (g * xb.slice_significance(cfg)).sum(-1)
    decoded = {
        "offset": lambda: u[0] - 2 ** (weight_bits - 1),
        "differential": lambda: u[0] - u[1],
        "twos_complement": lambda: u[0],
    }[enc]()
    assert torch.equal(decoded, w)


@pytest.mark.parametrize("enc", ["twos_complement", "unsigned"])
@pytest.mark.parametrize("bits", [2, 8, 12])
def test_input_planes_reconstruct_exhaustively(enc, bits):
    cfg = CrossbarConfig(input_bits=bits, input_encoding=enc)
    lo, hi = cfg.input_range
    x = torch.arange(lo, hi + 1)
    planes = input_planes(x, cfg)
    assert set(planes.unique().tolist()) <= {0, 1}
    assert torch.equal((planes * xb.input_significance(cfg)).sum(-1), x)


def test_flip_halves_column_sums():
    cfg = ATLEUS_RERAM
    _, w = random_codes(cfg, (), 300, 100, seed=3)
    prog = program_weights(w, cfg)
    sums = prog.levels.sum(dim=2)
    assert (2 * sums <= cfg.rows * cfg.levels).all() and prog.flipped.any()
    # Un-flipping the stored levels restores the slices.
    g = weight_slices(torch.nn.functional.pad(w, (0, 28, 0, 84)), cfg).unflatten(1, (3, 128))
    restored = torch.where(prog.flipped[:, :, None], cfg.levels - prog.levels, prog.levels)
    assert torch.equal(restored.to(torch.int64), g)


# --------------------------------------------------------------- vs the reference
def _draws(cfg, batch_m, k, n, seed):
    """Draw the spec's random tensors in the spec's order and shapes, independently."""
    g = torch.Generator().manual_seed(seed)
    p = -(-k // cfg.rows)
    n_pad = -(-n // cfg.weights_per_crossbar) * cfg.weights_per_crossbar
    cells = (cfg.sets, p, cfg.rows, n_pad * cfg.slices)
    out = {}
    if cfg.stuck_at_0_rate or cfg.stuck_at_1_rate:
        out["fault_u"] = torch.rand(cells, generator=g, dtype=torch.float64).tolist()
    if cfg.cell_noise_std:
        out["cell_z"] = torch.randn(cells, generator=g, dtype=torch.float64).tolist()
    if cfg.adc_noise_std:
        out["adc_z"] = torch.randn(
            (cfg.sets, batch_m, p, cfg.input_bits, n_pad * cfg.slices), generator=g, dtype=torch.float64
        ).tolist()
    return out


@settings(max_examples=30, deadline=None)
@given(
    cfg=configs(clipping=True),
    k=st.integers(1, 50),
    n=st.integers(1, 12),
    m=st.integers(1, 3),
    seed=st.integers(0, 2**31),
    noisy=st.sampled_from(["none", "faults", "cell", "adc", "all"]),
)
def test_kernel_matches_reference(cfg, k, n, m, seed, noisy):
    rates = {
        "none": {},
        "faults": dict(stuck_at_0_rate=0.1, stuck_at_1_rate=0.05),
        "cell": dict(cell_noise_std=0.05),
        "adc": dict(adc_noise_std=0.7),
    }
    rates["all"] = {**rates["faults"], **rates["cell"], **rates["adc"]}
    cfg = dataclasses.replace(cfg, **rates[noisy])
    x, w = random_codes(cfg, (m,), k, n, seed)
    draws = _draws(cfg, m, k, n, seed + 1)
    gen = torch.Generator().manual_seed(seed + 1) if cfg.has_randomness else None
    y = crossbar_matmul(x, w, cfg, generator=gen, partials=True)
    ref = crossbar_matmul_ref(x.tolist(), w.tolist(), cfg, partials=True, **draws)
    assert y.tolist() == ref


def test_hastily_preset_matches_reference_on_saturating_data():
    x = torch.full((2, 70), -1)
    x[1, ::3] = 5
    w = torch.full((70, 3), -1)
    w[:, 1] = 1
    ref = crossbar_matmul_ref(x.tolist(), w.tolist(), HASTILY_SRAM)
    assert crossbar_matmul(x, w, HASTILY_SRAM).tolist() == ref
    assert ref[0][0] == 63 + 6  # first block clips at 63, second block counts 6


# ------------------------------------------------------------------ randomness
NOISY = dataclasses.replace(
    ATLEUS_RERAM, cell_noise_std=0.02, adc_noise_std=0.5, stuck_at_0_rate=0.01, stuck_at_1_rate=0.01
)


def test_same_seed_same_bits_and_generator_required():
    x, w = random_codes(NOISY, (4,), 200, 40, seed=5)
    a = crossbar_matmul(x, w, NOISY, generator=torch.Generator().manual_seed(11))
    b = crossbar_matmul(x, w, NOISY, generator=torch.Generator().manual_seed(11))
    c = crossbar_matmul(x, w, NOISY, generator=torch.Generator().manual_seed(12))
    assert torch.equal(a, b) and not torch.equal(a, c)
    with pytest.raises(ValueError, match="generator"):
        crossbar_matmul(x, w, NOISY)


def test_fault_counts_are_binomial():
    # w = -43 -> u = 85 = 0b01010101: every 2-bit cell at level 1 (neither 0 nor L = 3), and
    # no column is flipped, so each stuck cell is visible.
    cfg = dataclasses.replace(ATLEUS_RERAM, stuck_at_0_rate=0.02, stuck_at_1_rate=0.07)
    w = torch.full((256, 320), -43)
    prog = program_weights(w, cfg, generator=torch.Generator().manual_seed(0))
    cells = prog.levels.numel()
    for level, rate in ((0, 0.02), (3, 0.07)):
        count = (prog.levels == level).sum().item()
        mean, sd = cells * rate, (cells * rate * (1 - rate)) ** 0.5
        assert abs(count - mean) < 5 * sd


# ------------------------------------------------------------------ validation
@pytest.mark.parametrize(
    "field, value",
    [
        ("rows", 0),
        ("cols", 0),
        ("cell_bits", 0),
        ("cell_bits", 5),
        ("weight_bits", 1),
        ("weight_bits", 17),
        ("input_bits", 1),
        ("dac_bits", 2),
        ("adc_bits", 0),
        ("adc_bits", 17),
        ("adc_mode", "round"),
        ("weight_encoding", "sign_magnitude"),
        ("input_encoding", "offset"),
        ("slice_placement", "rows"),
        ("accumulator_bits", 1),
        ("cell_noise_std", -0.1),
        ("adc_noise_std", float("nan")),
        ("stuck_at_0_rate", 1.5),
        ("stuck_at_1_rate", -0.01),
    ],
)
def test_invalid_config_names_field(field, value):
    with pytest.raises(ValueError, match=field):
        dataclasses.replace(ATLEUS_RERAM, **{field: value})


def test_invalid_combinations():
    with pytest.raises(ValueError, match="cell_bits"):
        dataclasses.replace(ATLEUS_RERAM, weight_encoding="twos_complement")
    with pytest.raises(ValueError, match="stuck_at"):
        dataclasses.replace(ATLEUS_RERAM, stuck_at_0_rate=0.6, stuck_at_1_rate=0.6)
    with pytest.raises(ValueError, match="cols"):
        CrossbarConfig(cols=3, weight_bits=8, cell_bits=2)
    with pytest.raises(TypeError):
        CrossbarConfig(rows=64.0)


def test_bad_inputs():
    x = torch.zeros(2, 10, dtype=torch.int64)
    w = torch.zeros(10, 3, dtype=torch.int64)
    with pytest.raises(TypeError, match="x_int"):
        crossbar_matmul(x.float(), w, HASTILY_SRAM)
    with pytest.raises(TypeError, match="w_int"):
        crossbar_matmul(x, w.bool(), HASTILY_SRAM)
    with pytest.raises(ValueError, match="x_int"):
        crossbar_matmul(x + 128, w, HASTILY_SRAM)
    with pytest.raises(ValueError, match="w_int"):
        crossbar_matmul(x, w - 129, HASTILY_SRAM)
    with pytest.raises(ValueError, match="K"):
        crossbar_matmul(x[:, :9], w, HASTILY_SRAM)
    with pytest.raises(ValueError, match="2-D"):
        crossbar_matmul(x, w[None], HASTILY_SRAM)
    with pytest.raises(ValueError, match="non-empty"):
        crossbar_matmul(x[:, :0], w[:0], HASTILY_SRAM)
    with pytest.raises(TypeError, match="CrossbarConfig"):
        crossbar_matmul(x, w, "hastily")
    unsigned = dataclasses.replace(HASTILY_SRAM, input_encoding="unsigned")
    with pytest.raises(ValueError, match="x_int"):
        crossbar_matmul(x - 1, w, unsigned)


def test_crossbars_that_would_pad_a_weight_to_billions_of_cells_are_refused():
    huge = CrossbarConfig(rows=65536, cols=65536, cell_bits=1, weight_bits=8, weight_encoding="differential")
    with pytest.raises(ValueError, match=r"4x4 weight on 65536x65536 crossbars would be padded.*no larger"):
        crossbar_matmul(torch.ones(2, 4, dtype=torch.int64), torch.ones(4, 4, dtype=torch.int64), huge)


@settings(max_examples=40, deadline=None)
@given(
    cfg=configs(clipping=True),
    k=st.integers(1, 60),
    n=st.integers(1, 8),
    m=st.integers(1, 3),
    live=st.integers(0, 6),
    seed=st.integers(0, 2**31),
)
def test_inputs_on_few_rows_match_the_reference(cfg, k, n, m, live, seed):
    # few rows with a non-zero input: the kernel may skip the conversions (no count can reach the ADC's
    # top); the reference converts every one
    x, w = random_codes(cfg, (m,), k, n, seed)
    rows = torch.randperm(k, generator=torch.Generator().manual_seed(seed))[:live]
    x = torch.zeros_like(x).index_copy(1, rows, x[:, rows])
    y = crossbar_matmul(x, w, cfg, partials=True)
    assert y.tolist() == crossbar_matmul_ref(x.tolist(), w.tolist(), cfg, partials=True)


def test_a_block_with_fewer_live_rows_than_the_adc_top_skips_the_conversions(monkeypatch):
    # HASTILY: 1-bit cells (L = 1), 6-bit saturating ADC (top 63): 63 driven rows cannot clip, 64 can
    w = torch.ones(64, 2, dtype=torch.int64)
    x = torch.ones(1, 64, dtype=torch.int64)
    x[0, 63] = 0
    exact = crossbar_matmul(x, w, HASTILY_SRAM)
    assert exact.tolist() == [[63, 63]]
    x[0, 63] = 1
    assert crossbar_matmul(x, w, HASTILY_SRAM).tolist() == [[63, 63]]  # 64 clipped to the top code
    assert crossbar_matmul_ref(x.tolist(), w.tolist(), HASTILY_SRAM) == [[63, 63]]
    monkeypatch.setattr(xb, "_correct_clipping", lambda *a: pytest.fail("corrected a block that cannot clip"))
    x[0, 63] = 0
    assert crossbar_matmul(x, w, HASTILY_SRAM).tolist() == [[63, 63]]
    x[0, 63] = 1
    with pytest.raises(pytest.fail.Exception):
        crossbar_matmul(x, w, HASTILY_SRAM)


def test_noise_free_saturation_corrects_only_hot_columns_and_rows(monkeypatch):
    # HASTILY (top 63): all 64 rows drive input bits 0..7 of x = -1 (two's complement 0xFF); column 0
    # holds 64 weights -1 (every slice sums to 64 > 63: hot), column 1 has one weight 0 (sums 63: cold)
    w = torch.full((64, 2), -1, dtype=torch.int64)
    w[5, 1] = 0
    x = torch.full((1, 64), -1, dtype=torch.int64)
    converted = []
    monkeypatch.setattr(xb, "_clipping_blocks", lambda *a: converted.append(a) or pytest.fail("converted planes"))
    # column 0: every one of the 8x8 (input bit, slice) conversions counts 64 and reads 63; the value
    # is sum_t sum_m sig_t sig_m 63 = (-128 + 127)·(-128 + 127)·63 = 63, not the exact 64
    # column 1: counts 63 or 0, no clipping: the exact product 63·(-1)·(-1) = 63
    assert crossbar_matmul(x, w, HASTILY_SRAM).tolist() == [[63, 63]]
    assert crossbar_matmul_ref(x.tolist(), w.tolist(), HASTILY_SRAM) == [[63, 63]]
    # one input row not driving bit 7: bit 7 counts 63 on column 0 and clips nowhere
    x[0, 9] = 127
    ref = crossbar_matmul_ref(x.tolist(), w.tolist(), HASTILY_SRAM)
    assert crossbar_matmul(x, w, HASTILY_SRAM).tolist() == ref
    assert not converted


@settings(max_examples=40, deadline=None)
@given(
    cfg=configs(clipping=True),
    k=st.integers(1, 60),
    n=st.integers(1, 8),
    m=st.integers(1, 3),
    seed=st.integers(0, 2**31),
    corner=st.sampled_from(["low", "high"]),
)
def test_codes_near_the_range_ends_match_the_reference(cfg, k, n, m, seed, corner):
    # codes within 2 of one end of their range set the same high bits on most rows and columns: many
    # conversions clip, and the saturating kernel must correct each one
    g = torch.Generator().manual_seed(seed)
    (xlo, xhi), (wlo, whi) = cfg.input_range, cfg.weight_range
    near = (lambda lo, hi: lo) if corner == "low" else (lambda lo, hi: hi - 2)
    x = near(xlo, xhi) + torch.randint(0, 3, (m, k), generator=g)
    w = near(wlo, whi) + torch.randint(0, 3, (k, n), generator=g)
    y = crossbar_matmul(x, w, cfg, partials=True)
    assert y.tolist() == crossbar_matmul_ref(x.tolist(), w.tolist(), cfg, partials=True)
    # the summed product comes from one GEMM plus the same corrections, then the accumulator wrap
    assert crossbar_matmul(x, w, cfg).tolist() == crossbar_matmul_ref(x.tolist(), w.tolist(), cfg)


def test_column_sums_follow_the_weight_tensor_and_its_version():
    w = torch.full((64, 1), -1, dtype=torch.int64)
    w[0, 0] = 0
    x = torch.full((1, 64), -1, dtype=torch.int64)
    for _ in range(2):  # the second product with the same weight keeps its column sums
        assert crossbar_matmul(x, w, HASTILY_SRAM).tolist() == [[63]]  # exact 63·1: no column can clip
    w[0, 0] = -1  # in place: the column is hot now, the cached sums must not survive the change
    assert crossbar_matmul(x, w, HASTILY_SRAM).tolist() == [[63]]  # clipped, not the exact 64
    mixed = torch.arange(-32, 32).view(1, 64)  # nor the float32 copy: x·w = -Σx = 32 (stale w[0, 0] = 0: 0)
    assert crossbar_matmul(mixed, w, HASTILY_SRAM).tolist() == [[32]]
    x[0, 0] = 1  # rows drive bits differently, sums as before
    ref = crossbar_matmul_ref(x.tolist(), w.tolist(), HASTILY_SRAM)
    assert crossbar_matmul(x, w, HASTILY_SRAM).tolist() == ref
    with torch.inference_mode():  # tensors without a version counter are never cached
        wi = torch.full((64, 1), -1, dtype=torch.int64)
        assert crossbar_matmul(x, wi, HASTILY_SRAM).tolist() == ref


def test_column_sums_leave_with_their_weight():
    before = len(derived_module._KEPT)
    w = torch.full((64, 2), -1, dtype=torch.int64)
    x = torch.full((1, 64), -1, dtype=torch.int64)
    for _ in range(3):
        crossbar_matmul(x, w, HASTILY_SRAM)
    assert len(derived_module._KEPT) == before + 2  # its column sums and its float32 copy
    del w
    assert len(derived_module._KEPT) == before


@pytest.mark.parametrize(
    "cfg",
    [
        ATLEUS_RERAM,
        HASTILY_SRAM,
        dataclasses.replace(NOISY, flip_columns=False),
        dataclasses.replace(HASTILY_SRAM, adc_mode="truncate"),
    ],
    ids=["exact", "corrected", "noisy", "truncate"],
)
@pytest.mark.parametrize("partials", [True, False])
def test_float64_results_are_the_same_integers(cfg, partials):
    x, w = random_codes(cfg, (5,), 150, 7, seed=2)
    x[0] = cfg.input_range[0]  # a row of the most negative code: high bits set everywhere, clips
    w[:, 0] = cfg.weight_range[0]

    def run(dtype):
        gen = torch.Generator().manual_seed(9) if cfg.has_randomness else None
        return crossbar_matmul(x, w, cfg, generator=gen, partials=partials, dtype=dtype)

    exact, as_float = run(torch.int64), run(torch.float64)
    assert as_float.dtype == torch.float64 and torch.equal(as_float, exact.to(torch.float64))


def test_bad_result_dtype():
    x, w = torch.zeros(1, 4, dtype=torch.int64), torch.zeros(4, 2, dtype=torch.int64)
    with pytest.raises(ValueError, match="dtype must be torch.int64 or torch.float64"):
        crossbar_matmul(x, w, HASTILY_SRAM, dtype=torch.float32)
    with pytest.raises(ValueError, match="accumulator_bits=64 may not fit float64"):
        crossbar_matmul(x, w, dataclasses.replace(HASTILY_SRAM, accumulator_bits=64), dtype=torch.float64)


@pytest.mark.parametrize("kernel", ["auto", "eager"])
@settings(max_examples=60, deadline=None)
@given(
    bits=st.integers(1, 16),
    rows=st.sampled_from([1, 2, 63, 64, 255, 256, 300]),
    m=st.integers(1, 4),
    seed=st.integers(0, 2**31),
)
def test_bit_counts_count_each_bit_over_the_rows(kernel, bits, rows, m, seed):
    # the compiled pass and the packed torch sum (8 bits or fewer, 255 rows or fewer: a byte lane per bit), and
    # the per-bit loop, against counting bit by bit in Python; all-ones rows fill a lane to its edge (255 = no carry)
    u = torch.randint(0, 1 << bits, (m, 2, rows), generator=torch.Generator().manual_seed(seed))
    u[0, 0] = (1 << bits) - 1
    dtype = torch.uint8 if bits <= 8 else torch.int32
    with kernel_mode(kernel):
        got = xb._bit_counts(u.to(dtype), bits)
    expected = [[[sum((v >> t) & 1 for v in row) for t in range(bits)] for row in pair] for pair in u.tolist()]
    assert got.tolist() == expected


def test_long_products_stay_exact_in_float32_chunks():
    # |x·w| = 127·127 = 16129 (odd): 2000 such terms sum to 32,258,000 > 2**24, where float32 keeps only
    # even integers; chunks of (2**24 - 1) // (128·128) = 1023 rows stay below 2**24 and are added in
    # float64, so the sum must be the int64 one to the unit
    g = torch.Generator().manual_seed(0)
    x = torch.full((3, 2000), 127, dtype=torch.int64)
    x[1] = torch.randint(-128, 128, (2000,), generator=g)
    w = torch.full((2000, 4), 127, dtype=torch.int64)
    w[:, 1] = -127
    w[:, 2] = torch.randint(-128, 128, (2000,), generator=g)
    w[7, 3] = 126  # one odd step: 1999·16129 + 127·126
    expected = x @ w
    assert expected[0, 3] == 1999 * 16129 + 127 * 126
    assert torch.equal(xb._exact_product(x, w, 128 * 128), expected)
    assert torch.equal(xb._exact_product(x.float(), w.float(), 128 * 128, torch.float64), expected.double())
    cfg = dataclasses.replace(HASTILY_SRAM, adc_bits=7, accumulator_bits=64)  # 7-bit ADC: no clipping
    assert torch.equal(crossbar_matmul(x, w, cfg), expected)


def test_block_groups_stay_under_the_cap_and_share_evenly_among_threads():
    # 4 MB cap = 1,048,576 outputs; 128 tokens x 1536 columns = 196,608 a block: 5 fit
    assert xb._GROUP_ELEMENTS == 1_048_576
    assert xb._block_groups(12, 196_608, 1) == [5, 5, 2]
    assert xb._block_groups(12, 196_608, 2) == [4, 4, 4]  # 5 rounded down to a multiple of 2
    assert xb._block_groups(3, 196_608, 2) == [2, 1]  # the block left over runs alone
    assert xb._block_groups(3, 196_608, 1) == [3]
    assert xb._block_groups(3, 2048 * 384, 2) == [1, 1, 1]  # one block alone is 786,432: two exceed the cap
    assert xb._block_groups(7, 10, 4) == [4, 1, 1, 1]
    assert xb._block_groups(0, 10, 2) == []


@pytest.mark.parametrize(
    ("group_elements", "threads", "products"), [(15, 1, 4), (30, 1, 3), (45, 1, 2), (45, 2, 3), (1 << 22, 3, 2)]
)
def test_row_blocks_are_multiplied_a_group_at_a_time_each_block_its_own_product(
    monkeypatch, group_elements, threads, products
):
    # rows 4, K = 14: blocks 0-3, 4-7, 8-11 whole and 12-13 partial; M·N = 3·5 = 15 outputs per block, so
    # groups of 15 // 15 = 1, 30 // 15 = 2, 45 // 15 = 3 (on 2 threads 2, then 1) or all 3 whole blocks per
    # product, the partial block alone: 3 + 1, 2 + 1, 1 + 1, 2 + 1 and 1 + 1 products
    cfg = dataclasses.replace(ATLEUS_RERAM, rows=4)
    g = torch.Generator().manual_seed(3)
    x = torch.randint(-128, 128, (3, 14), generator=g)
    w = torch.randint(-128, 128, (14, 5), generator=g)
    calls = []
    product = xb._exact_product
    monkeypatch.setattr(xb, "_exact_product", lambda *a, **k: calls.append(a[0].shape) or product(*a, **k))
    monkeypatch.setattr(xb, "_GROUP_ELEMENTS", group_elements)
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
    parts = list(xb._each_exact_block(x.float(), w.float(), cfg, torch.int64))
    expected = [x[:, lo : lo + 4] @ w[lo : lo + 4] for lo in (0, 4, 8, 12)]  # int64 products, block by block
    assert len(parts) == 4 and all(torch.equal(p, e) for p, e in zip(parts, expected))
    assert len(calls) == products


def test_sums_wrap_only_where_they_can_reach_the_accumulator():
    # HASTILY, 64 rows of x = w = -1 (all bits set): every (t, m) conversion counts 64 and clips to 63;
    # the digital value is Σ_t Σ_m σ_t σ_m 63 = (-128 + 127)·(-128 + 127)·63 = 63 per block, and 40
    # blocks give 2520, which a 12-bit accumulator wraps (2520 >= 2**11: 2520 - 4096) and a 13-bit one keeps
    x = torch.full((1, 64 * 40), -1, dtype=torch.int64)
    w = torch.full((64 * 40, 1), -1, dtype=torch.int64)
    assert crossbar_matmul(x, w, dataclasses.replace(HASTILY_SRAM, accumulator_bits=12)).item() == 2520 - 4096
    assert crossbar_matmul(x, w, dataclasses.replace(HASTILY_SRAM, accumulator_bits=13)).item() == 2520
    # the bound: 40 blocks · (2**8 - 1)·(2**8 - 1)·64 rows = 166,464,000 < 2**31 (no wrap pass), >= 2**27
    assert not xb._can_wrap(64 * 40, HASTILY_SRAM)
    assert xb._can_wrap(64 * 40, dataclasses.replace(HASTILY_SRAM, accumulator_bits=28))
