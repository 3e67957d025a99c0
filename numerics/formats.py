"""Number formats: BF16/FP32 bit views, rounding to BF16, INTn and fixed-point quantization.

Every function here is vectorised torch on the input's device. torch and ml_dtypes casts are used
only as test oracles, never as the thing under test: the rounding is done on integer bit patterns.

Rounding modes (:class:`Rounding`) are defined on the exact real value ``v`` of the input and a
quantum ``q`` of the target (one BF16 ulp at the result's binade, or one integer step):

* ``nearest_even`` -- nearest multiple of ``q``; a tie goes to the even one (IEEE roundTiesToEven).
* ``toward_zero``  -- the multiple of ``q`` nearest to ``v`` no larger in magnitude (truncation).
* ``half_up``      -- ``floor(v/q + 1/2) * q``: nearest, a tie goes toward +infinity. This is what an
                      adder that adds half a step and truncates a two's-complement value does.
* ``stochastic``   -- add a random ``k``-bit integer ``r`` to the magnitude's discarded fraction
                      truncated to ``k`` bits (``k = 16``); a carry out rounds the magnitude up.
                      P(up) = floor(frac * 2^k) / 2^k, so it is unbiased whenever at most ``k`` bits are
                      discarded (FP32 -> BF16 discards exactly 16). ``r`` comes from explicit
                      ``random_bits`` (integers in [0, 2^16)) or a ``torch.Generator``: the same bits or
                      seed give the same result.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import torch

from numerics import kernels

__all__ = [
    "Rounding",
    "STOCHASTIC_BITS",
    "require_bfloat16",
    "bf16_to_bits",
    "bits_to_bf16",
    "fp32_to_bits",
    "bits_to_fp32",
    "round_to_bfloat16",
    "bf16_values",
    "all_finite",
    "flush_subnormals",
    "fma_f32",
    "IntFormat",
    "INT8",
    "UINT8",
    "INT4",
    "UINT4",
    "INT16",
    "INT32",
    "FixedFormat",
    "lookup",
    "quantize",
    "dequantize",
    "to_fixed",
    "from_fixed",
]

#: Width ``k`` of the random integer used by stochastic rounding.
STOCHASTIC_BITS = 16

_BF16_QNAN = 0x7FC0
_FP32_EXP_MASK = 0x7F800000
_INT32_SIGN = -(2**31)  # 0x80000000 as int32
_INT16_SIGN = -(2**15)  # 0x8000 as a sign-extended int16
_BF16_NAN = float("nan")  # masked_fill writes the canonical quiet NaN 0x7FC0
_CPU_CHUNK = 1 << 14  # elements per pass on CPU: temporaries stay in cache, and each op stays below
# torch's parallel grain size (32768), so no thread synchronisation per op (measured: 3x to 50x
# faster on 2 busy cores than 64K chunks)
_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


class Rounding(str, enum.Enum):
    """Rounding modes, named as IEEE 754 names them (exact definitions in the module docstring)."""

    NEAREST_EVEN = "nearest_even"
    """Round to nearest, ties to even."""
    TOWARD_ZERO = "toward_zero"
    """Truncate the magnitude."""
    HALF_UP = "half_up"
    """Round to nearest, ties toward +infinity: floor(v/q + 1/2)."""
    STOCHASTIC = "stochastic"
    """Round the magnitude up with probability equal to the discarded fraction (k = 16 bits)."""

    @classmethod
    def parse(cls, value: "Rounding | str") -> "Rounding":
        try:
            return cls(value)
        except ValueError:
            allowed = ", ".join(repr(m.value) for m in cls)
            raise ValueError(f"rounding must be one of {allowed}; got {value!r}") from None


# --------------------------------------------------------------------------- bit views


def _require_dtype(x: torch.Tensor, dtypes, name: str = "x") -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(x).__name__}")
    if x.dtype not in dtypes:
        allowed = ", ".join(str(d).removeprefix("torch.") for d in dtypes)
        raise TypeError(f"{name} must have dtype {allowed}; got {str(x.dtype).removeprefix('torch.')}")


def require_bfloat16(x, name: str = "x") -> None:
    """``TypeError`` unless ``x`` is a bfloat16 tensor: emulated BF16 units take BF16 codes, never a
    silent cast."""
    if not isinstance(x, torch.Tensor) or x.dtype != torch.bfloat16:
        got = str(x.dtype).removeprefix("torch.") if isinstance(x, torch.Tensor) else type(x).__name__
        raise TypeError(
            f"{name} must be a bfloat16 tensor; got {got} (round first, e.g. numerics.formats.round_to_bfloat16(x))"
        )


def bf16_to_bits(x: torch.Tensor) -> torch.Tensor:
    """Raw BF16 codes of a bfloat16 tensor, as int32 in [0, 65535]."""
    require_bfloat16(x)
    return x.view(torch.int16).to(torch.int32) & 0xFFFF


def bits_to_bf16(bits: torch.Tensor) -> torch.Tensor:
    """bfloat16 tensor from raw codes (any integer dtype; only the low 16 bits are used)."""
    _require_dtype(bits, (torch.int16, torch.int32, torch.int64, torch.uint8, torch.int8), "bits")
    b = bits.to(torch.int32) & 0xFFFF
    return torch.where(b >= 0x8000, b - 0x10000, b).to(torch.int16).view(torch.bfloat16)


def fp32_to_bits(x: torch.Tensor) -> torch.Tensor:
    """Raw FP32 codes of a float32 tensor, as int64 in [0, 2^32)."""
    _require_dtype(x, (torch.float32,))
    return x.view(torch.int32).to(torch.int64) & 0xFFFFFFFF


def bits_to_fp32(bits: torch.Tensor) -> torch.Tensor:
    """float32 tensor from raw codes (integer tensor; only the low 32 bits are used)."""
    _require_dtype(bits, (torch.int32, torch.int64), "bits")
    b = bits.to(torch.int64) & 0xFFFFFFFF
    return torch.where(b >= 2**31, b - 2**32, b).to(torch.int32).view(torch.float32)


# --------------------------------------------------------------------------- elementwise functions of a code

_LOOKUP_CHUNK = 1 << 14  # elements per torch lookup on CPU where the compiled kernel is unavailable: the
# index chunk stays in cache and below torch's parallel grain size, so no thread synchronisation per chunk
# (measured: 1x torch.exp at 16K, 3x-30x slower at 64K-256K on 2 busy cores)
_LOOKUP_CHUNK_ONE_THREAD = 1 << 17  # with one torch thread nothing synchronises: fewer, larger chunks
# (measured on 16M codes: 1.15-1.37x torch.exp at 64K-256K against 1.7-1.8x at 16K)


def lookup(table: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``table[code(x)]`` elementwise: any function of one bfloat16 input, tabulated over all 65,536
    codes (``table`` 1-D, on ``x``'s device), evaluated as a gather (on the CPU by the compiled
    :func:`numerics.kernels.lookup16` where available). Shape of ``x``, dtype of ``table``."""
    _require_dtype(x, (torch.bfloat16,))
    if table.shape != (65536,):
        raise ValueError(f"table must have shape (65536,); got {tuple(table.shape)}")
    compiled = kernels.lookup16(table, x.view(torch.uint16))  # CPU tensors only, else None
    if compiled is not None:
        return compiled
    flat = x.reshape(-1)
    out = torch.empty(flat.shape, dtype=table.dtype, device=x.device)
    if x.device.type != "cpu":
        step = max(flat.numel(), 1)
    else:
        step = _LOOKUP_CHUNK if torch.get_num_threads() > 1 else _LOOKUP_CHUNK_ONE_THREAD
    for start in range(0, flat.numel(), step):
        part = flat[start : start + step]
        # unsigned codes as int32 indices: one pass through the uint16 view on CPU
        idx = (
            part.view(torch.uint16).to(torch.int32)
            if x.device.type == "cpu"
            else part.view(torch.int16).to(torch.int32) & 0xFFFF
        )
        torch.index_select(table, 0, idx, out=out[start : start + step])
    return out.view(x.shape)


