"""SoftEx softmax: the BF16 online-softmax datapath of the public RTL, bit-exact, vectorised over rows.

Spec: ``docs/hardware/softex.md`` section 3 (RTL ``rtl/softex_datapath.sv``, ``rtl/softex_fp_add_rec.sv``,
``rtl/accumulator/softex_acc_datapath.sv``, ``rtl/accumulator/softex_acc_den_inverter.sv``). GELU lives in
:mod:`numerics.softex_gelu` and is re-exported here.

A row is streamed in beats of ``lanes`` elements. Pass 1 keeps a running max ``M`` (updated once per beat)
and an FP32 denominator ``D``; pass 2 recomputes each exponential and multiplies it by ``bf16(1/D)``.

How the kernel stays fast without changing a bit: the running max after beat k is the prefix max of the
beat maxima, so every per-element quantity of pass 1 (``bf16(x - M_k)``, ``expp``, the adder tree) is
computed for all beats at once; only the FP32 recurrence ``D = fp32(fp32(D F_k) + s_k)`` loops over beats,
on one value per row.

BF16 arithmetic is torch bfloat16 arithmetic: torch evaluates a bfloat16 sub or mul in FP32 and rounds
the result to nearest even, which is ``bf16(v)`` of the exact value (spec 1: FP32 holds BF16 products
exactly and double rounding of a sum is innocuous). ``tests/numerics/test_softex.py`` checks this against
:func:`numerics.formats.round_to_bfloat16` on every BF16 code, and the kernel against a scalar reference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from numerics import kernels
from numerics.expp import expp, expp_table
from numerics.formats import bits_to_fp32, fma_f32, fp32_to_bits, require_bfloat16, round_to_bfloat16
from numerics.formats import flush_subnormals as _flush
from numerics.softex_gelu import GeluCoefficients, gelu, gelu_datapath

__all__ = [
    "softmax",
    "gelu",
    "gelu_datapath",
    "GeluCoefficients",
    "SoftmaxState",
    "accumulate",
    "finalize",
    "normalize",
    "fma32",
    "reciprocal_seed",
    "reciprocal",
    "CastCtrl",
    "int_to_bf16",
    "bf16_to_int",
    "softmax_int8",
    "LANES_MAX",
    "PARTIALS",
]

LANES_MAX = 64
"""Largest lane count V accepted (spec 3: 8 on RTL master, 16 on the gelu branch)."""
PARTIALS = 4
"""Interleaved partial sums of ``accumulators=4``: the FP32 FMA's pipeline depth (RTL
``softex_acc_datapath.sv``, 4 stages)."""

_NEG_INF = float("-inf")
_BLOCK = 1 << 21  # elements per block of rows: the intermediates of a block stay in cache (bench/softmax.py)


# --------------------------------------------------------------------------- argument checks


def check_lanes(lanes) -> int:
    """``lanes`` after checking it is an integer in [1, LANES_MAX] (the one lanes rule)."""
    if isinstance(lanes, bool) or not isinstance(lanes, int) or not 1 <= lanes <= LANES_MAX:
        raise ValueError(f"lanes must be an integer in [1, {LANES_MAX}]; got {lanes!r}")
    return lanes


def check_accumulators(accumulators) -> int:
    """``accumulators`` after checking it is 1 or PARTIALS."""
    if isinstance(accumulators, bool) or accumulators not in (1, PARTIALS):
        raise ValueError(f"accumulators must be 1 or {PARTIALS}; got {accumulators!r}")
    return accumulators


def _as_rows(x: torch.Tensor, dim: int) -> torch.Tensor:
    """(rows, L) view of ``x`` with ``dim`` last (a copy only when needed)."""
    if x.dim() == 0:
        raise ValueError("x must have at least one dimension (the softmax axis)")
    if not -x.dim() <= dim < x.dim():
        raise ValueError(f"dim must be in [{-x.dim()}, {x.dim() - 1}]; got {dim}")
    moved = x.movedim(dim, -1)
    return moved.reshape(math.prod(moved.shape[:-1]), moved.shape[-1])


def _from_rows(y: torch.Tensor, x: torch.Tensor, dim: int) -> torch.Tensor:
    shape = list(x.movedim(dim, -1).shape)
    return y.reshape(shape).movedim(-1, dim)


def _beats(rows: torch.Tensor, lanes: int) -> torch.Tensor:
    """(rows, lanes, beats): element i of beat k at [:, i, k], so that per-beat operations run along a
    contiguous last axis. A partial last beat is padded with -Inf, which is exactly a masked lane: it
    never raises the max and its exponential is +0, the value the adder tree sees (spec 3.1)."""
    n, length = rows.shape
    pad = -length % lanes
    if pad:
        rows = torch.cat([rows, rows.new_full((n, pad), _NEG_INF)], dim=1)
    return rows.view(n, -1, lanes).transpose(1, 2).contiguous()


# --------------------------------------------------------------------------- FP32 helpers


fma32 = fma_f32
"""``FMA32(a, b, c)`` of spec 1: :func:`numerics.formats.fma_f32`, shared with FlexiSAGA's PEs."""


