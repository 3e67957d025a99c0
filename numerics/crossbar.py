"""Compute-in-memory crossbar matrix-vector products, bit for bit.

One function, :func:`crossbar_matmul`, models what an analog crossbar tile computes for an
integer product ``x_int @ w_int``: weights split into row blocks of ``rows`` and into bit
slices of ``cell_bits`` per cell, inputs applied one bit per step (1-bit DACs), every
column's count converted by an ADC, shift-and-add of the converted counts with their
signs, and a digital sum of the row-block partial results.

Two presets come from the specs (``atleus.md`` §2.2-2.3 and
``hastily.md`` §2.1): :data:`ATLEUS_RERAM` (ISAAC-style ReRAM, 2-bit cells, offset
encoding, column flipping, 8-bit ADC) and :data:`HASTILY_SRAM` (8T-SRAM, one weight bit
per array, two's complement, 6-bit ADC).

When the configuration cannot clip (the ADC covers the largest possible column count and
no noise or faults are enabled) the result is the exact integer product and is computed
directly. A noise-free saturating ADC clips a conversion only where its count exceeds the top
code, which cheap bounds decide (the column's stored level sum, the rows whose input bit is set):
the exact product is computed once and corrected at those conversions only. Otherwise (noise,
faults, a truncating ADC) every (input bit, weight slice) plane is computed as a float matmul
of 0/1 input planes with cell levels (exact: counts are small integers) and sent through the
ADC model.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import NamedTuple

import torch

from numerics import kernels
from numerics.derived import derived
from numerics.validation import check_choice as _check_choice
from numerics.validation import check_int as _check_int_field
from numerics.validation import check_padded, check_type

__all__ = [
    "CrossbarConfig",
    "ATLEUS_RERAM",
    "HASTILY_SRAM",
    "ProgrammedWeights",
    "adc_convert",
    "check_codes",
    "crossbar_matmul",
    "wrap_accumulator",
    "wrap_sum",
    "input_planes",
    "input_significance",
    "program_weights",
    "slice_significance",
    "weight_slices",
]

_ADC_MODES = ("exact", "saturate", "truncate")
_WEIGHT_ENCODINGS = ("offset", "differential", "twos_complement")
_INPUT_ENCODINGS = ("twos_complement", "unsigned")
_SLICE_PLACEMENTS = ("columns", "arrays")
# Elements of the per-plane count tensor processed at once on the clipping path (memory bound).
_CHUNK_ELEMENTS = 1 << 22
# Outputs of one batched product over a group of row blocks (:func:`_block_groups`): fewer BLAS calls, each of
# which can wait for a thread on a busy core. 4 MB of float32: 16 MB groups (MiniLM's feed-forward output
# layer at 2048 tokens: 4 blocks of 2048 x 384) made its forward 5-8 % slower than one product per block,
# though the layer alone ran as fast.
_GROUP_ELEMENTS = 1 << 20
# Fewest rows of K an exact float32 product chunk may hold (fewer: one float64 product is cheaper).
_MIN_CHUNK_ROWS = 256


def _check_rate(name: str, value, hi: float = math.inf) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    if not (math.isfinite(value) and 0.0 <= value <= hi):
        raise ValueError(f"{name} must be finite and in [0, {hi}], got {value}")


@dataclass(frozen=True)
class CrossbarConfig:
    """One crossbar tile's arithmetic (atleus.md §2.2, shared with hastily.md §2.1).

    Defaults are the Atleus ReRAM values; :data:`HASTILY_SRAM` overrides what differs.
    """

    rows: int = 128
    """Word lines per crossbar (count), i.e. rows of one row block. Atleus: 128 (paper);
    HASTILY: 64 (paper)."""

    cols: int = 128
    """Bit lines per crossbar (count). Atleus: 128 (paper); HASTILY: 64 (paper)."""

    cell_bits: int = 2
    """Bits stored per cell b_c, 1..4; a cell holds a level in [0, L], L = 2**b_c - 1.
    Atleus: 2 (paper); HASTILY: 1 (paper)."""

    slice_placement: str = "columns"
    """Where the s = ceil(b_w / b_c) slices of a weight sit: ``"columns"`` (adjacent columns
    of one crossbar, n_w = cols // s weights per crossbar; ISAAC) or ``"arrays"`` (slice m
    in array m, n_w = cols; HASTILY). Changes only the crossbar count and the physical
    layout of per-cell random draws, never the noise-free result."""

    weight_bits: int = 8
    """Weight code width b_w (bits), 2..16. Atleus: per MxFy precision, 8 default
    (assumption); HASTILY: 8 (paper)."""

    input_bits: int = 8
    """Input code width b_x (bits), 2..16; one bit applied per step. 8 for both
    (Atleus: assumption; HASTILY: paper)."""

    dac_bits: int = 1
    """Input bits applied per step (bits); only 1 (bit-serial) is modelled (both papers)."""

    adc_bits: int = 8
    """ADC resolution (bits), 1..16. Atleus: 8 (paper); HASTILY: 6 (paper)."""

    adc_mode: str = "saturate"
    """``"exact"`` (no clipping: ideal converter), ``"saturate"`` (clamp to
    [0, 2**adc_bits - 1]) or ``"truncate"`` (keep the top adc_bits of the full-scale count,
    i.e. floor to a multiple of 2**(A - adc_bits), A = bit length of the largest count).
    Assumption for both (HASTILY: predecessor functional model clamps)."""

    weight_encoding: str = "offset"
    """Signed-weight encoding: ``"offset"`` (u = w + 2**(b_w-1), the offset removed
    digitally; ISAAC bias encoding), ``"differential"`` (u+ = max(w, 0), u- = max(-w, 0) on
    two crossbar sets) or ``"twos_complement"`` (u = w mod 2**b_w, MSB slice subtracted;
    cell_bits = 1 only; PUMAsim). Atleus: offset; HASTILY: twos_complement."""

    flip_columns: bool = True
    """ISAAC column flipping: a column (per row block) whose level sum exceeds rows*L/2
    stores L - g and is un-flipped digitally, halving the largest count. Atleus: on
    (predecessor ISAAC; use in Atleus unknown); HASTILY: off (assumption)."""

    input_encoding: str = "twos_complement"
    """``"twos_complement"`` (MSB input bit has significance -2**(b_x-1)) or
    ``"unsigned"`` (inputs in [0, 2**b_x - 1]; HASTILY softmax outputs). Assumption."""

    accumulator_bits: int = 32
    """Width (bits) of the digital cross-row-block sum; the result wraps in two's
    complement. 32 for both (assumption; HASTILY needs >= 24)."""

    cell_noise_std: float = 0.0
    """Gaussian std of each programmed cell conductance, in units of the full-scale level L
    (static per draw). Assumption; off by default."""

    adc_noise_std: float = 0.0
    """Gaussian std added to every conversion's analog count (ADC LSBs of the count, i.e.
    cell-level units). Assumption; off by default."""

    stuck_at_0_rate: float = 0.0
    """Probability that a cell is stuck at level 0 (per cell). Assumption; off by default."""

    stuck_at_1_rate: float = 0.0
    """Probability that a cell is stuck at level L (per cell). Assumption; off by default."""

    def __post_init__(self) -> None:
        _check_int_field("rows", self.rows, 1, 1 << 16)
        _check_int_field("cols", self.cols, 1, 1 << 16)
        _check_int_field("cell_bits", self.cell_bits, 1, 4)
        _check_choice("slice_placement", self.slice_placement, _SLICE_PLACEMENTS)
        _check_int_field("weight_bits", self.weight_bits, 2, 16)
        _check_int_field("input_bits", self.input_bits, 2, 16)
        _check_int_field("dac_bits", self.dac_bits, 1, 1)
        _check_int_field("adc_bits", self.adc_bits, 1, 16)
        _check_choice("adc_mode", self.adc_mode, _ADC_MODES)
        _check_choice("weight_encoding", self.weight_encoding, _WEIGHT_ENCODINGS)
        if self.weight_encoding == "twos_complement" and self.cell_bits != 1:
            raise ValueError(f"weight_encoding='twos_complement' needs cell_bits == 1, got cell_bits={self.cell_bits}")
        if not isinstance(self.flip_columns, bool):
            raise TypeError("flip_columns must be a bool")
        _check_choice("input_encoding", self.input_encoding, _INPUT_ENCODINGS)
        _check_int_field("accumulator_bits", self.accumulator_bits, 2, 64)
        _check_rate("cell_noise_std", self.cell_noise_std)
        _check_rate("adc_noise_std", self.adc_noise_std)
        _check_rate("stuck_at_0_rate", self.stuck_at_0_rate, 1.0)
        _check_rate("stuck_at_1_rate", self.stuck_at_1_rate, 1.0)
        if self.stuck_at_0_rate + self.stuck_at_1_rate > 1.0:
            raise ValueError(
                f"stuck_at_0_rate + stuck_at_1_rate must be <= 1, got {self.stuck_at_0_rate + self.stuck_at_1_rate}"
            )
        if self.slice_placement == "columns" and self.slices > self.cols:
            raise ValueError(
                f"cols must be >= ceil(weight_bits / cell_bits) = {self.slices} with "
                f"slice_placement='columns', got cols={self.cols}"
            )

    # Derived quantities (spec symbols in brackets).
    @property
    def levels(self) -> int:
        """Largest cell level [L = 2**cell_bits - 1]."""
        return (1 << self.cell_bits) - 1

    @property
    def slices(self) -> int:
        """Weight slices per weight [s = ceil(b_w / b_c)]."""
        return -(-self.weight_bits // self.cell_bits)

    @property
    def weights_per_crossbar(self) -> int:
        """Weight columns held by one crossbar [n_w]."""
        return self.cols // self.slices if self.slice_placement == "columns" else self.cols

    def crossbars(self, k: int, n: int) -> int:
        """Crossbars holding a K x N weight at ``weight_bits``: ceil(K/rows) row blocks, each
        ceil(N/n_w) crossbars wide, once per weight slice when slices sit in separate arrays, and
        once per set (differential encoding)."""
        per_slice = self.slices if self.slice_placement == "arrays" else 1
        return -(-k // self.rows) * -(-n // self.weights_per_crossbar) * per_slice * self.sets

    @property
    def sets(self) -> int:
        """Crossbar sets per weight matrix (2 for differential encoding)."""
        return 2 if self.weight_encoding == "differential" else 1

    @property
    def max_count(self) -> int:
        """Largest noise-free column count a conversion can see [I_max]."""
        full = self.rows * self.levels
        return full // 2 if self.flip_columns else full

    @property
    def has_randomness(self) -> bool:
        """True when any noise or fault rate is non-zero (a generator is then required)."""
        return any(v > 0 for v in (self.cell_noise_std, self.adc_noise_std, self.stuck_at_0_rate, self.stuck_at_1_rate))

    @property
    def can_clip(self) -> bool:
        """True when the ADC or randomness can make the result differ from ``x @ w``."""
        if self.has_randomness:
            return True
        if self.adc_mode == "exact":
            return False
        # saturate and truncate are both lossless iff the count fits in adc_bits.
        return self.max_count > (1 << self.adc_bits) - 1

    @property
    def weight_range(self) -> tuple[int, int]:
        """Allowed weight codes (inclusive): signed b_w-bit integers."""
        half = 1 << (self.weight_bits - 1)
        return -half, half - 1

    @property
    def input_range(self) -> tuple[int, int]:
        """Allowed input codes (inclusive) for the input encoding."""
        if self.input_encoding == "unsigned":
            return 0, (1 << self.input_bits) - 1
        half = 1 << (self.input_bits - 1)
        return -half, half - 1


ATLEUS_RERAM = CrossbarConfig()
"""Atleus ReRAM tier (atleus.md §2.2): 128x128 crossbars, 2-bit cells, 1-bit DAC, 8-bit
saturating ADC, offset encoding with ISAAC column flipping, 8-bit weights and inputs."""

HASTILY_SRAM = CrossbarConfig(
    rows=64,
    cols=64,
    cell_bits=1,
    slice_placement="arrays",
    weight_bits=8,
    input_bits=8,
    adc_bits=6,
    adc_mode="saturate",
    weight_encoding="twos_complement",
    flip_columns=False,
    input_encoding="twos_complement",
    accumulator_bits=32,
)
"""HASTILY UCLM in compute mode (hastily.md §2.1): eight 64x64 8T-SRAM arrays, one weight
bit each, 6-bit saturating ADC, two's-complement weights and inputs."""