# --------------------------------------------------------------------------- random bits


def _random_ints(shape, device, k: int, random_bits, generator, name="random_bits") -> torch.Tensor:
    """Random integers in [0, 2^k) for stochastic rounding, from explicit bits or a generator."""
    if random_bits is not None:
        if (
            not isinstance(random_bits, torch.Tensor)
            or random_bits.dtype.is_floating_point
            or random_bits.dtype == torch.bool
        ):
            raise TypeError(f"{name} must be an integer torch.Tensor")
        r = random_bits.to(device=device, dtype=torch.int64)
        if r.numel() and (int(r.min()) < 0 or int(r.max()) >= 2**k):
            raise ValueError(f"{name} must lie in [0, 2**{k}); got values in [{int(r.min())}, {int(r.max())}]")
        try:
            return r.expand(shape)
        except RuntimeError:
            raise ValueError(f"{name} of shape {tuple(r.shape)} does not broadcast to {tuple(shape)}") from None
    if generator is None:
        raise ValueError("stochastic rounding needs random_bits or a torch.Generator (generator=...)")
    return torch.randint(0, 2**k, tuple(shape), generator=generator, device=generator.device).to(device)


# --------------------------------------------------------------------------- FP64 -> FP32 without losing the rounding


def _fp64_to_fp32_bits(x: torch.Tensor, mode: Rounding) -> torch.Tensor:
    """FP32 bit patterns (int32) of float64 values, keeping what the BF16 rounding in ``mode`` needs.

    Nearest modes: round to odd at 24 bits (truncate, then set the lowest bit if inexact); rounding
    to odd and then to nearest at 8 bits equals one rounding to 8 bits (24 >= 8 + 2), so FP64
    inputs are rounded once, not twice. ``toward_zero`` and ``stochastic``: truncate (stochastic
    rounding reads only the 16 bits below BF16 anyway); stochastic sends |x| >= 2^128 to Inf, since
    such a value lies at or beyond the upper neighbour of the largest finite BF16.
    """
    near = x.to(torch.float32)  # a first approximation only; exactness is restored below
    back = near.to(torch.float64)
    bits = near.view(torch.int32)
    # sign-magnitude: one less on the pattern is one ulp less in magnitude (never at +-0 here)
    bits = torch.where(back.abs() > x.abs(), bits - 1, bits)  # includes near = +-inf for huge x
    if mode in (Rounding.NEAREST_EVEN, Rounding.HALF_UP):
        bits = torch.where(back != x, bits | 1, bits)
    elif mode is Rounding.STOCHASTIC:
        bits = torch.where(x.abs() >= 2.0**128, (bits & _INT32_SIGN) | _FP32_EXP_MASK, bits)
    return torch.where(torch.isnan(x), 0x7FC00000, bits)