def reciprocal_seed(d: torch.Tensor) -> torch.Tensor:
    """Seed X0 ~ 1/D of the denominator inverter (spec 3.3 step 1), float32 in and out.

    With e the exponent field of D and m7 its top 7 mantissa bits: m7 = 0 gives the exact 2^(127-e);
    else n = 127 - m7, exponent field 253 - e and top 7 mantissa bits floor(n floor(n/2) / 64).
    """
    u = fp32_to_bits(d)
    e = (u >> 23) & 0xFF
    m7 = (u >> 16) & 0x7F
    n = 127 - m7
    seed = ((253 - e) << 23) | (((n * (n >> 1)) >> 6) << 16)
    seed = torch.where(m7 == 0, (254 - e) << 23, seed)
    return bits_to_fp32(seed)


def reciprocal(d: torch.Tensor) -> torch.Tensor:
    """FP32 reciprocal X of D >= 1: the seed, then two Newton-Raphson steps t = FMA32(-D, X, 2),
    X = fp32(X t) (spec 3.3 step 2). The accelerator then uses bf16(X), not a correctly rounded 1/D."""
    x = reciprocal_seed(d)
    two = torch.full_like(d, 2.0)
    for _ in range(2):
        x = x * fma32(-d, x, two)
    return x


# --------------------------------------------------------------------------- pass 1


def _beat_terms(beats: torch.Tensor, m_prev: torch.Tensor):
    """Per beat: the running max after it (bf16), whether the beat raised it, its rescale factor F (fp32)
    and its sum s (fp32).

    ``beats`` is (rows, V, nb) as :func:`_beats` makes it; ``m_prev`` the max before the first beat
    (-Inf for a fresh row). F is expp(bf16(M_old - M_new)) when the beat's max is strictly larger, else 1
    (fp32(D 1) = D); with M_old = -Inf it is expp(-Inf) = 0, the spec's first-beat F.
    """
    running = torch.cat([m_prev[:, None], beats.amax(dim=1)], dim=1).cummax(dim=1).values
    before, running = running[:, :-1], running[:, 1:]
    changed = running > before
    factor = torch.where(changed, expp(before - running, dtype=torch.float32), 1.0)
    # Leading all -Inf beats keep M = -Inf; subtracting 0 there sends their -Inf lanes to expp(-Inf) = 0
    # instead of NaN (spec 3.5). Rows with NaN or +Inf are discarded later.
    shift = _finite_shift(running)
    e = expp(beats - shift[:, None, :], dtype=torch.float32)
    return running, changed, factor, _tree(e)


def _tree(e: torch.Tensor) -> torch.Tensor:
    """The adder tree over dim 1 (spec 3.1 step 4): tree(first ⌈n/2⌉) + tree(last ⌊n/2⌋), in FP32."""
    n = e.shape[1]
    if n & (n - 1) == 0:  # a power of two: the halves pair adjacent lanes, level by level (in place)
        while e.shape[1] > 1:
            e = torch.add(e[:, 0::2], e[:, 1::2], out=e[:, 0::2])
        return e[:, 0]
    half = (n + 1) // 2
    return _tree(e[:, :half]) + _tree(e[:, half:])


def _finite_shift(m: torch.Tensor) -> torch.Tensor:
    """The max to subtract: M, with -Inf (no finite element yet) replaced by 0."""
    if bool((m == _NEG_INF).any()):
        return torch.where(m == _NEG_INF, 0.0, m).to(torch.bfloat16)
    return m