# --------------------------------------------------------------------------- checks
def check_codes(t, name: str, lo: int, hi: int) -> None:
    """``t`` must be an integer tensor with every code in [lo, hi] (else ``TypeError`` / ``ValueError``)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype == torch.bool or t.is_floating_point() or t.is_complex():
        raise TypeError(f"{name} must have an integer dtype, got {t.dtype}")
    if t.numel() and (int(t.min()) < lo or int(t.max()) > hi):
        raise ValueError(f"{name} codes must lie in [{lo}, {hi}], got [{int(t.min())}, {int(t.max())}]")


# ----------------------------------------------------------------- bit decomposition
def slice_significance(config: CrossbarConfig) -> torch.Tensor:
    """Signed significance sigma_m * 2**(b_c*m) of each weight slice m, int64 (s,)."""
    sig = [1 << (config.cell_bits * m) for m in range(config.slices)]
    if config.weight_encoding == "twos_complement":
        sig[-1] = -sig[-1]
    return torch.tensor(sig, dtype=torch.int64)


def input_significance(config: CrossbarConfig) -> torch.Tensor:
    """Signed significance sigma_t * 2**t of each input bit t, int64 (b_x,)."""
    sig = [1 << t for t in range(config.input_bits)]
    if config.input_encoding == "twos_complement":
        sig[-1] = -sig[-1]
    return torch.tensor(sig, dtype=torch.int64)


def weight_slices(w_int: torch.Tensor, config: CrossbarConfig) -> torch.Tensor:
    """Cell levels g_m of every weight: int64 ``(sets, *w.shape, s)`` (spec §2.3 step 2).

    ``sum_m slice_significance[m] * g[..., m]`` gives the encoded value u (set 0 minus set 1
    for differential; u - 2**(b_w-1) for offset), i.e. w itself.
    """
    w = w_int.to(torch.int64)
    if config.weight_encoding == "offset":
        u = (w + (1 << (config.weight_bits - 1)))[None]
    elif config.weight_encoding == "differential":
        u = torch.stack((w.clamp(min=0), (-w).clamp(min=0)))
    else:
        u = torch.remainder(w, 1 << config.weight_bits)[None]
    shifts = torch.arange(config.slices, device=w.device, dtype=torch.int64) * config.cell_bits
    return (u[..., None] >> shifts) & config.levels


def input_planes(x_int: torch.Tensor, config: CrossbarConfig) -> torch.Tensor:
    """Input bit planes x_t: int64 ``(*x.shape, b_x)`` of x mod 2**b_x (spec §2.3 step 5)."""
    u = torch.remainder(x_int.to(torch.int64), 1 << config.input_bits)
    shifts = torch.arange(config.input_bits, device=u.device, dtype=torch.int64)
    return (u[..., None] >> shifts) & 1


def adc_convert(current: torch.Tensor, config: CrossbarConfig, *, integral: bool = False) -> torch.Tensor:
    """ADC output code v (float tensor of integers) for analog counts I (spec §2.3 step 7).

    ``integral=True`` skips the round-half-even for counts already known to be integers
    (noise-free sums), which changes nothing but time.
    """
    top = float((1 << config.adc_bits) - 1)
    v = current if integral else torch.round(current)
    if config.adc_mode == "exact":
        return v.clamp(min=0.0)
    if config.adc_mode == "saturate":
        return v.clamp(0.0, top)
    step = float(1 << max(0, config.max_count.bit_length() - config.adc_bits))
    return step * torch.floor(current / step).clamp(0.0, top)


# ------------------------------------------------------------------ programming
class ProgrammedWeights(NamedTuple):
    """Weights as stored in the crossbars, padded to whole row blocks and crossbars."""

    levels: torch.Tensor
    """Stored cell values ``(sets, P, rows, N_pad, s)``: float64, integers unless
    cell noise is on."""
    flipped: torch.Tensor
    """Bool ``(sets, P, N_pad, s)``: the column stores L - g (undone digitally)."""


def _physical_to_canonical(t: torch.Tensor, n_pad: int, config: CrossbarConfig) -> torch.Tensor:
    """View per-physical-column draws (..., N_pad*s) as (..., N_pad, s).

    Physical order: ``"columns"`` puts the slices of weight j in adjacent columns
    (index j*s + m); ``"arrays"`` puts slice m in array m (index m*N_pad + j).
    """
    s = config.slices
    if config.slice_placement == "columns":
        return t.unflatten(-1, (n_pad, s))
    return t.unflatten(-1, (s, n_pad)).transpose(-1, -2)


def _padded_sizes(k: int, n: int, config: CrossbarConfig) -> tuple[int, int]:
    nw = config.weights_per_crossbar
    blocks, n_pad = -(-k // config.rows), -(-n // nw) * nw
    check_padded(
        f"a {k}x{n} weight on {config.rows}x{config.cols} crossbars",
        config.sets * blocks * config.rows * n_pad * config.slices,
        "use crossbars no larger than the weight needs",
    )
    return blocks, n_pad


def _draw(sample, shape, generator: torch.Generator, device) -> torch.Tensor:
    """float64 draws made on the generator's device, then moved: a seeded chip instance is the same
    whichever device computes with it."""
    return sample(shape, generator=generator, dtype=torch.float64, device=generator.device).to(device)


def program_weights(
    w_int: torch.Tensor, config: CrossbarConfig, *, generator: torch.Generator | None = None
) -> ProgrammedWeights:
    """Encode, slice, flip and (optionally) perturb weights as the crossbars store them.

    Spec §2.3 steps 1-4 and the cell part of step 6. Draws, only if the rate is non-zero and
    in this order: fault uniforms, then cell normals, each shaped ``(sets, P, rows, N_pad*s)``
    in physical column order.
    """
    check_type("config", config, CrossbarConfig)
    check_codes(w_int, "w_int", *config.weight_range)
    if w_int.dim() != 2:
        raise ValueError(f"w_int must be 2-D (K, N), got shape {tuple(w_int.shape)}")
    k, n = w_int.shape
    n_blocks, n_pad = _padded_sizes(k, n, config)
    w = torch.nn.functional.pad(w_int.to(torch.int64), (0, n_pad - n, 0, n_blocks * config.rows - k))
    g = weight_slices(w, config).unflatten(1, (n_blocks, config.rows))  # (sets, P, rows, N_pad, s)
    big_l = config.levels
    if config.flip_columns:
        flipped = 2 * g.sum(dim=2) > config.rows * big_l
        g = torch.where(flipped[:, :, None], big_l - g, g)
    else:
        flipped = torch.zeros(g.shape[:2] + g.shape[3:], dtype=torch.bool, device=g.device)
    levels = g.to(torch.float64)
    phys_shape = (config.sets, n_blocks, config.rows, n_pad * config.slices)
    if config.stuck_at_0_rate > 0 or config.stuck_at_1_rate > 0:
        nu = _physical_to_canonical(_draw(torch.rand, phys_shape, generator, w.device), n_pad, config)
        p0, p1 = config.stuck_at_0_rate, config.stuck_at_1_rate
        levels = torch.where(nu < p0, 0.0, torch.where(nu < p0 + p1, float(big_l), levels))
    if config.cell_noise_std > 0:
        z = _physical_to_canonical(_draw(torch.randn, phys_shape, generator, w.device), n_pad, config)
        levels = levels + config.cell_noise_std * big_l * z
    return ProgrammedWeights(levels, flipped)


# ---------------------------------------------------------------------- matmul
def wrap_accumulator(y: torch.Tensor, bits: int) -> torch.Tensor:
    """Two's-complement wrap of int64 values to ``bits``."""
    if bits >= 64:
        return y
    half = 1 << (bits - 1)
    return torch.remainder(y + half, 1 << bits) - half


