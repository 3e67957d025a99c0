"""Scalar reference for FlexiSAGA numerics, written from docs/hardware/flexisaga.md §2 step by step.

Plain Python: weights are lists of rows (W[k][n], K x N), floats are Python floats holding float32
values, float32 rounding is done on exact rationals with integers. Used only by the tests.
"""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction

F32_MANT = 23  # stored mantissa bits
F32_EMIN = -126  # smallest normal exponent
F32_EMAX = 127


def round_f32(value: Fraction, negative_zero: bool = False) -> float:
    """Round an exact rational to the nearest float32, ties to even; overflow gives +-inf.

    ``negative_zero`` gives the sign of a zero result (IEEE: the sign of the exact result, or of
    the operands when it is exactly zero).
    """
    if value == 0:
        return -0.0 if negative_zero else 0.0
    sign = -1 if value < 0 else 1
    a = abs(value)
    exp = a.numerator.bit_length() - a.denominator.bit_length()  # 2**(exp-1) < a < 2**(exp+1)
    if Fraction(2) ** exp > a:
        exp -= 1
    exp = max(exp, F32_EMIN)  # below the normals the quantum stays 2**-149
    quantum = Fraction(2) ** (exp - F32_MANT)
    scaled = a / quantum
    n = scaled.numerator // scaled.denominator
    rest = scaled - n
    if rest > Fraction(1, 2) or (rest == Fraction(1, 2) and n % 2 == 1):
        n += 1
    result = n * quantum
    if result >= Fraction(2) ** (F32_EMAX + 1):
        return sign * math.inf
    if result == 0:
        return -0.0 if sign < 0 else 0.0
    return sign * float(result)


def _neg(x: float) -> bool:
    return math.copysign(1.0, x) < 0


def mul_f32(x: float, w: float) -> float:
    return round_f32(Fraction(x) * Fraction(w), negative_zero=_neg(x) != _neg(w))


def add_f32(a: float, b: float) -> float:
    # an exact zero sum is +0 under round-to-nearest unless both operands are -0
    return round_f32(Fraction(a) + Fraction(b), negative_zero=_neg(a) and _neg(b))


def fma_f32(acc: float, x: float, w: float) -> float:
    product_zero_negative = (x == 0 or w == 0) and (_neg(x) != _neg(w))
    return round_f32(Fraction(acc) + Fraction(x) * Fraction(w), negative_zero=_neg(acc) and product_zero_negative)


def wrap_int32(v: int) -> int:
    return (v + 2**31) % 2**32 - 2**31


def is_stored(w) -> bool:
    """The bitmap stores every element except +0 (and integer 0)."""
    if isinstance(w, float):
        return w != 0 or _neg(w) or math.isnan(w)
    return w != 0


def gemm(x, w, *, dtype="float32", fused_mac=False):
    """Spec §2.2 step 1, one output at a time."""
    m_size, k_size, n_size = len(x), len(w), len(w[0])
    y = [[None] * n_size for _ in range(m_size)]
    for m in range(m_size):
        for n in range(n_size):
            acc = 0 if dtype == "int32" else 0.0
            for k in range(k_size):
                if not is_stored(w[k][n]):
                    continue  # the DecU injects a zero and the PE skips the step
                if dtype == "int32":
                    acc = wrap_int32(acc + wrap_int32(x[m][k] * w[k][n]))
                elif fused_mac:
                    acc = fma_f32(acc, x[m][k], w[k][n])
                else:
                    acc = add_f32(acc, mul_f32(x[m][k], w[k][n]))
            y[m][n] = acc
    return y


def vectors(k_size, n_size, rows, cols, vector):
    """The pruning vectors, in flat-index order, each a list of (k, n) cells (spec §2.3)."""
    out = []
    if vector == "row":
        for k in range(k_size):
            for n0 in range(0, n_size, cols):
                out.append([(k, n) for n in range(n0, min(n0 + cols, n_size))])
    elif vector == "col":
        for k0 in range(0, k_size, rows):
            for n in range(n_size):
                out.append([(k, n) for k in range(k0, min(k0 + rows, k_size))])
    else:  # channel
        for n in range(n_size):
            out.append([(k, n) for k in range(k_size)])
    return out


def score(w, cells, criterion):
    if criterion == "l1":
        return math.fsum(abs(w[k][n]) for k, n in cells)
    return math.sqrt(math.fsum(w[k][n] ** 2 for k, n in cells))


def prune(w, sparsity, rows, cols, vector, criterion="l2"):
    """Returns (pruned weight, keep mask, scores in flat order, pruned flat indices)."""
    k_size, n_size = len(w), len(w[0])
    vecs = vectors(k_size, n_size, rows, cols, vector)
    scores = [score(w, cells, criterion) for cells in vecs]
    n_pruned = math.floor(Decimal(repr(sparsity)) * len(vecs))
    order = sorted(range(len(vecs)), key=lambda i: (scores[i], i))
    pruned_ids = set(order[:n_pruned])
    keep = [[True] * n_size for _ in range(k_size)]
    for i in pruned_ids:
        for k, n in vecs[i]:
            keep[k][n] = False
    zero = 0.0 if isinstance(w[0][0], float) else 0
    out = [[w[k][n] if keep[k][n] else zero for n in range(n_size)] for k in range(k_size)]
    return out, keep, scores, pruned_ids


def encode(w, rows, cols, vector):
    """Spec §2.4, tile by tile: (vector bits, element bits, values, metadata bits per tile)."""
    k_size, n_size = len(w), len(w[0])
    vector_bits, element_bits, values, tile_meta, tile_nnz = [], [], [], [], []
    for k0 in range(0, k_size, rows):
        for n0 in range(0, n_size, cols):
            ks = range(k0, min(k0 + rows, k_size))
            ns = range(n0, min(n0 + cols, n_size))
            if vector == "row":
                tile_vectors = [[(k, n) for n in ns] for k in ks]
            else:
                tile_vectors = [[(k, n) for k in ks] for n in ns]
            meta = len(tile_vectors)  # V bits
            nnz = 0
            for cells in tile_vectors:
                vector_bits.append(any(is_stored(w[k][n]) for k, n in cells))
            for cells, nonzero in zip(tile_vectors, vector_bits[-len(tile_vectors) :]):
                if not nonzero:
                    continue
                meta += len(cells)  # L_v bits
                for k, n in cells:
                    element_bits.append(is_stored(w[k][n]))
                    if element_bits[-1]:
                        values.append(w[k][n])
                        nnz += 1
            tile_meta.append(meta)
            tile_nnz.append(nnz)
    return vector_bits, element_bits, values, tile_meta, tile_nnz