def _sum_single(factor: torch.Tensor, s: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """accumulators=1: D = fp32(D F_k), D = fp32(D + s_k), beat by beat (separate RNE operations). On the
    CPU one compiled pass (:func:`numerics.kernels.mul_add_scan`): the loop is two small torch operations
    per beat, each of which waits for both threads, which a busy core holds up."""
    compiled = kernels.mul_add_scan(d, factor, s)
    if compiled is not None:
        return compiled
    d = d.clone()
    for f_k, s_k in zip(factor.T.contiguous(), s.T.contiguous()):
        d.mul_(f_k).add_(s_k)
    return d


def _sum_interleaved(
    changed: torch.Tensor, factor: torch.Tensor, s: torch.Tensor, d: torch.Tensor, resumed: bool
) -> torch.Tensor:
    """accumulators=4, the project's streaming model of the pipelined FMA (spec 3.2).

    Beat k goes to partial (k + resumed) mod 4 (on resume D sits in P0). That partial last took a beat
    at k - 4, so it owes the factors of the beats k-3..k that raised the max: the newest is fused,
    FMA32(P, F, s), older ones are applied first by FP32 multiplies (F = 1 where the max did not change,
    a no-op). After the last beat each partial applies what it still owes; D = (P0 + P1) + (P2 + P3).
    """
    rows, nb = s.shape
    parts = torch.zeros(PARTIALS, rows, dtype=torch.float32, device=s.device)
    if resumed:
        parts[0] = d
    # window of beats k-3..k, oldest first
    owed = torch.ones(PARTIALS, rows, dtype=torch.float32, device=s.device)
    raised = torch.zeros(PARTIALS, rows, dtype=torch.bool, device=s.device)
    last = [-1] * PARTIALS  # last beat each partial took
    changed_t, factor_t, s_t = changed.T.contiguous(), factor.T.contiguous(), s.T.contiguous()
    for k in range(nb):
        owed = torch.cat([owed[1:], factor_t[k][None]])
        raised = torch.cat([raised[1:], changed_t[k][None]])
        j = (k + int(resumed)) % PARTIALS
        newest = torch.ones_like(s_t[k])
        fused = [None] * PARTIALS
        taken = torch.zeros_like(raised[0])
        for w in range(PARTIALS - 1, -1, -1):
            fused[w] = raised[w] & ~taken
            taken = taken | fused[w]
            newest = torch.where(fused[w], owed[w], newest)
        p = parts[j]
        for w in range(PARTIALS):
            p = torch.where(fused[w], p, p * owed[w])
        parts[j] = fma32(p, newest, s_t[k])
        last[j] = k
    for j in range(PARTIALS):
        for k in range(last[j] + 1, nb):
            parts[j] = parts[j] * factor_t[k]
    return (parts[0] + parts[1]) + (parts[2] + parts[3])


# --------------------------------------------------------------------------- split mode


@dataclass(frozen=True)
class SoftmaxState:
    """What a SoftEx state slot holds between jobs on one set of rows (spec 3.6), one entry per row.

    Shapes are those of the input without the softmax axis.
    """

    max: torch.Tensor
    """Running max M (bfloat16; -Inf before any finite element). RTL ``softex_slot_regfile.sv``."""
    denominator: torch.Tensor
    """Denominator D (float32), the FP32 value of the slot after ACC_ONLY."""
    invalid: torch.Tensor
    """True where a NaN or +Inf has been seen (bool; sticky across chunks, spec 3.5)."""
    lanes: int
    """Lane count V the chunks were streamed with."""
    accumulators: int
    """1 or 4: the accumulator model (spec 3.2)."""
    reciprocal: torch.Tensor | None = None
    """bf16(X), X the FP32 reciprocal of D (spec 3.3), set by :func:`finalize` (ACC_ONLY|LAST); None
    before."""


def _row_blocks(rows: torch.Tensor):
    """Slices of whole rows of about _BLOCK elements each (all rows when they are short)."""
    step = max(1, _BLOCK // max(rows.shape[1], 1))
    return [slice(i, i + step) for i in range(0, rows.shape[0], step)]


def _accumulate_rows(
    rows: torch.Tensor, m_prev: torch.Tensor, d_prev: torch.Tensor, lanes: int, accumulators: int, resumed: bool
):
    if rows.shape[1] == 0:
        return m_prev, d_prev
    nb = -(-rows.shape[1] // lanes)
    running = torch.empty(rows.shape[0], nb, dtype=torch.bfloat16, device=rows.device)
    changed = torch.empty(rows.shape[0], nb, dtype=torch.bool, device=rows.device)
    factor = torch.empty(rows.shape[0], nb, dtype=torch.float32, device=rows.device)
    s = torch.empty(rows.shape[0], nb, dtype=torch.float32, device=rows.device)
    for blk in _row_blocks(rows):
        running[blk], changed[blk], factor[blk], s[blk] = _beat_terms(_beats(rows[blk], lanes), m_prev[blk])
    if accumulators == 1:
        d = _sum_single(factor, s, d_prev)
    else:
        d = _sum_interleaved(changed, factor, s, d_prev, resumed)
    return running[:, -1], d


def accumulate(
    chunk: torch.Tensor, state: SoftmaxState | None = None, *, dim: int = -1, lanes: int = 8, accumulators: int = 1
) -> SoftmaxState:
    """Pass 1 over one chunk of every row (ACC_ONLY), resuming from ``state`` if given.

    Beats restart at the chunk start. With ``accumulators=1`` a split run equals the whole-row
    :func:`softmax` bit for bit when all chunks but the last have lengths that are multiples of
    ``lanes``. With ``accumulators=4`` the partials are reduced at each chunk end and on resume D occupies
    P0, the first beat going to P1 (spec 3.6, assumption). A resumed state fixes ``lanes`` and
    ``accumulators``.
    """
    require_bfloat16(chunk, "chunk")
    check_lanes(lanes)
    check_accumulators(accumulators)
    rows = _as_rows(chunk, dim)
    batch = chunk.movedim(dim, -1).shape[:-1]
    if state is None:
        m_prev = torch.full((rows.shape[0],), _NEG_INF, dtype=torch.bfloat16, device=chunk.device)
        d_prev = torch.zeros(rows.shape[0], dtype=torch.float32, device=chunk.device)
        bad = torch.zeros(rows.shape[0], dtype=torch.bool, device=chunk.device)
    else:
        if (state.lanes, state.accumulators) != (lanes, accumulators):
            raise ValueError(
                f"lanes and accumulators must match the state's ({state.lanes}, {state.accumulators}); "
                f"got ({lanes}, {accumulators})"
            )
        if state.reciprocal is not None:
            raise ValueError("state is finalized (its slot was inverted); accumulate needs an unfinalized state")
        if tuple(state.max.shape) != tuple(batch):
            raise ValueError(f"chunk has rows of shape {tuple(batch)}; the state holds {tuple(state.max.shape)}")
        m_prev, d_prev, bad = state.max.reshape(-1), state.denominator.reshape(-1), state.invalid.reshape(-1)
    m, d = _accumulate_rows(rows, m_prev, d_prev, lanes, accumulators, resumed=state is not None)
    bad = bad | torch.isnan(m) | (m == float("inf"))  # amax and cummax propagate NaN and +Inf
    return SoftmaxState(m.reshape(batch), d.reshape(batch), bad.reshape(batch), lanes, accumulators)


def finalize(state: SoftmaxState) -> SoftmaxState:
    """Invert the denominator (ACC_ONLY|LAST): the state with ``reciprocal = bf16(X)`` (spec 3.3)."""
    if state.reciprocal is not None:
        return state
    r = round_to_bfloat16(reciprocal(state.denominator))
    # All -Inf rows give +0 (D = 0 there, so X is garbage); NaN/+Inf rows give NaN (spec 3.5).
    r = torch.where(state.max == _NEG_INF, 0.0, r)
    r = torch.where(state.invalid, float("nan"), r)
    return SoftmaxState(state.max, state.denominator, state.invalid, state.lanes, state.accumulators, r)


def normalize(chunk: torch.Tensor, state: SoftmaxState, *, dim: int = -1) -> torch.Tensor:
    """Pass 2 over one chunk (DIV_ONLY): y = bf16(expp(bf16(x - M)) bf16(X)), bfloat16 (spec 3.4).

    ``state`` is finalized first if it is not yet.
    """
    require_bfloat16(chunk, "chunk")
    state = finalize(state)
    rows = _as_rows(chunk, dim)
    if tuple(state.max.shape) != tuple(chunk.movedim(dim, -1).shape[:-1]):
        raise ValueError(
            f"chunk rows {tuple(chunk.movedim(dim, -1).shape[:-1])} do not match the state's {tuple(state.max.shape)}"
        )
    m = _finite_shift(state.max.reshape(-1, 1))
    r = state.reciprocal.reshape(-1, 1)
    y = torch.empty_like(rows)
    for blk in _row_blocks(rows):
        y[blk] = expp(rows[blk] - m[blk]).mul_(r[blk])
    if bool(state.invalid.any()):  # 0 * NaN is NaN already; this makes every code the canonical 0x7FC0
        y = torch.where(state.invalid.reshape(-1, 1), float("nan"), y).to(torch.bfloat16)
    return _from_rows(y, chunk, dim)


def softmax(
    x: torch.Tensor, dim: int = -1, *, lanes: int = 8, accumulators: int = 1, flush_subnormals: bool = False
) -> torch.Tensor:
    """SoftEx softmax along ``dim``: bfloat16 in, bfloat16 out, bit-exact with the RTL datapath (spec 3).

    ``lanes`` (V): elements per beat, an integer in [1, 64]; a row whose length is not a multiple of V
    ends with a masked partial beat. ``accumulators``: 1 (one FP32 accumulator, the golden model's order;
    default) or 4 (interleaved partial sums with a fused FMA, spec 3.2). Special values (spec 3.5): a row
    with NaN or +Inf gives NaN; -Inf entries give +0; an all -Inf row gives all +0.
    ``flush_subnormals=True`` returns +0 for outputs below 2**-126, as the authors' Python golden model
    does under ``torch.set_flush_denormal(True)``; the RTL (default) keeps them (docs/hardware/softex.md).
    """
    require_bfloat16(x)
    check_lanes(lanes)
    check_accumulators(accumulators)
    if not isinstance(flush_subnormals, bool):
        raise ValueError(f"flush_subnormals must be True or False; got {flush_subnormals!r}")
    rows = _as_rows(x, dim)  # validates dim
    if x.numel() == 0:
        return x.clone()
    # one accumulator: both passes in one compiled call per row (numerics.kernels.softex_softmax)
    y = kernels.softex_softmax(rows, lanes, expp_table(x.device, torch.float32)) if accumulators == 1 else None
    if y is None:
        y = normalize(x, accumulate(x, dim=dim, lanes=lanes, accumulators=accumulators), dim=dim)
    else:
        y = _from_rows(y, x, dim)
    return _flush(y) if flush_subnormals else y


# --------------------------------------------------------------------------- INT8 casts


@dataclass(frozen=True)
class CastCtrl:
    """One direction of the CAST_CTRL register (RTL ``softex_cast_in.sv``, ``softex_cast_out.sv``; spec 3.7):
    8-bit integers read as fixed point with ``frac = 8 - int_bits - signed`` fraction bits."""

    int_bits: int
    """Integer bits, excluding the sign bit (7-bit signed field: -64..63); may exceed 8 or be negative
    (a scale of 2^-frac either way)."""
    signed: bool = False
    """Two's complement int8 if True, else uint8."""

    def __post_init__(self):
        if isinstance(self.int_bits, bool) or not isinstance(self.int_bits, int) or not -64 <= self.int_bits <= 63:
            raise ValueError(f"int_bits must be an integer in [-64, 63] (a 7-bit signed field); got {self.int_bits!r}")
        if not isinstance(self.signed, bool):
            raise ValueError(f"signed must be a bool; got {self.signed!r}")

    @property
    def frac(self) -> int:
        """Fraction bits: a code q stands for q 2^-frac."""
        return 8 - self.int_bits - int(self.signed)

    @property
    def dtype(self) -> torch.dtype:
        return torch.int8 if self.signed else torch.uint8

    @property
    def qmax(self) -> int:
        return 127 if self.signed else 255


def int_to_bf16(q: torch.Tensor, ctrl: CastCtrl) -> torch.Tensor:
    """Input cast: int8/uint8 q -> BF16 q 2^-frac, exact (8 bits fit the significand; 0 -> +0)."""
    if not isinstance(q, torch.Tensor) or q.dtype != ctrl.dtype:
        got = str(q.dtype).removeprefix("torch.") if isinstance(q, torch.Tensor) else type(q).__name__
        raise TypeError(
            f"q must be a {str(ctrl.dtype).removeprefix('torch.')} tensor for signed={ctrl.signed}; got {got}"
        )
    return round_to_bfloat16(q.float() * 2.0**-ctrl.frac)  # exact: nothing is rounded


def bf16_to_int(y: torch.Tensor, ctrl: CastCtrl) -> torch.Tensor:
    """Output cast: min(floor(|y| 2^frac + 1/2), Qmax), round half up, sign ignored, Inf/NaN saturate
    (the project saturates where the RTL as written wraps; spec 3.7)."""
    require_bfloat16(y, "y")
    v = torch.floor(y.double().abs() * 2.0**ctrl.frac + 0.5)  # exact in float64
    v = torch.where(torch.isnan(v), float(ctrl.qmax), v.clamp(max=ctrl.qmax))
    return v.to(ctrl.dtype)


def softmax_int8(
    q: torch.Tensor, ctrl_in: CastCtrl, ctrl_out: CastCtrl, dim: int = -1, *, lanes: int = 8, accumulators: int = 1
) -> torch.Tensor:
    """INT_INPUT|INT_OUTPUT softmax: cast in, :func:`softmax`, cast out (spec 3.7). A beat reads V bytes,
    so the beat structure is that of the BF16 softmax."""
    return bf16_to_int(softmax(int_to_bf16(q, ctrl_in), dim, lanes=lanes, accumulators=accumulators), ctrl_out)