# --------------------------------------------------------------------------- rounding to BF16


def round_to_bfloat16(
    x: torch.Tensor,
    rounding: Rounding | str = Rounding.NEAREST_EVEN,
    *,
    random_bits: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    flush_subnormals: bool = False,
) -> torch.Tensor:
    """Round float32 or float64 values to bfloat16 once, in the given rounding mode.

    Gradual underflow by default; ``flush_subnormals=True`` replaces results below the smallest
    normal (2^-126, after rounding) by a zero of the same sign. Overflow: ``nearest_even``,
    ``half_up`` (for positive values) and ``stochastic`` can reach Inf; ``toward_zero`` saturates at
    the largest finite value, as IEEE prescribes. NaN becomes the canonical quiet NaN 0x7FC0.
    Stochastic rounding takes ``random_bits`` (integers in [0, 2^16), broadcast to ``x``) or a
    ``generator``.
    """
    _require_dtype(x, (torch.float32, torch.float64))
    mode = Rounding.parse(rounding)
    if mode is Rounding.STOCHASTIC:
        r = _random_ints(x.shape, x.device, STOCHASTIC_BITS, random_bits, generator).to(torch.int32)
    elif random_bits is not None or generator is not None:
        raise ValueError(f"random_bits and generator apply only to rounding='stochastic', not {mode.value!r}")

    u = _fp64_to_fp32_bits(x, mode) if x.dtype == torch.float64 else x.view(torch.int32)
    u = u.reshape(-1)
    r = r.reshape(-1) if mode is Rounding.STOCHASTIC else None
    out = torch.empty(u.shape, dtype=torch.int16, device=u.device)
    step = _CPU_CHUNK if u.device.type == "cpu" else max(u.numel(), 1)
    for start in range(0, u.numel(), step):
        part = slice(start, start + step)
        out[part] = _round_fp32_bits(u[part], mode, None if r is None else r[part], flush_subnormals)
    return out.view(torch.bfloat16).view(x.shape)


