"""SoftEx cluster cost model (softex.md §6): RedMulE for products, SoftEx for softmax and GELU,
the 8 RISC-V cores for everything else. Ops run one after another unless `overlap=True`.

Cycle formulas (softex.md §6.3):
- product: batch·⌈M·K·N / (FMA units · u)⌉
- softmax: one job per row, 3⌈L/V⌉ + c_job per row, c_job = 41 + 2(⌈log2 V⌉ − 3); the first job
  waits c_prog for the cores to program it (later ones are programmed while one runs, and a job
  shorter than c_prog leaves SoftEx waiting for the difference). With `softmax_chunk` a row runs
  in split mode, one ACC_ONLY and one DIV_ONLY job per chunk, and with more rows in flight than
  state slots every resumed job fills its slot from L1 and spills another (softex.md §6.3)
- GELU: N⌈n/V⌉ + c_job_gelu on SoftEx plus n·c_gelu_core/8 on the cores
- other ops: n·c/8 on the cores
- `overlap=True`: an attention's products, core ops and softmax pipeline over its heads
With `softex=False` softmax and GELU run in software on the cores, at per-element costs set so
that SW/HW equals the published 10.8 (softmax) and 5.11 (GELU) on long vectors.

Energy is mode power × time (softex.md §6.4), with an idle mode for the cycles SoftEx waits on
the cores; powers at 0.55 V follow C·V²·f from 0.8 V.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from numerics.targets.softex import SoftExOptions

from .config import check_choice, check_non_negative, check_positive, resolve
from .report import PJ, Report, Row
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
    acc_job_cycles: int = 22
    """Fixed cycles of a split-mode ACC_ONLY job at V = 8: input stream start 5, accumulator fill
    8, reduction of the 4 partials 8, finish 1 (the third-party model's breakdown of the 41 cycles,
    softex.md §6.2; the inversion is a separate term)."""
    inversion_cycles: int = 14
    """Cycles of the denominator inversion, run by the LAST ACC_ONLY job of a split row (the
    breakdown of the 41 cycles, softex.md §6.2)."""
    div_job_cycles: int = 6
    """Fixed cycles of a split-mode DIV_ONLY job: output stream start 5, finish 1 (the breakdown of
    the 41 cycles, softex.md §6.2)."""
    state_slots: int = 2
    """Softmax state slots inside SoftEx; further rows in flight spill to L1 (RTL,
    softex_slot_regfile.sv)."""
    slot_beats: int = 1
    """L1 beats to spill or fill one slot (assumption: its 48 bits of state, a BF16 maximum and one
    FP32 value, fit one beat of the V·16 + 32-bit port; the valid bit is implied)."""
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
    """Slowdown of RedMulE and SoftEx busy cycles from L1 contention. Fitted; 1.0 = none (the
    published figures fit without it, degenerate with the utilisation)."""
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
    idle_power_w: float = 0.03
    """Cluster power at 0.8 V while SoftEx waits for a core to program its next job, W; also the
    base power counted once where units overlap. Assumption: clock-gated units, leakage and the
    clock tree, about a tenth of the active cluster's power; no published figure isolates it."""

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
            "acc_job_cycles",
            "inversion_cycles",
            "div_job_cycles",
            "slot_beats",
            "tree_level_cycles",
            "prog_cycles",
            "gelu_job_cycles",
            "gelu_core_cycles",
            "core_op_cycles",
            "core_norm_cycles",
            "redmule_power_w",
            "softex_power_w",
            "cores_power_w",
            "idle_power_w",
        )
        check_positive(self, "state_slots", integer=True)
        if self.redmule_utilisation > 1:
            raise ValueError(f"redmule_utilisation must be in (0, 1], got {self.redmule_utilisation}")

    def tree_levels_beyond_8(self, lanes: int) -> int:
        """Extra cycles of the adder tree of ``lanes`` lanes over the 3 levels of V = 8."""
        return self.tree_level_cycles * (math.ceil(math.log2(lanes)) - 3)

    def softmax_job(self, lanes: int) -> int:
        """Fixed cycles per softmax job at ``lanes`` lanes."""
        return self.softmax_job_cycles + self.tree_levels_beyond_8(lanes)

    def softmax_row_jobs(self, length: int, lanes: int, chunk: int | None, spill: bool) -> list[int]:
        """Cycles of each SoftEx job that normalises one row of ``length``, in order.

        Unsplit (``chunk`` None or at least the row): one job of 3⌈L/V⌉ + c_job. Split: per chunk
        of b beats an ACC_ONLY job of b + c_acc (+ the inversion on the last chunk), then per
        chunk a DIV_ONLY job of 2b + c_div; with ``spill`` every job after the row's first fills
        its slot from L1 and spills another row's (2 × slot_beats)."""
        if chunk is None or chunk >= length:
            return [3 * math.ceil(length / lanes) + self.softmax_job(lanes)]
        beats = [math.ceil(min(chunk, length - start) / lanes) for start in range(0, length, chunk)]
        swap = 2 * self.slot_beats if spill else 0
        acc = self.acc_job_cycles + self.tree_levels_beyond_8(lanes)
        jobs = [b + acc + (swap if i else 0) for i, b in enumerate(beats)]
        jobs[-1] += self.inversion_cycles
        return jobs + [2 * b + self.div_job_cycles + swap for b in beats]

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

OPTIONS = {"softex": True, "voltage": 0.8, "softmax_chunk": None, "interleaved_rows": 1, "overlap": False}
"""Behaviour options: softex=False runs softmax and GELU on the cores (the paper's baseline);
voltage selects the 0.8 V or 0.55 V operating point; softmax_chunk (elements, None = whole rows)
runs softmax rows in split mode, chunk by chunk, with interleaved_rows rows in flight (more than
the state slots spill and fill them); overlap=True pipelines each attention's products, core ops
and softmax over its heads (softex.md §6.3)."""


