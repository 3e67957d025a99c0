"""FlexiSAGA cost model (flexisaga.md §4): every product on the R×C array with its best of the
seven dataflows (or a forced one), sparse dataflows for pruned static weights; softmax, norms and
other non-GEMM ops on a host at 1 cycle per element (the PE ALU has no exp or divide).

The array (size, PE data type, word size, clock) and the pruning are hardware options
(:class:`numerics.targets.flexisaga.FlexiSAGAOptions`, whose ``array`` is the one
:class:`numerics.sparsity.FlexiSAGAConfig`); this module holds only cost constants. Which weights
are pruned:
- a workload traced from an emulated model (or ``estimate(model, "flexisaga", ...)``, which prices
  an emulated copy) carries the emulation's masks: each pruned layer costs its own mask;
- a workload without masks (traced from a plain model, or built by hand) gets the options'
  ``sparsity`` uniformly in every static product inside the blocks (§3 property 4), orientation
  ``vector`` (``"auto"``: the faster; ``"channel"`` prunes whole columns, i.e. ``"col"``).

Energy (§4.5; assumptions, for relative comparisons only): executed MACs·e_MAC + 3 register-file
accesses per MAC + SRAM words of the per-fold traffic of §4.4 + DRAM words (each operand read
once, Y written once) + DecU-decoded elements. Skipped steps cost no MAC or RF energy, and a
row's `operations` counts the MACs executed (a sparse dataflow's skipped ones excluded). Host
energy is not modelled (0).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

from numerics.sparsity import FlexiSAGAConfig as ArrayConfig
from numerics.targets.flexisaga import FlexiSAGAOptions

from .config import check_choice, check_non_negative, check_positive, fitted_config, resolve
from .report import Report, Row
from .systolic import (
    DATAFLOWS,
    DENSE,
    SPARSE,
    SparsePattern,
    ceil_div,
    gemm_cycles,
    normalize_dataflow,
    sparse_gemm_cycles,
)
from .workload import Op, Workload

MAC_ENERGY_PJ = {"float32": 4.6, "int32": 3.2}
"""MAC energy at 45 nm: fp32 3.7 mult + 0.9 add, int32 3.1 + 0.1 (Horowitz, ISSCC 2014)."""
_DENSE_OF = {"sos": "dos", "sws": "dws", "sis": "dis", "csos": "dos"}


@dataclass(frozen=True)
class FlexiSAGACost:
    """Cost constants of FlexiSAGA (flexisaga.md §4); the array is described by the hardware options
    (``FlexiSAGAOptions.array``). FITTED fields are overridden by hwmodels/fitted.json."""

    FITTED = ("fold_overhead", "skip_efficiency")

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
        check_positive(self, "energy_scale")
        check_non_negative(
            self, "e_sram_pj", "e_dram_pj", "e_rf_pj", "rf_accesses_per_mac", "e_dec_pj", "host_cycles_per_element"
        )
        if self.fold_overhead is not None and (
            isinstance(self.fold_overhead, bool) or not isinstance(self.fold_overhead, int) or self.fold_overhead < 0
        ):
            raise ValueError(f"fold_overhead must be an int >= 0 or None, got {self.fold_overhead!r}")
        if not 0 < self.skip_efficiency <= 1:
            raise ValueError(f"skip_efficiency must be in (0, 1], got {self.skip_efficiency}")


FLEXISAGA = FlexiSAGACost()
"""The cost constants of the spec (flexisaga.md §4)."""
DEFAULT_CONFIG = FLEXISAGA

OPTIONS = {"dataflow": None, "sparse": True, "non_gemm": True, "metadata": True, "decoder": True}
"""Behaviour options: dataflow (force one of the seven for every product; a sparse one falls
back to its dense counterpart where no sparsity applies), sparse=False for dense dataflows only,
non_gemm=False to leave the host ops out of the cycle count; metadata=False loads only the nonzero
weights (no bitmap words) and decoder=False drops the DecU's zero-injection energy (ablation 4 of
flexisaga.md §5: what the format's overheads cost)."""