def _round_fp32_bits(u: torch.Tensor, mode: Rounding, r: torch.Tensor | None, flush: bool) -> torch.Tensor:
    """BF16 patterns (int32 holding int16 values) of FP32 patterns ``u`` (int32), in place where it can.

    NaN payloads are clamped so that no sum below leaves int32's range; they stay above the Inf
    pattern for the final mask. Inf needs no case of its own: 0x7F800000 plus at most 0xFFFF keeps
    the high half 0x7F80.
    """
    mag = u & 0x7FFFFFFF
    mag.clamp_(max=0x7FC00000)
    if mode is Rounding.NEAREST_EVEN:
        out = mag >> 16
        out &= 1
        out += mag
        out += 0x7FFF
    elif mode is Rounding.TOWARD_ZERO:
        out = mag.clone()
    elif mode is Rounding.HALF_UP:
        # a tie goes up for positive values (larger magnitude), down in magnitude for negative ones
        out = mag + 0x8000
        out -= (u < 0).to(torch.int32)
    else:  # stochastic: a carry out of the discarded 16 bits rounds the magnitude up
        out = mag + r
    out >>= 16
    if flush:
        out.masked_fill_(out < 0x0080, 0)
    sign = u >> 16
    sign &= _INT16_SIGN  # the sign, as a negative int16 value
    out |= sign
    out.masked_fill_(mag > _FP32_EXP_MASK, _BF16_QNAN)
    return out


# --------------------------------------------------------------------------- integers


@dataclass(frozen=True)
class IntFormat:
    """A two's-complement (``signed``) or unsigned integer format of ``bits`` bits."""

    bits: int
    """Width in bits, 1..32 (1..31 signed ranges fit int32; unsigned 32 needs int64)."""
    signed: bool = True
    """Two's complement if True, else unsigned."""

    def __post_init__(self):
        if isinstance(self.bits, bool) or not isinstance(self.bits, int) or not 1 <= self.bits <= 32:
            raise ValueError(f"bits must be an integer in [1, 32]; got {self.bits!r}")
        if not isinstance(self.signed, bool):
            raise ValueError(f"signed must be True or False; got {self.signed!r}")

    @property
    def name(self) -> str:
        return f"{'' if self.signed else 'u'}int{self.bits}"

    @property
    def qmin(self) -> int:
        return -(2 ** (self.bits - 1)) if self.signed else 0

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1 if self.signed else 2**self.bits - 1

    @property
    def torch_dtype(self) -> torch.dtype:
        """Smallest torch integer dtype that holds every code."""
        for dt in (torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64):
            info = torch.iinfo(dt)
            if info.min <= self.qmin and self.qmax <= info.max:
                return dt
        raise AssertionError("unreachable: int64 holds every format")


INT4 = IntFormat(4, True)
UINT4 = IntFormat(4, False)
INT8 = IntFormat(8, True)
UINT8 = IntFormat(8, False)
INT16 = IntFormat(16, True)
INT32 = IntFormat(32, True)


