"""SoftEx cluster cost model (softex.md §6): RedMulE for products, SoftEx for softmax and GELU,
the 8 RISC-V cores for everything else. Ops run one after another (no overlap modelled).

Cycle formulas (softex.md §6.3):
- product: batch·⌈M·K·N / (FMA units · u)⌉
- softmax: one job per row, 3⌈L/V⌉ + c_job per row, c_job = 41 + 2(log2 V − 3); the first job
  also waits c_prog for the cores to program it (later ones are programmed while one runs)
- GELU: N⌈n/V⌉ + c_job_gelu on SoftEx plus n·c_gelu_core/8 on the cores
- other ops: n·c/8 on the cores
With `softex=False` softmax and GELU run in software on the cores, at per-element costs set so
that SW/HW equals the published 10.8 (softmax) and 5.11 (GELU) on long vectors.

Energy is mode power × time (softex.md §6.4); powers at 0.55 V follow C·V²·f from 0.8 V.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from numerics.targets.softex import SoftExOptions

from .config import check_choice, check_non_negative, check_positive, resolve
from .report import Report, Row
from .workload import Workload

SW_REFERENCE_LANES = SoftExOptions.lanes
"""Lanes of the instance behind the published software ratios: the default, the RTL master's 8
(assumption)."""
SW_REFERENCE_TERMS = SoftExOptions.gelu_terms
"""GELU terms behind the published GELU ratio: the default 4 (assumption)."""


@dataclass(frozen=True)
class SoftExConfig:
    """Cost constants of the SoftEx cluster; the lanes and GELU terms are hardware options
    (:class:`numerics.targets.softex.SoftExOptions`). FITTED fields are overridden by
    hwmodels/fitted.json."""

    FITTED = (
        "redmule_utilisation",
        "freq_hz_0v55",
        "gelu_core_cycles",
        "core_op_cycles",
        "core_norm_cycles",
        "l1_contention",
        "redmule_power_w",
        "softex_power_w",
        "cores_power_w",
    )

    fma_units: int = 192
    """RedMulE FMA units (24×8 BF16 array; paper)."""
    redmule_utilisation: float = 0.9
    """Fraction of RedMulE peak reached on products. Fitted; assumption until calibrated:
    RedMulE reports 99.4 % on its 12×4 instance (arXiv 2301.03904), lowered for skinny GEMMs."""
    freq_hz_0v8: float = 1.12e9
    """Clock at 0.8 V, Hz (paper)."""
    freq_hz_0v55: float = 0.5e9
    """Clock at 0.55 V, Hz. Fitted; assumption until calibrated: not published, about 45 % of
    the 0.8 V clock as usual for a 12 nm near-threshold point."""
    cores: int = 8
    """RISC-V cores in the cluster (paper)."""
    softmax_job_cycles: int = 41
    """Fixed cycles per softmax job at V = 8: stream starts, accumulator fill, reduction,
    inversion (third-party GVSoC model, gvsoc-pulp pulp/softex/)."""
    tree_level_cycles: int = 2
    """Extra job cycles per adder-tree level beyond V = 8 (assumption: 2 per level)."""
    prog_cycles: int = 30
    """Core cycles to program a job (acquire, ~6 register writes, trigger; assumption)."""
    gelu_job_cycles: int = 20
    """Fixed cycles per GELU job (assumption: stream start and pipeline fill)."""
    gelu_core_cycles: float = 4.0
    """Core cycles per GELU element for x² and the final combination. Fitted; assumption until
    calibrated: two FP multiplies plus load/store."""
    core_op_cycles: float = 2.0
    """Core cycles per element of element-wise ops, activations and data movement. Fitted;
    assumption until calibrated: load, op, store with post-increment addressing."""
    core_norm_cycles: float = 8.0
    """Core cycles per LayerNorm element (mean, variance, normalise, affine). Fitted; assumption
    until calibrated: 8 ops per element, as in the HASTILY and Atleus specs."""
    l1_contention: float = 1.0
    """Slowdown of RedMulE and SoftEx from L1 contention. Fitted; 1.0 = none (no overlap is
    modelled)."""
    sw_softmax_ratio: float = 10.8
    """Software/SoftEx softmax time on long vectors (paper: "up to 10.8x")."""
    sw_gelu_ratio: float = 5.11
    """Software/SoftEx GELU time on long vectors (paper: "up to 5.11x")."""
    redmule_power_w: float = 0.49
    """Cluster power at 0.8 V while RedMulE runs, W. Fitted; assumption until calibrated:
    1.34 TOPS/W at 0.55 V with RedMulE-dominated ViT time at 310 GOPS, scaled by C·V²·f."""
    softex_power_w: float = 0.30
    """Cluster power at 0.8 V while SoftEx runs, W. Fitted; assumption until calibrated; equal to
    the cores' power because the softmax energy ratio equals its speed ratio (derived)."""
    cores_power_w: float = 0.30
    """Cluster power at 0.8 V while the 8 cores run, W. Fitted; assumption until calibrated."""

    def __post_init__(self):
        check_positive(self, "fma_units", "cores", integer=True)
        check_positive(
            self,
            "redmule_utilisation",
            "freq_hz_0v8",
            "freq_hz_0v55",
            "l1_contention",
            "sw_softmax_ratio",
            "sw_gelu_ratio",
        )
        check_non_negative(
            self,
            "softmax_job_cycles",
            "tree_level_cycles",
            "prog_cycles",
            "gelu_job_cycles",
            "gelu_core_cycles",
            "core_op_cycles",
            "core_norm_cycles",
            "redmule_power_w",
            "softex_power_w",
            "cores_power_w",
        )
        if self.redmule_utilisation > 1:
            raise ValueError(f"redmule_utilisation must be in (0, 1], got {self.redmule_utilisation}")

    def softmax_job(self, lanes: int) -> int:
        """Fixed cycles per softmax job at ``lanes`` lanes."""
        return self.softmax_job_cycles + self.tree_level_cycles * (math.ceil(math.log2(lanes)) - 3)

    @property
    def sw_softmax_cycles(self) -> float:
        """Cluster cycles per element of software softmax: the ratio times SoftEx's asymptotic
        3/V cycles per element at the reference lanes (derived)."""
        return self.sw_softmax_ratio * 3 / SW_REFERENCE_LANES

    @property
    def sw_gelu_cycles(self) -> float:
        """Cluster cycles per element of software GELU: the ratio times SoftEx's asymptotic
        N/V + c_gelu_core/cores at the reference instance (derived)."""
        return self.sw_gelu_ratio * (SW_REFERENCE_TERMS / SW_REFERENCE_LANES + self.gelu_core_cycles / self.cores)