LEGACY_OPTIONS = {
    "rows": (
        "the array size is the hardware option tile=(rows, cols)",
        lambda v, out, given: {**out, "tile": (v, given.get("cols", FlexiSAGAOptions.tile[1]))},
    ),
    "cols": (
        "the array size is the hardware option tile=(rows, cols)",
        lambda v, out, given: {**out, "tile": (given.get("rows", FlexiSAGAOptions.tile[0]), v)},
    ),
}
"""Cost-model spellings of hardware options from before the one description."""


def __getattr__(name):
    if name == "FlexiSAGAConfig":  # the cost constants' former name; the array is numerics' FlexiSAGAConfig
        warnings.warn(
            "hwmodels.flexisaga.FlexiSAGAConfig is now FlexiSAGACost (cost constants); the "
            "array is numerics.sparsity.FlexiSAGAConfig",
            DeprecationWarning,
            stacklevel=2,
        )
        return FlexiSAGACost
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def auto_cycles(weight_kn, m: int, rows: int, cols: int) -> int:
    """Best sparse-dataflow cycles of (m×K)·W for a pruned K×N weight: the cycle count
    ``vector="auto"`` compares (flexisaga.md §2.3, §4.2), at the fitted fold overhead."""
    pattern = SparsePattern.from_mask(weight_kn, rows, cols)
    alpha = fitted_config(FLEXISAGA, "flexisaga").fold_overhead
    return min(sparse_gemm_cycles(m, pattern, d, fold_overhead=alpha) for d in SPARSE)


def _pattern(op: Op, arr: ArrayConfig, cfg: FlexiSAGACost, masks: bool, opts: dict):
    """SparsePattern of a static product's weight, or None (dense / not eligible)."""
    if not (op.static and opts["sparse"]):
        return None
    R, C = arr.rows, arr.cols
    if not masks:
        if op.layer is None or op.batch != 1:  # embeddings, heads and grouped convs stay dense
            return None
        s = cfg.skip_efficiency * arr.sparsity
        if s == 0:
            return None
        vector = "col" if arr.vector == "channel" else arr.vector  # whole output columns
        if vector != "auto":
            return SparsePattern.uniform(op.k, op.n, R, C, s, vector)
        row, col = (SparsePattern.uniform(op.k, op.n, R, C, s, v) for v in ("row", "col"))

        def best(p):
            return min(sparse_gemm_cycles(op.m, p, d, fold_overhead=cfg.fold_overhead) for d in SPARSE)

        return row if best(row) <= best(col) else col
    w = op.weight
    if w is None or op.batch != 1 or tuple(w.shape) != (op.k, op.n):
        return None
    return _mask_pattern(w, R, C, op.weight_zero_fraction * w.numel())


def _mask_pattern(w, R: int, C: int, zeros):
    """The SparsePattern of a (K, N) weight with ``zeros`` zero elements, or None when there are fewer than
    min(R, C, K, N): a skippable vector needs that many, so fewer cannot change any count."""
    if zeros < min(R, C, *w.shape):
        return None
    return SparsePattern.from_mask(w, R, C)


def _patterns(op: Op, arr: ArrayConfig, cfg: FlexiSAGACost, masks: bool, opts: dict) -> list:
    """The SparsePattern (or None: dense) of each of the op's ``batch`` products: one entry standing for
    all of them, except a grouped convolution traced from an emulated model, whose groups each have
    their own mask (columns g·N .. (g+1)·N of its K × C_out weight)."""
    w = op.weight
    grouped = masks and op.static and opts["sparse"] and op.batch > 1 and w is not None
    if not (grouped and tuple(w.shape) == (op.k, op.batch * op.n)):
        return [_pattern(op, arr, cfg, masks, opts)]
    groups = w.unflatten(1, (op.batch, op.n)).unbind(1)
    return [_mask_pattern(g, arr.rows, arr.cols, int((g == 0).sum())) for g in groups]