def _as_int_format(fmt: IntFormat | str) -> IntFormat:
    if isinstance(fmt, IntFormat):
        return fmt
    if isinstance(fmt, str):
        name = fmt.strip().lower()
        signed = not name.startswith("u")
        digits = name.removeprefix("u").removeprefix("int")
        if name.removeprefix("u").startswith("int") and digits.isdigit():
            return IntFormat(int(digits), signed)
    raise ValueError(f"format must be an IntFormat or a name like 'int8' or 'uint4'; got {fmt!r}")


def _broadcast_param(p, x: torch.Tensor, axis: int | None, block_size: int | None, name: str) -> torch.Tensor:
    """Expand a per-tensor, per-channel (``axis``) or per-block (``axis`` + ``block_size``) parameter
    to the shape of ``x``."""
    p = torch.as_tensor(p, device=x.device)
    if p.dtype.is_complex or p.dtype == torch.bool:
        raise TypeError(f"{name} must be real")
    if axis is None:
        if block_size is not None:
            raise ValueError("block_size needs axis: the axis along which blocks of block_size elements share a scale")
        if p.numel() != 1:
            raise ValueError(f"{name} must be a single value when axis is None; got shape {tuple(p.shape)}")
        return p.reshape(()).expand(x.shape)
    if x.dim() == 0:
        raise ValueError("axis given for a 0-d tensor")
    if not -x.dim() <= axis < x.dim():
        raise ValueError(f"axis must be in [{-x.dim()}, {x.dim() - 1}]; got {axis}")
    axis %= x.dim()
    n = x.shape[axis]
    if block_size is None:
        if p.dim() != 1 or p.numel() != n:
            raise ValueError(f"{name} must have shape ({n},) for per-channel axis={axis}; got {tuple(p.shape)}")
        shape = [1] * x.dim()
        shape[axis] = n
        return p.reshape(shape).expand(x.shape)
    if not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size must be a positive integer; got {block_size!r}")
    if n % block_size:
        raise ValueError(f"block_size={block_size} does not divide the size {n} of axis {axis}")
    want = list(x.shape)
    want[axis] = n // block_size
    if tuple(p.shape) != tuple(want):
        raise ValueError(
            f"{name} must have shape {tuple(want)} for blocks of {block_size} along axis {axis}; got {tuple(p.shape)}"
        )
    return p.repeat_interleave(block_size, dim=axis)


def _scale(scale, x: torch.Tensor, axis: int | None, block_size: int | None) -> torch.Tensor:
    """The scale as float64, broadcast to ``x``'s shape (a view: dividing by it costs no more than by a
    full tensor), after checking that every value is finite and > 0. The check runs on the values
    given, not on their expansion to ``x``'s size."""
    given = torch.as_tensor(scale, device=x.device)
    if given.dtype.is_complex or given.dtype == torch.bool:
        raise TypeError("scale must be real")
    given = given.to(torch.float64)
    s = _broadcast_param(given, x, axis, block_size, "scale")
    if s.numel() and not bool(torch.all(torch.isfinite(given) & (given > 0))):
        raise ValueError("scale must be finite and > 0 everywhere")
    return s


def _round_integral(y: torch.Tensor, mode: Rounding, r: torch.Tensor | None) -> torch.Tensor:
    """Round float64 values to integers (as float64) in the given mode (definitions: module doc)."""
    if mode is Rounding.NEAREST_EVEN:
        return torch.round(y)
    if mode is Rounding.TOWARD_ZERO:
        return torch.trunc(y)
    fl = torch.floor(y)
    if mode is Rounding.HALF_UP:
        return fl + (y - fl >= 0.5)
    a = y.abs()
    t = torch.trunc(a)
    frac_k = torch.floor((a - t) * 2.0**STOCHASTIC_BITS)
    return torch.copysign(t + (frac_k + r >= 2.0**STOCHASTIC_BITS), y)