def _exact_product(x: torch.Tensor, w: torch.Tensor, term: int, out_dtype=torch.int64) -> torch.Tensor:
    """Exact ``x @ w`` (batched; integer-valued operands of any dtype) as ``out_dtype`` (None: the dtype it
    was computed in), every |x_i·w_i| at most ``term``. float32 BLAS is exact while every partial sum
    stays below 2**24 in any summation order (and float32 products are not rounded to TF32): a longer K
    runs as float32 products over chunks of K that each stay below it, added in float64, while a chunk
    still holds enough rows to outweigh its addition; then float64 BLAS below 2**53, else int64."""
    k = x.shape[-1]
    full_fp32 = x.device.type == "cpu" or torch.get_float32_matmul_precision() == "highest"
    chunk = ((1 << 24) - 1) // max(term, 1)  # rows per float32 product whose sums are all exact
    if full_fp32 and (chunk >= k or (chunk >= _MIN_CHUNK_ROWS and k * term < 1 << 53)):
        total = None
        for lo in range(0, k, chunk):
            part = torch.matmul(x[..., lo : lo + chunk].to(torch.float32), w[..., lo : lo + chunk, :].to(torch.float32))
            total = part if total is None else total.to(torch.float64).add_(part)  # integers: exact
    elif k * term < 1 << 53:
        total = torch.matmul(x.to(torch.float64), w.to(torch.float64))
    else:
        total = torch.matmul(x.to(torch.int64), w.to(torch.int64))
    return total if out_dtype is None else total.to(out_dtype)