def _check_options(opts: dict) -> None:
    check_choice("voltage", opts["voltage"], (0.8, 0.55))
    for name in ("softex", "overlap"):
        check_choice(name, opts[name], (True, False))
    chunk, rows = opts["softmax_chunk"], opts["interleaved_rows"]
    if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1):
        raise ValueError(f"softmax_chunk must be a positive int (elements per job) or None, got {chunk!r}")
    if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
        raise ValueError(f"interleaved_rows must be a positive int, got {rows!r}")
    if rows > 1 and chunk is None:
        raise ValueError("interleaved_rows > 1 needs softmax_chunk: whole rows run one job at a time")


def estimate(workload: Workload, *, hardware: SoftExOptions, config: SoftExConfig | None = None, **options) -> Report:
    """Cycles and energy of `workload` on the SoftEx cluster described by `hardware`."""
    opts, cfg = resolve("softex", options, OPTIONS, SOFTEX, config)
    _check_options(opts)
    if cfg.idle_power_w > min(cfg.redmule_power_w, cfg.softex_power_w, cfg.cores_power_w):
        raise ValueError(f"idle_power_w ({cfg.idle_power_w} W) must not exceed any unit's active power")
    freq = cfg.freq_hz_0v8 if opts["voltage"] == 0.8 else cfg.freq_hz_0v55
    # energy per cycle = P(V)/f(V) = P(0.8 V)·(V/0.8)²/f(0.8 V)  (C·V²·f scaling)
    pj_per_cycle = {
        mode: power * (opts["voltage"] / 0.8) ** 2 / cfg.freq_hz_0v8 * 1e12
        for mode, power in (
            ("redmule", cfg.redmule_power_w),
            ("softex", cfg.softex_power_w),
            ("cores", cfg.cores_power_w),
            ("idle", cfg.idle_power_w),
        )
    }
    V, rows, on_softex = hardware.lanes, [], []  # on_softex: indices of the softmax ops SoftEx runs

    def row(op, unit, **cycles_by_mode):
        cycles = {mode: math.ceil(c) for mode, c in cycles_by_mode.items()}
        return Row.of(op, unit, sum(cycles.values()), {mode: c * pj_per_cycle[mode] for mode, c in cycles.items()})

    for op in workload.ops:
        if op.kind == "matmul":
            per = math.ceil(op.m * op.k * op.n / (cfg.fma_units * cfg.redmule_utilisation))
            rows.append(row(op, "redmule", redmule=op.batch * per * cfg.l1_contention))
        elif op.kind == "softmax" and opts["softex"]:
            spill = min(opts["interleaved_rows"], op.rows) > cfg.state_slots
            jobs = cfg.softmax_row_jobs(op.n, V, opts["softmax_chunk"], spill)
            # the next job is programmed while one runs: SoftEx waits for what outlasts a job
            gaps = [max(0, cfg.prog_cycles - job) for job in jobs]
            busy, wait = op.rows * sum(jobs), cfg.prog_cycles + op.rows * sum(gaps) - gaps[-1]
            if not op.rows:
                busy = wait = 0
            on_softex.append(len(rows))
            rows.append(row(op, "softex", softex=busy * cfg.l1_contention, idle=wait))
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
    total, notes = sum(r.cycles for r in rows), []
    if opts["overlap"]:
        saved = 0
        for first, last, i in _attention_groups(workload.ops, on_softex):
            first_wait = cfg.prog_cycles if workload.ops[i].rows else 0
            group_saved = _pipeline_saving(rows[first : last + 1], workload.ops[first].batch, first_wait)
            # the cluster's base power runs once over the overlapped cycles, not once per unit
            softex = rows[i].components["softex"] - group_saved * pj_per_cycle["idle"] * PJ
            rows[i] = dataclasses.replace(rows[i], components={**rows[i].components, "softex": softex})
            saved += group_saved
        total -= saved
        notes.append(f"overlap: attention pipelined over heads, {saved:,} cycles saved")
    return Report(
        "softex",
        rows,
        total,
        freq,
        options={**hardware.as_dict(), **opts, "config": cfg},
        notes=tuple(notes),
        workload=workload.name,
    )


def _attention_groups(ops, softmax_indices: list[int]):
    """(first, last, softmax index) of each SoftEx softmax between two products, with only core
    ops between them and the products and softmax over the same batch of heads (the core ops'
    work splits evenly over the heads, whatever their shape)."""
    for i in softmax_indices:
        first, last = i - 1, i + 1
        while first >= 0 and ops[first].kind in ("elementwise", "move"):
            first -= 1
        while last < len(ops) and ops[last].kind in ("elementwise", "move"):
            last += 1
        if first < 0 or last >= len(ops) or ops[first].kind != "matmul" or ops[last].kind != "matmul":
            continue
        if ops[first].batch == ops[i].batch == ops[last].batch:
            yield first, last, i


def _pipeline_saving(rows, pieces: int, first_wait: int) -> int:
    """Cycles saved by pipelining `rows` (one attention, in order) over `pieces` heads: one head
    runs the whole chain, every further head costs the busiest unit's share (softex.md §6.3)."""
    per_unit: dict[str, float] = {}
    for r in rows:
        cycles = r.cycles - (first_wait if r.kind == "softmax" else 0)
        per_unit[r.unit] = per_unit.get(r.unit, 0) + cycles / pieces
    pipelined = first_wait + math.ceil(sum(per_unit.values()) + (pieces - 1) * max(per_unit.values()))
    return max(0, sum(r.cycles for r in rows) - pipelined)