def quantize(
    x: torch.Tensor,
    fmt: IntFormat | str,
    scale,
    *,
    zero_point=None,
    axis: int | None = None,
    block_size: int | None = None,
    rounding: Rounding | str = Rounding.NEAREST_EVEN,
    random_bits: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Integer codes ``clamp(round(x / scale) + zero_point, qmin, qmax)`` in ``fmt``.

    ``scale`` (> 0, finite) and ``zero_point`` (integers) are one value per tensor (``axis=None``),
    one per index along ``axis`` (per channel), or one per block of ``block_size`` consecutive
    elements along ``axis`` (per block; shape of ``x`` with that axis divided by ``block_size``).
    The quotient is computed in float64, which is exact enough that every rounding mode sees the
    true quotient of float32/bfloat16 operands. Values beyond the range saturate (+-Inf included);
    NaN raises ``ValueError``. Returns the smallest torch integer dtype holding ``fmt``.
    """
    _require_dtype(x, _FLOATS)
    f = _as_int_format(fmt)
    mode = Rounding.parse(rounding)
    if mode is not Rounding.STOCHASTIC and (random_bits is not None or generator is not None):
        raise ValueError(f"random_bits and generator apply only to rounding='stochastic', not {mode.value!r}")
    s = _scale(scale, x, axis, block_size)
    if x.numel() and bool(torch.isnan(x).any()):
        raise ValueError("x contains NaN, which has no integer code")
    r = (
        _random_ints(x.shape, x.device, STOCHASTIC_BITS, random_bits, generator)
        if mode is Rounding.STOCHASTIC
        else None
    )
    q = _round_integral(x.to(torch.float64) / s, mode, r)
    if zero_point is not None:
        zp = _broadcast_param(zero_point, x, axis, block_size, "zero_point")
        if zp.dtype.is_floating_point and not bool(torch.all(zp == torch.round(zp))):
            raise ValueError("zero_point must hold integers")
        q = q + zp.to(torch.float64)
    return q.clamp(f.qmin, f.qmax).to(f.torch_dtype)


def dequantize(
    q: torch.Tensor,
    fmt: IntFormat | str,
    scale,
    *,
    zero_point=None,
    axis: int | None = None,
    block_size: int | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Real values ``(q - zero_point) * scale`` of integer codes, in ``dtype`` (computed in float64,
    rounded once). Codes outside ``fmt``'s range raise ``ValueError``."""
    _require_dtype(q, (torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64), "q")
    f = _as_int_format(fmt)
    if q.numel() and (int(q.min()) < f.qmin or int(q.max()) > f.qmax):
        raise ValueError(f"q holds codes outside {f.name}'s range [{f.qmin}, {f.qmax}]")
    s = _scale(scale, q, axis, block_size)
    v = q.to(torch.float64)
    if zero_point is not None:
        v = v - _broadcast_param(zero_point, q, axis, block_size, "zero_point").to(torch.float64)
    return (v * s).to(dtype)


# --------------------------------------------------------------------------- fixed point


@dataclass(frozen=True)
class FixedFormat:
    """Fixed-point Qm.n: ``int_bits`` integer bits, ``frac_bits`` fraction bits, plus a sign bit if
    ``signed``. A code c stands for c * 2^-frac_bits. Example: the UCLM table's Q1.15 is
    ``FixedFormat(1, 15, signed=False)`` (16 bits, values in [0, 2))."""

    int_bits: int
    """Integer bits m, excluding the sign bit (>= 0)."""
    frac_bits: int
    """Fraction bits n (>= 0)."""
    signed: bool = True
    """Adds a two's-complement sign bit if True."""

    def __post_init__(self):
        if not isinstance(self.int_bits, int) or self.int_bits < 0:
            raise ValueError(f"int_bits must be an integer >= 0; got {self.int_bits!r}")
        if not isinstance(self.frac_bits, int) or self.frac_bits < 0:
            raise ValueError(f"frac_bits must be an integer >= 0; got {self.frac_bits!r}")
        IntFormat(self.bits, self.signed)  # validates the total width

    @property
    def bits(self) -> int:
        return self.int_bits + self.frac_bits + int(self.signed)

    @property
    def int_format(self) -> IntFormat:
        return IntFormat(self.bits, self.signed)

    @property
    def name(self) -> str:
        return f"{'' if self.signed else 'u'}Q{self.int_bits}.{self.frac_bits}"


def to_fixed(
    x: torch.Tensor,
    fmt: FixedFormat,
    *,
    rounding: Rounding | str = Rounding.NEAREST_EVEN,
    random_bits=None,
    generator=None,
) -> torch.Tensor:
    """Codes of ``x`` in fixed-point ``fmt`` (rounded, saturating)."""
    return quantize(
        x, fmt.int_format, 2.0**-fmt.frac_bits, rounding=rounding, random_bits=random_bits, generator=generator
    )


def from_fixed(q: torch.Tensor, fmt: FixedFormat, *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Real values of fixed-point codes."""
    return dequantize(q, fmt.int_format, 2.0**-fmt.frac_bits, dtype=dtype)


# --------------------------------------------------------------------------- fast BF16 values, FP32 FMA


def bf16_values(x: torch.Tensor) -> torch.Tensor:
    """``x`` rounded to BF16 (nearest_even), as a bfloat16 tensor; NaN becomes 0x7FC0.

    For speed this uses torch's float32 -> bfloat16 cast, which rounds to nearest even like
    :func:`round_to_bfloat16` but may give NaN other bits, which are mended here
    (``tests/numerics/test_nn.py`` checks the two bit for bit on every BF16 code with every
    rounding-relevant low half). float64 goes through ``round_to_bfloat16``, which rounds it once.
    """
    if x.dtype == torch.bfloat16:
        return x
    if x.dtype == torch.float64:
        return round_to_bfloat16(x.detach())
    x32 = x.detach().to(torch.float32)
    y = x32.to(torch.bfloat16)
    if not all_finite(x32):
        y = y.masked_fill(y.isnan(), _BF16_NAN)
    return y


def all_finite(x: torch.Tensor) -> bool:
    """Whether every element of ``x`` is finite: one sum, which NaN and Inf make non-finite (a third of
    ``torch.isfinite(x).all()``'s time on small tensors, which emulated layers check on every call), and
    the elementwise check only where the sum is not finite (it may have overflowed)."""
    return math.isfinite(x.detach().sum().item()) or bool(torch.isfinite(x).all())


def flush_subnormals(x: torch.Tensor) -> torch.Tensor:
    """``x`` (bfloat16 or float32) with every subnormal value replaced by a zero of the same sign: what
    a float unit in flush-to-zero mode (e.g. under ``torch.set_flush_denormal(True)``) returns."""
    if x.dtype not in (torch.bfloat16, torch.float32):
        raise TypeError(f"x must be bfloat16 or float32, got {x.dtype}")
    tiny = torch.finfo(x.dtype).tiny  # 2**-126 for both
    subnormal = (x != 0) & (x.abs() < tiny)
    if not bool(subnormal.any()):
        return x
    return torch.where(subnormal, torch.zeros_like(x).copysign(x), x)


def fma_f32(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """``a*b + c`` of float32 tensors rounded once to FP32: the fused multiply-add of SoftEx's
    accumulators (spec softex.md §1) and of FlexiSAGA's PEs with ``fused_mac``.

    In float64 the product is exact; the sum h is rounded to odd using its TwoSum error (step h one
    ulp toward the error when h is inexact and even), and 53 >= 24 + 2 bits make the final rounding
    to FP32 equal to one rounding of the exact value.
    """
    p = a.double() * b.double()
    c = c.double()
    h = p + c
    bb = h - p
    err = (p - (h - bb)) + (c - bb)
    even = (h.view(torch.int64) & 1) == 0
    step = (err != 0) & torch.isfinite(err) & even
    h = torch.where(step, torch.nextafter(h, torch.where(err > 0, float("inf"), float("-inf"))), h)
    return h.float()