def _term_bound(config: CrossbarConfig) -> int:
    """Largest |product| of one input code and one weight code."""
    x_max = (1 << config.input_bits) - 1 if config.input_encoding == "unsigned" else 1 << (config.input_bits - 1)
    return x_max * (1 << (config.weight_bits - 1))


@functools.lru_cache(maxsize=1024)
def _can_wrap(k: int, config: CrossbarConfig) -> bool:
    """Whether the noise-free digital sum over the row blocks of a K-row product can reach the
    accumulator's wrap: every converted count (un-flipped too) lies in [0, rows·L], weighted by the input
    bits' and slices' significances, per set, plus the offset encoding's digital correction."""
    sig_t = sum(abs(v) for v in input_significance(config).tolist())
    sig_m = sum(abs(v) for v in slice_significance(config).tolist())
    per_block = config.sets * sig_t * sig_m * config.rows * config.levels
    if config.weight_encoding == "offset":
        per_block += (1 << (config.weight_bits - 1)) * config.rows * sig_t
    return -(-k // config.rows) * per_block >= 1 << (config.accumulator_bits - 1)


def wrap_sum(total: torch.Tensor, k: int, config: CrossbarConfig) -> torch.Tensor:
    """The noise-free digital sum ``total`` of a K-row product's blocks wrapped to the accumulator, as
    :func:`wrap_accumulator`; ``total`` itself where no such sum can reach the wrap."""
    return wrap_accumulator(total, config.accumulator_bits) if _can_wrap(k, config) else total


def _exact_blocks(x2: torch.Tensor, w: torch.Tensor, config: CrossbarConfig, n_blocks: int, dtype=torch.int64):
    """Noise-free, non-clipping per-block partials (M, P, N): each block's exact product, all in one
    batched product (many small blocks, e.g. an attention's stacked operands)."""
    k = w.shape[0]
    pad = n_blocks * config.rows - k
    xb = torch.nn.functional.pad(x2, (0, pad)).unflatten(-1, (n_blocks, config.rows)).transpose(0, 1)
    wb = torch.nn.functional.pad(w, (0, 0, 0, pad)).unflatten(0, (n_blocks, config.rows))
    return _exact_product(xb, wb, _term_bound(config), dtype).transpose(0, 1)


def _each_exact_block(x2: torch.Tensor, w: torch.Tensor, config: CrossbarConfig, dtype=torch.int64):
    """The same partials one (M, N) product at a time, in increasing p, computed a group of whole blocks
    at a time when asked for (:func:`_block_groups`): one batched product per group, on strided views of
    the operands (no copy); a partial block at the end of K alone. A caller summing them holds one group
    at a time."""
    rows, term = config.rows, _term_bound(config)
    k, n = w.shape
    threads = torch.get_num_threads() if x2.device.type == "cpu" else 1
    p = 0
    for g in _block_groups(k // rows, x2.shape[0] * n, threads):
        xb = x2[:, p * rows : (p + g) * rows].unflatten(-1, (g, rows)).transpose(0, 1)
        wb = w[p * rows : (p + g) * rows].unflatten(0, (g, rows))
        yield from _exact_product(xb, wb, term, dtype).unbind(0)
        p += g
    if k > p * rows:
        yield _exact_product(x2[:, p * rows :], w[p * rows :], term, dtype)


def _block_groups(blocks: int, outputs: int, threads: int) -> list[int]:
    """Sizes of the consecutive groups of ``blocks`` row blocks, of ``outputs`` outputs each, multiplied
    as one batched product each: at most :data:`_GROUP_ELEMENTS` outputs a group, and on the CPU a
    multiple of the ``threads`` torch shares a batched product's entries among (an odd group of 3 or 5 on
    2 threads ran 1.2-1.3x slower than its blocks one at a time, an even one as fast); a block left over
    runs alone, spread over all threads."""
    most = max(1, _GROUP_ELEMENTS // max(1, outputs))
    sizes = []
    while blocks:
        g = min(most, blocks)
        g = g - g % threads if g >= threads else 1
        sizes.append(g)
        blocks -= g
    return sizes


def _cannot_clip(x2: torch.Tensor, w: torch.Tensor | None, config: CrossbarConfig, n_blocks: int) -> bool:
    """True when no conversion of this product can saturate: noise-free, a saturating (or exact) ADC, and
    either no stored column of the weight ``w`` sums above the top code (when its column sums are kept:
    :func:`_column_sums`; ``w=None``: a weight never kept) or every row block has at most
    ``(2**adc_bits - 1) / L`` rows whose input is non-zero for some row of ``x2`` (a column count is at
    most those rows times L; a zero input drives no bit plane). Then each block's partial is its exact
    product. A truncating ADC's step is fixed by the full array, so it never qualifies."""
    if _too_few_rows_to_clip(x2.shape[-1], config) or (w is not None and weights_cannot_clip(w, config, n_blocks)):
        return True
    if not _ideal_conversions(config):
        return False
    live = torch.nn.functional.pad((x2 != 0).any(0), (0, n_blocks * config.rows - x2.shape[-1]))
    return _counts_fit(int(live.view(n_blocks, config.rows).sum(-1).max()), config)


def weights_cannot_clip(w: torch.Tensor, config: CrossbarConfig, n_blocks: int | None = None) -> bool:
    """Whether no conversion of a product with the weight codes ``w`` (K, N) can clip, whatever the input
    codes: it has too few rows to fill the ADC, or no stored column sums above the top code (known once
    the column sums are kept with ``w``, :func:`_column_sums`)."""
    if not config.can_clip or _too_few_rows_to_clip(w.shape[0], config):
        return True
    if not _ideal_conversions(config):
        return False
    n_blocks = n_blocks or _padded_sizes(*w.shape, config)[0]
    known = _column_sums(w, config, n_blocks, peek=True)
    return known is not None and not known[1].numel()


def _ideal_conversions(config: CrossbarConfig) -> bool:
    """Noise-free, with a saturating (or exact) ADC: a conversion then differs from its count only by clipping."""
    return not config.has_randomness and config.adc_mode in ("saturate", "exact")


def _counts_fit(rows: int, config: CrossbarConfig) -> bool:
    """Whether a count over ``rows`` driven rows (at most rows·L) stays within the ADC's top code."""
    return rows * config.levels <= (1 << config.adc_bits) - 1


def _too_few_rows_to_clip(k: int, config: CrossbarConfig) -> bool:
    """Whether no conversion of a K-row product can clip, whatever its codes: ideal conversions whose counts
    (over at most one block's rows) fit the ADC."""
    return _ideal_conversions(config) and _counts_fit(min(k, config.rows), config)


def _column_sums(w: torch.Tensor, config: CrossbarConfig, n_blocks: int, *, peek: bool = False) -> tuple | None:
    """Stored level sum of every crossbar column, int64 ``(sets, P, N_pad * s)`` (the largest count a
    conversion of that column can see), and the row blocks with a column above the ADC's top code, which
    are the only ones whose conversions can clip. Kept with ``w``: None the first time it is seen (and,
    with ``peek``, until kept)."""

    def make():
        rows, n_pad = config.rows, _padded_sizes(*w.shape, config)[1]
        step = max(1, _CHUNK_ELEMENTS // (config.sets * rows * n_pad * config.slices))  # blocks per pass
        sums = []
        for p in range(0, n_blocks, step):  # a few row blocks at a time keep the sliced levels small
            levels = program_weights(
                w[p * rows : (p + step) * rows].to(torch.int64), config
            ).levels  # (S, P', rows, N_pad, s)
            sums.append(levels.sum(2).flatten(-2))
        sums = torch.cat(sums, 1).round().to(torch.int64)
        return sums, (sums > (1 << config.adc_bits) - 1).any(-1).any(0).nonzero().flatten()

    return derived(w, "column sums", config, make, peek=peek)


# _SPREAD[u]: bit t of the byte u moved to the lowest bit of byte t of an int64
_SPREAD = torch.tensor([sum(((u >> t) & 1) << (8 * t) for t in range(8)) for u in range(256)], dtype=torch.int64)


def _bit_counts(u: torch.Tensor, bits: int) -> torch.Tensor:
    """How many of the codes ``u`` (..., rows) in [0, 2**bits) have bit t set, int64 (..., bits).

    Up to 8 bits over at most 255 rows, one pass: each code becomes an int64 holding its bit t in byte
    t, and one integer sum counts all bits at once (a byte never carries into the next)."""
    rows = u.shape[-1]
    compiled = kernels.bit_counts(u, bits)  # the same counts in one compiled pass, on the CPU
    if compiled is not None:
        return compiled
    if bits <= 8 and rows <= 255:
        spread = _SPREAD.to(u.device)
        packed = spread.index_select(0, u.flatten().to(torch.int32)).view(u.shape).sum(-1, keepdim=True)
        return (packed >> torch.arange(0, 8 * bits, 8, device=u.device)) & 255
    return torch.stack([((u >> t) & 1).sum(-1) for t in range(bits)], -1)


def _low_bits(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Integer codes ``x`` (any dtype, |x| < 2**15) as integers whose low ``bits`` bits are the codes' two's
    complement bits (only those are read): uint8 up to 8 bits (narrow, so that the bit counts touch less
    memory), else int32. Through int16, which holds every code exactly and whose cast to uint8 keeps the low
    byte (a negative float's cast to uint8 is left undefined by C, and so by torch's kernels)."""
    return x.to(torch.int16).to(torch.uint8) if bits <= 8 else x.to(torch.int32)


def _correct_clipping(target, x2: torch.Tensor, w: torch.Tensor, config: CrossbarConfig, n_blocks: int):
    """Noise-free saturating conversions: ``target(p)`` is the (M, N) tensor holding the exact product of
    row block p (its own, or a sum it is part of); add in place what the conversions that clip take away.

    A conversion of input bit t of row m in block p on column c counts at most min(S_c, n_t·L), S_c
    the column's stored level sum and n_t the block's rows whose input bit t is set; only where both
    exceed the top code 2**adc_bits − 1 can it clip. Blocks without such a column are skipped when the
    column sums are known (:func:`_column_sums`). The candidates' counts are computed from the block's
    programmed levels, and a count C above the top changes the digital value by −(C − top), or by
    +(C − top) on a flipped column (which stores L − g and is un-flipped as L·n_t − v)."""
    k, n = w.shape
    rows, top, b_x = config.rows, (1 << config.adc_bits) - 1, config.input_bits
    known = _column_sums(w, config, n_blocks)
    sums, hot = (None, torch.arange(n_blocks, device=x2.device)) if known is None else known
    if not hot.numel():
        return
    sig_t = input_significance(config).to(device=x2.device, dtype=torch.float64)
    sig_m = slice_significance(config).to(device=x2.device, dtype=torch.float64)
    u = x2 if k == n_blocks * rows else torch.nn.functional.pad(x2, (0, n_blocks * rows - k))
    u = u.reshape(-1, n_blocks, rows)
    if hot.numel() < n_blocks:  # (M, H, rows)
        u = u[:, hot]
    u = _low_bits(u, b_x)
    candidates = _bit_counts(u, b_x) * config.levels > top  # (M, H, b_x)
    for h in candidates.any(-1).any(0).nonzero().flatten().tolist():
        p = int(hot[h])
        prog = program_weights(w[p * rows : (p + 1) * rows].to(torch.int64), config)  # codes of any dtype
        levels = prog.levels[:, 0].flatten(-2)  # (S, rows, C)
        col_sums = levels.sum(1) if sums is None else sums[:, p]  # (S, C)
        cols = (col_sums > top).any(0).nonzero().flatten()
        if not cols.numel():
            continue
        m_idx, t_idx = candidates[:, h].nonzero(as_tuple=True)
        planes = ((u[m_idx, h].to(torch.int64) >> t_idx[:, None]) & 1).to(torch.float64)  # (R, rows)
        excess = (torch.matmul(planes, levels[..., cols]) - top).clamp(min=0)  # (S, R, C')
        flipped = prog.flipped[:, 0].flatten(-2)[:, None, cols]
        delta = torch.where(flipped, excess, -excess) * sig_t[t_idx][:, None]
        per_cell = torch.zeros(excess.shape[:-1] + (levels.shape[-1],), dtype=torch.float64, device=x2.device)
        per_cell[..., cols] = delta
        y = torch.matmul(per_cell.unflatten(-1, (-1, config.slices)), sig_m)  # (S, R, N_pad)
        y = (y[0] - y[1] if config.sets == 2 else y[0])[:, :n]
        out = target(p)
        out.index_add_(0, m_idx, y.round().to(out.dtype))


def _clipping_blocks(x2, prog: ProgrammedWeights, config: CrossbarConfig, adc_noise):
    """Per-block partials (M, P, N_pad) through bit planes, ADC, un-flip and shift-and-add."""
    sets, n_blocks, rows, n_pad, s = prog.levels.shape
    m_total, b_x = x2.shape[0], config.input_bits
    cols = n_pad * s
    dev = x2.device
    # Counts, converted codes and their input-bit sums are integers below
    # 2**b_x * rows * L when noise-free: float32 is exact below 2**24, else use float64.
    exact32 = not config.has_randomness and (rows * config.levels << b_x) < (1 << 24)
    fdtype = torch.float32 if exact32 else torch.float64
    g = prog.levels.reshape(sets, n_blocks, rows, cols).to(fdtype)  # (S, P, rows, C)
    flipped = prog.flipped.reshape(sets, n_blocks, 1, 1, cols)
    sig_t = input_significance(config).to(device=dev, dtype=fdtype)
    sig_m = slice_significance(config).to(device=dev, dtype=torch.float64)
    xp = torch.nn.functional.pad(x2, (0, n_blocks * rows - x2.shape[-1]))
    xp = xp.unflatten(-1, (n_blocks, rows)).transpose(0, 1)  # (P, M, rows)
    planes_all = input_planes(xp, config).transpose(-1, -2).to(fdtype)  # (P, M, b_x, rows)
    out = torch.empty((n_blocks, m_total, n_pad), dtype=torch.int64, device=dev)
    chunk = max(1, _CHUNK_ELEMENTS // (sets * n_blocks * b_x * cols))
    for lo in range(0, m_total, chunk):
        hi = min(m_total, lo + chunk)
        planes = planes_all[:, lo:hi]
        # Analog column sums, one per conversion: (S, P, m, b_x, C).
        counts = torch.matmul(planes.flatten(1, 2), g).unflatten(2, (hi - lo, b_x))
        if adc_noise is not None:
            counts = counts + config.adc_noise_std * adc_noise[:, :, lo:hi]
        v = adc_convert(counts, config, integral=adc_noise is None and exact32)
        if config.flip_columns:
            popcount = planes.sum(-1)[None, :, :, :, None]  # (1, P, m, b_x, 1)
            v = torch.where(flipped, config.levels * popcount - v, v)
        # Shift-and-add: input bits (exact in fdtype), then slices in float64 (exact < 2**53).
        y = torch.matmul(v.transpose(-1, -2), sig_t)  # (S, P, m, C)
        y = torch.matmul(y.to(torch.float64).unflatten(-1, (n_pad, s)), sig_m)  # (S, P, m, N_pad)
        y = y[0] - y[1] if sets == 2 else y[0]
        y = y.round().to(torch.int64)
        if config.weight_encoding == "offset":
            y = y - (1 << (config.weight_bits - 1)) * xp[:, lo:hi].sum(-1, keepdim=True)
        out[:, lo:hi] = y
    return out.transpose(0, 1)


def crossbar_matmul(
    x_int: torch.Tensor,
    w_int: torch.Tensor,
    config: CrossbarConfig,
    *,
    generator: torch.Generator | None = None,
    partials: bool = False,
    dtype: torch.dtype = torch.int64,
) -> torch.Tensor:
    """Integer product ``x_int @ w_int`` as the crossbars compute it (atleus.md §2.3).

    Args:
        x_int: integer tensor ``(..., K)`` within ``config.input_range``.
        w_int: integer tensor ``(K, N)`` within ``config.weight_range``.
        config: the crossbar arithmetic.
        generator: required when ``config`` has noise or faults; draws happen in the spec's
            order (fault uniforms, cell normals, ADC normals ``(sets, ..., P, b_x, N_pad*s)``).
        partials: return the per-row-block results ``(..., P, N)`` (not wrapped) instead of
            their wrapped digital sum.
        dtype: ``torch.int64`` or ``torch.float64`` (the same integers, exact: per-block results stay
            below 2**53 for codes of at most 16 bits, and a wrapped sum fits ``accumulator_bits``), which
            spares a conversion when the result feeds float arithmetic.

    Returns:
        integer-valued tensor ``(..., N)`` (or ``(..., P, N)``) of ``dtype`` on ``x_int``'s device.
    """
    check_type("config", config, CrossbarConfig)
    check_codes(x_int, "x_int", *config.input_range)
    check_codes(w_int, "w_int", *config.weight_range)
    if w_int.dim() != 2:
        raise ValueError(f"w_int must be 2-D (K, N), got shape {tuple(w_int.shape)}")
    if x_int.dim() < 1 or x_int.shape[-1] != w_int.shape[0]:
        raise ValueError(
            f"x_int's last dimension must equal w_int's K={w_int.shape[0]}, got shape {tuple(x_int.shape)}"
        )
    k, n = w_int.shape
    if k == 0 or n == 0:
        raise ValueError(f"w_int must be non-empty, got shape {(k, n)}")
    if config.has_randomness and generator is None:
        raise ValueError("generator is required when the config enables noise or faults")
    if dtype not in (torch.int64, torch.float64):
        raise ValueError(f"dtype must be torch.int64 or torch.float64, got {dtype}")
    if dtype == torch.float64 and not partials and config.accumulator_bits > 53:
        raise ValueError(f"a sum wrapped to accumulator_bits={config.accumulator_bits} may not fit float64 exactly")
    batch = x_int.shape[:-1]
    out = unchecked_matmul(x_int.reshape(-1, k), w_int, config, generator=generator, partials=partials, dtype=dtype)
    return out.reshape(*batch, *out.shape[1:])


def unchecked_matmul(
    x2: torch.Tensor,
    w_int: torch.Tensor,
    config: CrossbarConfig,
    *,
    generator: torch.Generator | None = None,
    partials: bool = False,
    dtype: torch.dtype = torch.int64,
    exact: bool | None = None,
) -> torch.Tensor:
    """:func:`crossbar_matmul` without its checks, for callers that made the codes themselves: ``x2``
    (M, K) holds integer codes in any dtype (float32 included), ``w_int`` (K, N) integer codes; ``exact``:
    whether no conversion can clip, if known. Returns (M, N), or (M, P, N) with ``partials``, of ``dtype``
    (None: as the exact GEMMs leave them, float32 where it holds every value; float64 where any conversion
    may clip)."""
    k, n = w_int.shape
    n_blocks, n_pad = _padded_sizes(k, n, config)
    if exact is None:
        exact = not config.can_clip or _cannot_clip(x2, w_int, config, n_blocks)
    if dtype is None and not exact:
        dtype = torch.float64  # corrected or converted values may leave float32's exact range
    if exact or (not config.has_randomness and config.adc_mode == "saturate"):
        w = gemm_operand(w_int)
        wraps = not partials and _can_wrap(k, config)  # partials are never wrapped
        if partials:
            out = _exact_blocks(x2, w, config, n_blocks, dtype)
        else:  # the blocks' integer sum is the whole product: one GEMM
            out = _exact_product(x2, w, _term_bound(config), torch.int64 if wraps else dtype)
        if not exact:
            _correct_clipping((lambda p: out[:, p]) if partials else (lambda p: out), x2, w_int, config, n_blocks)
        if not wraps:
            return out
        out = wrap_accumulator(out, config.accumulator_bits)  # int64
        return out if dtype is None else out.to(dtype)
    x2 = x2.to(torch.int64)
    prog = program_weights(w_int, config, generator=generator)
    adc_noise = None
    if config.adc_noise_std > 0:
        shape = (config.sets, x2.shape[0], n_blocks, config.input_bits, n_pad * config.slices)
        z = _draw(torch.randn, shape, generator, x2.device)
        adc_noise = _physical_to_canonical(z, n_pad, config).flatten(-2).transpose(1, 2)
    blocks = _clipping_blocks(x2, prog, config, adc_noise)[..., :n]
    if partials:
        return blocks.to(dtype)
    return wrap_accumulator(blocks.sum(dim=1), config.accumulator_bits).to(dtype)


def gemm_operand(w_int: torch.Tensor) -> torch.Tensor:
    """The weight codes as the exact GEMMs take them: a weight that comes back keeps a float32 copy (exact:
    codes have at most 16 bits)."""
    w = derived(w_int, "float32", None, lambda: w_int.to(torch.float32))
    return w_int if w is None else w


def unchecked_blocks(
    x2: torch.Tensor, w_int: torch.Tensor, config: CrossbarConfig, *, generator=None, dtype=torch.int64
):
    """The per-row-block results of :func:`unchecked_matmul`, one (M, N) tensor of ``dtype`` per block in
    increasing p (None: float32 where no conversion can clip, float64 otherwise). Where none can clip,
    each block's product is computed only when asked for, so a caller summing them never holds them all."""
    n_blocks = _padded_sizes(*w_int.shape, config)[0]
    if not config.can_clip or _cannot_clip(x2, w_int, config, n_blocks):
        return _each_exact_block(x2, gemm_operand(w_int), config, dtype)
    dtype = dtype or torch.float64
    return unchecked_matmul(x2, w_int, config, generator=generator, partials=True, dtype=dtype, exact=False).unbind(1)


def batched_blocks(a3: torch.Tensor, b3: torch.Tensor, config: CrossbarConfig, *, dtype=torch.int64) -> torch.Tensor:
    """Per-row-block partials (G, M, P, N) of G independent crossbar products ``a3[g] @ b3[g]`` (a3 (G, M, K),
    b3 (G, K, N) codes), each in arrays of its own. Where no conversion can clip whatever the codes (at most
    min(K, rows) driven rows), each block's exact product, batched; otherwise each entry's K is padded to
    whole row blocks and the entries' row blocks are stacked as one checked crossbar product, so each
    conversion sees one row block of one entry, as in separate arrays."""
    g, m, k = a3.shape
    blocks = -(-k // config.rows)
    pad = blocks * config.rows - k
    if _too_few_rows_to_clip(k, config):
        if blocks == 1:  # e.g. a depthwise convolution's few rows: no padding to a whole array
            a4, b4 = a3.unsqueeze(1), b3.unsqueeze(1)
        else:
            a4 = torch.nn.functional.pad(a3, (0, pad)).unflatten(-1, (blocks, config.rows)).transpose(1, 2)
            b4 = torch.nn.functional.pad(b3, (0, 0, 0, pad)).unflatten(1, (blocks, config.rows))
        return _exact_product(a4, b4, _term_bound(config), dtype).transpose(1, 2)  # (G, P, M, N) -> (G, M, P, N)
    stacked_a = torch.nn.functional.pad(a3, (0, pad)).transpose(0, 1).reshape(m, g * blocks * config.rows)
    stacked_b = torch.nn.functional.pad(b3, (0, 0, 0, pad)).reshape(g * blocks * config.rows, b3.shape[-1])
    parts = crossbar_matmul(stacked_a, stacked_b, config, partials=True, dtype=dtype)  # (M, G*P, N)
    return parts.view(m, g, blocks, -1).transpose(0, 1)


def unchecked_batched(a3: torch.Tensor, b3: torch.Tensor, config: CrossbarConfig, *, dtype=torch.int64) -> torch.Tensor:
    """G independent crossbar products ``a3[g] @ b3[g]`` (a3 (G, M, K), b3 (G, K, N) integer codes of any
    dtype, unchecked; noise-free), each in arrays of its own, summed and wrapped per entry: (G, M, N) of
    ``dtype``. One batched exact GEMM; where a conversion may clip, the entries' row blocks are stacked
    as one tall weight (each conversion sees one row block of one entry) to find and correct them."""
    g, m, k = a3.shape
    blocks = -(-k // config.rows)
    pad = blocks * config.rows - k
    exact = not config.can_clip or _too_few_rows_to_clip(k, config)
    if not exact:
        # the rows each entry's blocks drive, in the stacked order, as one input row: enough to rule clipping out
        live = torch.nn.functional.pad((a3 != 0).any(1), (0, pad)).view(1, -1)
        exact = _cannot_clip(live, None, config, g * blocks)
    if exact:
        return wrap_sum(_exact_product(a3, b3, _term_bound(config), None), k, config).to(dtype)
    stacked_a = torch.nn.functional.pad(a3, (0, pad)).transpose(0, 1).reshape(m, g * blocks * config.rows)
    stacked_b = torch.nn.functional.pad(b3, (0, 0, 0, pad)).reshape(g * blocks * config.rows, b3.shape[-1])
    if config.has_randomness or config.adc_mode != "saturate":
        parts = unchecked_matmul(stacked_a, stacked_b, config, partials=True, exact=False)  # (M, G*P, N)
        out = parts.view(m, g, blocks, -1).sum(2).transpose(0, 1)
    else:
        out = _exact_product(a3, b3, _term_bound(config), torch.float64)
        _correct_clipping(lambda p: out[p // blocks], stacked_a, stacked_b, config, g * blocks)
    return wrap_sum(out, k, config).to(dtype)
