"""Cycle counts of a GEMM on an R×C systolic array, dense and weight-sparse.

Project convention (flexisaga.md §4.1, agreeing with the SCALE-Sim v2 compute model): folds run
strictly in sequence and a partial fold costs as much as a full one.
- OS: ⌈M/R⌉·⌈N/C⌉·(R + C + K − 2)
- WS: ⌈K/R⌉·⌈N/C⌉·(2R + C + M − 2)
- IS: ⌈K/R⌉·⌈M/C⌉·(2R + C + N − 2)
The sparse variants (flexisaga.md §4.2, a reconstruction) skip temporal steps whose weight
vector is zero for every PE that would use it; they read a `SparsePattern` of the K×N weight.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from numerics.sparsity import pruned_count

DENSE = ("dos", "dws", "dis")
"""Dense dataflows: output-, weight-, input-stationary."""
SPARSE = ("sos", "sws", "sis", "csos")
"""Sparse dataflows; csOS packs the non-zero output channels first."""
DATAFLOWS = DENSE + SPARSE
"""All seven, in the tie-break order of flexisaga.md §4.3."""


def _positive(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def ceil_div(a: int, b: int) -> int:
    """⌈a / b⌉ for integers (exact, no float rounding)."""
    return -(-a // b)


def normalize_dataflow(dataflow: str) -> str:
    """Canonical lower-case name: "os" and "dOS" both give "dos"."""
    if not isinstance(dataflow, str):
        raise TypeError(f"dataflow must be a str, got {type(dataflow).__name__}")
    name = dataflow.lower()
    name = "d" + name if name in ("os", "ws", "is") else name
    if name not in DATAFLOWS:
        raise ValueError(f"dataflow must be one of os, ws, is or {', '.join(DATAFLOWS)}; got {dataflow!r}")
    return name


def _overhead(R: int, C: int, fold_overhead) -> int:
    """Skew + drain cycles per fold: R + C − 2 by convention, or a calibrated α."""
    if fold_overhead is None:
        return R + C - 2
    if isinstance(fold_overhead, bool) or not isinstance(fold_overhead, int) or fold_overhead < 0:
        raise ValueError(f"fold_overhead must be an int >= 0 or None, got {fold_overhead!r}")
    return fold_overhead


def gemm_cycles(
    M: int, K: int, N: int, rows: int, cols: int, dataflow: str, *, fold_overhead: int | None = None
) -> int:
    """Cycles of a dense (M×K)·(K×N) GEMM on a rows×cols array (flexisaga.md §4.1).

    `fold_overhead` α replaces the R + C − 2 skew and drain of every fold (WS and IS add the R
    preload cycles on top); None keeps the convention."""
    M, K, N = _positive("M", M), _positive("K", K), _positive("N", N)
    R, C = _positive("rows", rows), _positive("cols", cols)
    name = normalize_dataflow(dataflow)
    if name not in DENSE:
        raise ValueError(f"gemm_cycles takes a dense dataflow (os, ws, is); use sparse_gemm_cycles for {dataflow!r}")
    alpha = _overhead(R, C, fold_overhead)
    if name == "dos":
        return ceil_div(M, R) * ceil_div(N, C) * (alpha + K)
    if name == "dws":
        return ceil_div(K, R) * ceil_div(N, C) * (R + alpha + M)
    return ceil_div(K, R) * ceil_div(M, C) * (R + alpha + N)


@dataclass(frozen=True, eq=False)
class SparsePattern:
    """What the sparse dataflows need to know about a K×N weight on an R×C array.

    Built from a mask (`from_mask`) or from a uniform vector sparsity (`uniform`)."""

    K: int
    """Input features (rows of W)."""
    N: int
    """Output features (columns of W)."""
    rows: int
    """Array rows R (tile height along K)."""
    cols: int
    """Array columns C (tile width along N)."""
    k_nz: torch.Tensor
    """Per column tile j: K_nz(j), rows k with a non-zero in W[k, jC:(j+1)C] (int64, ⌈N/C⌉)."""
    n_nz: torch.Tensor
    """Per row tile p: N_nz(p), columns n with a non-zero in W[pR:(p+1)R, n] (int64, ⌈K/R⌉)."""
    k_nz_packed: torch.Tensor
    """K_nz of each group of C non-zero output channels packed in index order (csOS)."""
    nnz: int
    """Non-zero weights."""
    channels_nz: int
    """Output channels with a non-zero weight (packed by csOS)."""

    def widths(self, packed: bool = False) -> torch.Tensor:
        """Width of each column tile (or of each packed channel group): C, the last one less."""
        n = self.channels_nz if packed else self.N
        groups = ceil_div(n, self.cols) if n else 0
        w = torch.full((groups,), self.cols, dtype=torch.int64)
        if groups:
            w[-1] = n - (groups - 1) * self.cols
        return w

    def heights(self) -> torch.Tensor:
        """Height of each row tile: R, the last one less."""
        P = ceil_div(self.K, self.rows)
        h = torch.full((P,), self.rows, dtype=torch.int64)
        h[-1] = self.K - (P - 1) * self.rows
        return h

    @classmethod
    def from_mask(cls, mask: torch.Tensor, rows: int, cols: int) -> "SparsePattern":
        """From a K×N tensor whose non-zero entries are the stored weights."""
        if mask.dim() != 2 or mask.numel() == 0:
            raise ValueError(f"mask must be a non-empty 2-D K×N tensor, got shape {tuple(mask.shape)}")
        R, C = _positive("rows", rows), _positive("cols", cols)
        nz = mask != 0
        K, N = nz.shape
        J, P = ceil_div(N, C), ceil_div(K, R)
        cols_padded = torch.nn.functional.pad(nz, (0, J * C - N))
        k_nz = cols_padded.view(K, J, C).any(2).sum(0)
        rows_padded = torch.nn.functional.pad(nz, (0, 0, 0, P * R - K))
        n_nz = rows_padded.view(P, R, N).any(1).sum(1)
        live = nz.any(0)
        packed = nz[:, live]
        G = ceil_div(packed.shape[1], C)
        packed = torch.nn.functional.pad(packed, (0, G * C - packed.shape[1]))
        k_nz_packed = packed.view(K, G, C).any(2).sum(0)
        return cls(K, N, R, C, k_nz, n_nz, k_nz_packed, int(nz.sum()), int(live.sum()))

    @classmethod
    def uniform(cls, K: int, N: int, rows: int, cols: int, sparsity: float, vector: str = "row") -> "SparsePattern":
        """Uniform structured sparsity: floor(s·K) of the K rows pruned in every column tile
        (`vector="row"`, 1×C vectors) or floor(s·N) of the N columns in every row tile
        (`"col"`, R×1 vectors), as in flexisaga.md §3 property 4."""
        K, N, R, C = (_positive(n, v) for n, v in (("K", K), ("N", N), ("rows", rows), ("cols", cols)))
        if not 0.0 <= sparsity < 1.0:
            raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
        J, P = ceil_div(N, C), ceil_div(K, R)
        full = lambda length, value: torch.full((length,), value, dtype=torch.int64)  # noqa: E731
        if vector == "row":
            kept = K - pruned_count(sparsity, K)
            return cls(K, N, R, C, full(J, kept), full(P, N), full(J, kept), kept * N, N)
        if vector == "col":
            kept = N - pruned_count(sparsity, N)
            return cls(K, N, R, C, full(J, K), full(P, kept), full(J, K), kept * K, N)
        raise ValueError(f"vector must be 'row' or 'col', got {vector!r}")


def sparse_gemm_cycles(M: int, pattern: SparsePattern, dataflow: str, *, fold_overhead: int | None = None) -> int:
    """Cycles of (M×K)·W with W described by `pattern` (flexisaga.md §4.2).

    A fold with no non-zero vector costs 0 cycles. Dense dataflow names are accepted too and
    ignore the sparsity. `fold_overhead` as in gemm_cycles."""
    M = _positive("M", M)
    R, C = pattern.rows, pattern.cols
    name = normalize_dataflow(dataflow)
    if name in DENSE:
        return gemm_cycles(M, pattern.K, pattern.N, R, C, name, fold_overhead=fold_overhead)
    alpha = _overhead(R, C, fold_overhead)
    if name in ("sos", "csos"):
        k_nz = pattern.k_nz if name == "sos" else pattern.k_nz_packed
        live = k_nz[k_nz > 0]
        return ceil_div(M, R) * int((live + alpha).sum())
    if name == "sis":
        live = pattern.n_nz[pattern.n_nz > 0]
        return ceil_div(M, C) * int((live + (R + alpha)).sum())
    folds = int(((pattern.k_nz + R - 1) // R).sum())  # sWS: non-zero K-rows compacted per column tile
    return folds * (R + alpha + M)


def best_dataflow(
    M: int,
    K: int,
    N: int,
    rows: int,
    cols: int,
    pattern: SparsePattern | None = None,
    *,
    fold_overhead: int | None = None,
) -> tuple[str, int]:
    """(dataflow, cycles) minimising cycles; sparse dataflows only with a pattern. Ties go to
    the first in DATAFLOWS order (flexisaga.md §4.3)."""
    if pattern is not None and (pattern.K, pattern.N, pattern.rows, pattern.cols) != (K, N, rows, cols):
        raise ValueError(
            f"pattern is for K={pattern.K}, N={pattern.N} on {pattern.rows}x{pattern.cols}, "
            f"not K={K}, N={N} on {rows}x{cols}"
        )
    candidates = DATAFLOWS if pattern is not None else DENSE
    best = None
    for name in candidates:
        cycles = (
            gemm_cycles(M, K, N, rows, cols, name, fold_overhead=fold_overhead)
            if name in DENSE
            else sparse_gemm_cycles(M, pattern, name, fold_overhead=fold_overhead)
        )
        if best is None or cycles < best[1]:
            best = (name, cycles)
    return best