def _traffic(M, K, N, cfg, dataflow, p, metadata=True):
    """(executed MACs, SRAM words, DRAM words, decoded elements) of one product (§4.4); without
    `metadata` the sparse weight loads carry no bitmap words."""
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
    w_words = p.nnz + (ceil_div(meta_bits, cfg.word_bits) if metadata else 0)
    return M * steps, x_loads + w_words * streams + stores, M * K + w_words + M * N, steps * streams


def estimate(
    workload: Workload, *, hardware: FlexiSAGAOptions, config: FlexiSAGACost | None = None, **options
) -> Report:
    """Cycles and energy of `workload` on the FlexiSAGA array described by `hardware`."""
    opts, cfg = resolve("flexisaga", options, OPTIONS, FLEXISAGA, config)
    if opts["dataflow"] is not None:
        opts["dataflow"] = normalize_dataflow(opts["dataflow"])
    check_choice("sparse", opts["sparse"], (True, False))
    check_choice("non_gemm", opts["non_gemm"], (True, False))
    check_choice("metadata", opts["metadata"], (True, False))
    check_choice("decoder", opts["decoder"], (True, False))
    arr = hardware.array
    masks = workload.hardware is not None  # traced from an emulated model: its masks are in the weights
    if not masks and not hardware.same_in_every_layer and any(op.kind == "matmul" for op in workload.ops):
        raise ValueError(
            "per-layer sparsity (a dict, a function, or allocation='global') needs the emulated model's masks: "
            "estimate the model (or an emulated copy), not a bare workload"
        )
    e_mac = MAC_ENERGY_PJ[arr.dtype] * cfg.energy_scale
    rows = []
    for op in workload.ops:
        if op.kind != "matmul":
            cycles = op.elements * cfg.host_cycles_per_element if opts["non_gemm"] else 0
            rows.append(Row.of(op, "host", math.ceil(cycles), {}))
            continue
        if op.macs == 0:
            rows.append(Row.of(op, "array", 0, {}))
            continue
        ps = _patterns(op, arr, cfg, masks, opts)
        b = op.batch // len(ps)  # products each entry of ps stands for
        sparse = any(p is not None for p in ps)
        forced = opts["dataflow"]
        if forced is not None and not sparse:
            forced = _DENSE_OF.get(forced, forced)
        candidates = [forced] if forced else (DATAFLOWS if sparse else DENSE)
        best = None
        for candidate in candidates:  # one dataflow for the whole op
            dense = gemm_cycles(
                op.m,
                op.k,
                op.n,
                arr.rows,
                arr.cols,
                _DENSE_OF.get(candidate, candidate),
                fold_overhead=cfg.fold_overhead,
            )
            cycles = sum(
                dense
                if candidate in DENSE or p is None
                else sparse_gemm_cycles(op.m, p, candidate, fold_overhead=cfg.fold_overhead)
                for p in ps
            )
            if best is None or cycles < best[1]:  # ties keep the earlier one (§4.3 order)
                best = (candidate, cycles)
        name, cycles = best
        traffic = [
            _traffic(op.m, op.k, op.n, arr, name if p is not None else _DENSE_OF.get(name, name), p, opts["metadata"])
            for p in ps
        ]
        macs, sram, dram, decoded = (sum(t[i] for t in traffic) for i in range(4))
        energy = {
            "mac": b * macs * e_mac,
            "register_file": b * macs * cfg.rf_accesses_per_mac * cfg.e_rf_pj,
            "sram": b * sram * cfg.e_sram_pj,
            "dram": b * dram * cfg.e_dram_pj,
            "decoder": b * decoded * cfg.e_dec_pj if opts["decoder"] else 0.0,
        }
        rows.append(
            Row.of(op, "array", b * cycles, energy, name=f"{op.name} [{name}]", operations=b * macs)
        )  # executed MACs: skipped steps do no work
    notes = (
        ()
        if masks
        else (
            f"no masks in the workload: uniform sparsity {arr.sparsity} "
            f"({arr.vector} vectors) in every static product inside the blocks",
        )
    )
    return Report(
        "flexisaga",
        rows,
        sum(r.cycles for r in rows),
        arr.freq_hz,
        options={**hardware.as_dict(), **opts, "config": cfg},
        notes=notes,
        workload=workload.name,
    )