SOFTEX = SoftExConfig()
"""The paper's cluster (arXiv 2412.06321)."""
DEFAULT_CONFIG = SOFTEX

OPTIONS = {"softex": True, "voltage": 0.8}
"""Behaviour options: softex=False runs softmax and GELU on the cores (the paper's baseline);
voltage selects the 0.8 V or 0.55 V operating point."""


def estimate(workload: Workload, *, hardware: SoftExOptions, config: SoftExConfig | None = None, **options) -> Report:
    """Cycles and energy of `workload` on the SoftEx cluster described by `hardware`."""
    opts, cfg = resolve("softex", options, OPTIONS, SOFTEX, config)
    check_choice("voltage", opts["voltage"], (0.8, 0.55))
    check_choice("softex", opts["softex"], (True, False))
    freq = cfg.freq_hz_0v8 if opts["voltage"] == 0.8 else cfg.freq_hz_0v55
    # energy per cycle = P(V)/f(V) = P(0.8 V)·(V/0.8)²/f(0.8 V)  (C·V²·f scaling)
    pj_per_cycle = {
        mode: power * (opts["voltage"] / 0.8) ** 2 / cfg.freq_hz_0v8 * 1e12
        for mode, power in (
            ("redmule", cfg.redmule_power_w),
            ("softex", cfg.softex_power_w),
            ("cores", cfg.cores_power_w),
        )
    }
    V, rows = hardware.lanes, []

    def row(op, unit, **cycles_by_mode):
        cycles = {mode: math.ceil(c) for mode, c in cycles_by_mode.items()}
        return Row.of(op, unit, sum(cycles.values()), {mode: c * pj_per_cycle[mode] for mode, c in cycles.items()})

    for op in workload.ops:
        if op.kind == "matmul":
            per = math.ceil(op.m * op.k * op.n / (cfg.fma_units * cfg.redmule_utilisation))
            rows.append(row(op, "redmule", redmule=op.batch * per * cfg.l1_contention))
        elif op.kind == "softmax" and opts["softex"]:
            job = 3 * math.ceil(op.n / V) + cfg.softmax_job(V)
            idle = max(0, cfg.prog_cycles - job)  # the next job is programmed while one runs
            cycles = op.rows * job + cfg.prog_cycles + (op.rows - 1) * idle if op.rows else 0
            rows.append(row(op, "softex", softex=cycles * cfg.l1_contention))
        elif op.kind == "gelu" and opts["softex"]:
            n = op.elements
            rows.append(
                row(
                    op,
                    "softex",
                    softex=(hardware.gelu_terms * math.ceil(n / V) + cfg.gelu_job_cycles) * cfg.l1_contention,
                    cores=n * cfg.gelu_core_cycles / cfg.cores,
                )
            )
        else:
            per_element = {
                "softmax": cfg.sw_softmax_cycles,
                "gelu": cfg.sw_gelu_cycles,
                "norm": cfg.core_norm_cycles / cfg.cores,
            }.get(op.kind, cfg.core_op_cycles / cfg.cores)
            rows.append(row(op, "cores", cores=op.elements * per_element))
    return Report(
        "softex",
        rows,
        sum(r.cycles for r in rows),
        freq,
        options={**hardware.as_dict(), **opts, "config": cfg},
        workload=workload.name,
    )
