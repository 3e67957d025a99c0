"""FlexiSAGA cost model (flexisaga.md §4): every product on the R×C array with its best of the
seven dataflows (or a forced one), sparse dataflows for static weights that are pruned in the
traced model or given a uniform `sparsity=`; softmax, norms and other non-GEMM ops on a host at
1 cycle per element (the PE ALU has no exp or divide).

Energy (§4.5; assumptions, for relative comparisons only): executed MACs·e_MAC + 3 register-file
accesses per MAC + SRAM words of the per-fold traffic of §4.4 + DRAM words (each operand read
once, Y written once) + DecU-decoded elements. Skipped steps cost no MAC or RF energy, and a
row's `operations` counts the MACs executed (a sparse dataflow's skipped ones excluded). Host
energy is not modelled (0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .config import check_choice, check_non_negative, check_positive, resolve
from .report import Report, Row
from .systolic import (DATAFLOWS, DENSE, SparsePattern, ceil_div, gemm_cycles, normalize_dataflow,
                       sparse_gemm_cycles)
from .workload import Op, Workload

MAC_ENERGY_PJ = {"float32": 4.6, "int32": 3.2}
"""MAC energy at 45 nm: fp32 3.7 mult + 0.9 add, int32 3.1 + 0.1 (Horowitz, ISSCC 2014)."""
_DENSE_OF = {"sos": "dos", "sws": "dws", "sis": "dis", "csos": "dos"}


@dataclass(frozen=True)
class FlexiSAGAConfig:
    """Constants of FlexiSAGA (flexisaga.md §2.1, §4). FITTED fields are overridden by
    hwmodels/fitted.json."""

    FITTED = ("fold_overhead", "skip_efficiency")

    rows: int = 16
    """PE rows R (assumption: evaluated sizes unknown)."""
    cols: int = 16
    """PE columns C (assumption)."""
    freq_hz: float = 1e9
    """Clock, Hz (assumption: not stated; speedups do not depend on it)."""
    dtype: str = "float32"
    """PE arithmetic: "float32" or "int32" (summary)."""
    word_bits: int = 32
    """Memory word, bits (summary)."""
    fold_overhead: int | None = None
    """Skew + drain cycles per fold α. Fitted; None = R + C − 2, the project convention."""
    skip_efficiency: float = 1.0
    """η: a uniform `sparsity=` s acts as η·s. Fitted; 1.0 = every pruned vector is skipped."""
    energy_scale: float = 1.0
    """Multiplier on MAC energy for the unknown technology node (assumption: 45 nm)."""
    e_sram_pj: float = 5.0
    """SRAM energy per 32-bit word, pJ (Horowitz: half of 10 pJ per 64-bit 8 KB read)."""
    e_dram_pj: float = 640.0
    """DRAM energy per 32-bit word, pJ (assumption: common reading of Horowitz's 1.3–2.6 nJ/64 bit)."""
    e_rf_pj: float = 0.5
    """Register-file energy per access, pJ (assumption: about 1/10 of an SRAM access)."""
    rf_accesses_per_mac: int = 3
    """Register-file accesses per executed MAC (assumption)."""
    e_dec_pj: float = 0.1
    """DecU energy per decoded element, pJ (assumption)."""
    host_cycles_per_element: float = 1.0
    """Host cycles per element of a non-GEMM op (assumption)."""

    def __post_init__(self):
        check_positive(self, "rows", "cols", "word_bits", integer=True)
        check_positive(self, "freq_hz", "energy_scale")
        check_non_negative(self, "e_sram_pj", "e_dram_pj", "e_rf_pj", "rf_accesses_per_mac",
                           "e_dec_pj", "host_cycles_per_element")
        check_choice("dtype", self.dtype, tuple(MAC_ENERGY_PJ))
        if self.fold_overhead is not None and (isinstance(self.fold_overhead, bool)
                                               or not isinstance(self.fold_overhead, int)
                                               or self.fold_overhead < 0):
            raise ValueError(f"fold_overhead must be an int >= 0 or None, got {self.fold_overhead!r}")
        if not 0 < self.skip_efficiency <= 1:
            raise ValueError(f"skip_efficiency must be in (0, 1], got {self.skip_efficiency}")


FLEXISAGA = FlexiSAGAConfig()
"""16×16 fp32 array (the spec's assumed size)."""

OPTIONS = {"dataflow": None, "sparsity": None, "vector": "auto", "sparse": True, "non_gemm": True}
"""Behaviour options: dataflow (force one of the seven for every product; a sparse one falls
back to its dense counterpart where no sparsity applies), sparsity (uniform fraction in [0, 1)
of vectors pruned in every static weight inside the blocks; None = read zeros from the traced
weights), vector="row"|"col"|"auto" orientation of a uniform sparsity, sparse=False for dense
dataflows only, non_gemm=False to leave the host ops out of the cycle count."""


def _pattern(op: Op, cfg: FlexiSAGAConfig, opts: dict):
    """SparsePattern of a static product's weight, or None (dense / not eligible)."""
    if not (op.static and opts["sparse"]):
        return None
    R, C = cfg.rows, cfg.cols
    if opts["sparsity"] is not None:
        if op.layer is None or op.batch != 1:  # embeddings, heads and grouped convs stay dense
            return None
        s = cfg.skip_efficiency * opts["sparsity"]
        if opts["vector"] != "auto":
            return SparsePattern.uniform(op.k, op.n, R, C, s, opts["vector"])
        row, col = (SparsePattern.uniform(op.k, op.n, R, C, s, v) for v in ("row", "col"))
        best = lambda p: min(sparse_gemm_cycles(op.m, p, d, fold_overhead=cfg.fold_overhead)  # noqa: E731
                             for d in DATAFLOWS[3:])
        return row if best(row) <= best(col) else col
    w = op.weight
    if w is None or op.batch != 1 or tuple(w.shape) != (op.k, op.n):
        return None
    # a skippable vector needs at least min(R, C, K, N) zeros; fewer cannot change any count
    if op.weight_zero_fraction * w.numel() < min(R, C, op.k, op.n):
        return None
    return SparsePattern.from_mask(w, R, C)


def _traffic(M, K, N, cfg, dataflow, p):
    """(executed MACs, SRAM words, DRAM words, decoded elements) of one product (§4.4)."""
    R, C = cfg.rows, cfg.cols
    dense = dataflow in DENSE
    psums = M * N * (ceil_div(K, R) - 1)
    if dataflow in ("dos", "sos", "csos"):
        streams = ceil_div(M, R)
        x_loads, w_dense, stores = M * K * ceil_div(N, C), N * K * streams, M * N
    elif dataflow in ("dws", "sws"):
        streams = 1
        x_loads, w_dense, stores = M * K * ceil_div(N, C) + psums, K * N, M * N * ceil_div(K, R)
    else:
        streams = ceil_div(M, C)
        x_loads, w_dense, stores = K * M + psums, K * N * streams, M * N * ceil_div(K, R)
    if dense:
        return M * K * N, x_loads + w_dense + stores, M * K + K * N + M * N, 0
    if dataflow == "sis":
        steps = int((p.n_nz * p.heights()).sum())  # kept (k, n) pairs
        meta_bits = ceil_div(K, R) * ceil_div(N, C) * C + R * int(p.n_nz.sum())
    else:
        k_nz = p.k_nz_packed if dataflow == "csos" else p.k_nz
        steps = int((k_nz * p.widths(dataflow == "csos")).sum())
        meta_bits = ceil_div(K, R) * ceil_div(N, C) * R + C * int(p.k_nz.sum())
        if dataflow != "sws":  # sOS and csOS do not load the X column of a skipped k
            x_loads = M * int(k_nz.sum())
    w_words = p.nnz + ceil_div(meta_bits, cfg.word_bits)
    return M * steps, x_loads + w_words * streams + stores, M * K + w_words + M * N, steps * streams


def estimate(workload: Workload, *, config: FlexiSAGAConfig | None = None, **options) -> Report:
    """Cycles and energy of `workload` on FlexiSAGA."""
    opts, cfg = resolve("flexisaga", options, OPTIONS, FLEXISAGA, config)
    if opts["dataflow"] is not None:
        opts["dataflow"] = normalize_dataflow(opts["dataflow"])
    if opts["sparsity"] is not None and not (isinstance(opts["sparsity"], (int, float))
                                             and 0 <= opts["sparsity"] < 1):
        raise ValueError(f"sparsity must be in [0, 1) or None, got {opts['sparsity']!r}")
    check_choice("vector", opts["vector"], ("row", "col", "auto"))
    check_choice("sparse", opts["sparse"], (True, False))
    check_choice("non_gemm", opts["non_gemm"], (True, False))
    e_mac = MAC_ENERGY_PJ[cfg.dtype] * cfg.energy_scale
    rows = []
    for op in workload.ops:
        if op.kind != "matmul":
            cycles = op.elements * cfg.host_cycles_per_element if opts["non_gemm"] else 0
            rows.append(Row.of(op, "host", math.ceil(cycles), {}))
            continue
        if op.macs == 0:
            rows.append(Row.of(op, "array", 0, {}))
            continue
        p = _pattern(op, cfg, opts)
        forced = opts["dataflow"]
        if forced is not None and p is None:
            forced = _DENSE_OF.get(forced, forced)
        candidates = [forced] if forced else (DATAFLOWS if p is not None else DENSE)
        best = None
        for candidate in candidates:
            cycles = (gemm_cycles(op.m, op.k, op.n, cfg.rows, cfg.cols, candidate,
                                  fold_overhead=cfg.fold_overhead) if candidate in DENSE
                      else sparse_gemm_cycles(op.m, p, candidate, fold_overhead=cfg.fold_overhead))
            if best is None or cycles < best[1]:  # ties keep the earlier one (§4.3 order)
                best = (candidate, cycles)
        name, cycles = best
        macs, sram, dram, decoded = _traffic(op.m, op.k, op.n, cfg, name, p)
        b = op.batch
        energy = {"mac": b * macs * e_mac, "register_file": b * macs * cfg.rf_accesses_per_mac * cfg.e_rf_pj,
                  "sram": b * sram * cfg.e_sram_pj, "dram": b * dram * cfg.e_dram_pj,
                  "decoder": b * decoded * cfg.e_dec_pj}
        rows.append(Row.of(op, "array", b * cycles, energy, name=f"{op.name} [{name}]",
                           operations=b * macs))  # executed MACs: skipped steps do no work
    return Report("flexisaga", rows, sum(r.cycles for r in rows), cfg.freq_hz,
                  options={**opts, "config": cfg}, workload=workload.name)
