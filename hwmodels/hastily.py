"""HASTILY cost model (hastily.md §4): UCLM crossbars for every product, the VFU for softmax,
norms and element-wise work, LUT exponentials in the UCLMs, multi-core softmax reductions.

The arrays' geometry and ADC width come from the hardware description
(:class:`numerics.targets.hastily.HastilyOptions`: ``crossbar``, default ``HASTILY_SRAM``, and
``adc_bits``); this module holds only cost constants. The MVM time is ADC-bound (``mvm_cycles`` at the
preset's 6-bit ADC), so it scales with the ADC width like a SAR conversion, and the ADC's share of the
MVM energy scales with the energy per conversion (hwmodels/adc.py).

Per-row costs (one token row; heads and sequences run in parallel on their own UCLMs):
- product with W (K×N): P = ⌈K/rows⌉, Q = ⌈N/cols⌉ UCLMs fire one MVM each (`mvm_cycles`), then
  (P − 1)·⌈N/W⌉ VFU vector adds spread over the ⌈P·Q/16⌉ cores holding W. A dynamic W (Kᵀ, V)
  is first written into UCLMs: one write per array row of each block, blocks in parallel, or one row per
  token when pipelined.
- softmax row over C = ⌈l/(16·cols)⌉ cores (1 without `multicore_softmax`), l_c = ⌈l/C⌉:
  ⌈l_c/W⌉·(max + sub + mul + add + div) + T_exp + 2·Σ t_level over ⌈log2 C⌉ tree levels, with
  T_exp = ⌈l_c/W⌉·(n/d extraction + shift) + 4·⌈l_c/128⌉ (LUT) or ⌈l_c/W⌉·c_exp (VFU).
- LayerNorm 8 VFU ops per element, GELU and other activations `gelu_vfu_cycles` /
  `exp_vfu_cycles`, element-wise 1, data movement over the 512-bit bus. Vector work stays on the
  cores holding its row: the ⌈n/W⌉ vector steps of a row are spread over the ⌈P·Q/16⌉ cores of the
  product that made it, like that product's partial-sum adds (hastily.md §4: "all work is pipelined
  row by row" on the cores; a row before any product is on one core). Exchanging a LayerNorm's mean
  and variance between those cores is not priced, as the spec prices a LayerNorm row as 8 VFU ops
  per element only.
Pipelined (default): ops inside the repeated blocks form a row-by-row pipeline,
T = ⌈b/2⌉·(N_layers + min(b, 2))·l·T_stage with T_stage the slowest per-row op (paper:
(N + 1)·l·T at b = 1; the b = 2 overlap is a reconstruction; batch 4 repeats batch 2), or the ops
in sequence if that is faster (the better schedule is taken).
Not pipelined (PUMA-style): every op runs over all its rows in sequence, and a score matrix
larger than the 32 MB of shared memory spills to DRAM.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from numerics.crossbar import HASTILY_SRAM
from numerics.targets.hastily import HastilyOptions

from .adc import adc_energy_pj, adc_time_factor, ceil_scaled, extrapolation_note
from .config import check_choice, check_non_negative, check_positive, resolve
from .report import Report, Row
from .systolic import ceil_div
from .workload import Op, Workload, off_chip


@dataclass(frozen=True)
class HastilyConfig:
    """Cost constants of HASTILY (hastily.md §4); array geometry and ADC width are hardware options.
    FITTED fields are overridden by hwmodels/fitted.json."""

    FITTED = ("mvm_cycles", "div_cycles", "exp_vfu_cycles", "level_intra_cycles", "level_inter_cycles", "e_mvm_pj")

    tiles: int = 128
    """Tiles on the chip (paper)."""
    cores_per_tile: int = 8
    """Cores per tile (paper)."""
    uclms_per_core: int = 16
    """UCLMs per core (paper)."""
    freq_hz: float = 1e9
    """Clock, Hz (assumption: not stated; PUMAsim's 32 nm tile runs at 1 GHz)."""
    mvm_cycles: int = 375
    """Cycles of one 64×64 MVM with 8-bit inputs at the reference ADC width
    (``reference_adc_bits``). Fitted; assumption until calibrated: PUMAsim adc_latency·(bits + 2)
    with its 6-bit ADC (75 ns per 128 columns) scaled to 64 columns."""
    reference_adc_bits: int = HASTILY_SRAM.adc_bits
    """ADC width at which ``mvm_cycles`` and ``e_mvm_pj`` hold: the paper's 6 bits (HASTILY_SRAM)."""
    adc_energy_share: float = 0.48
    """Share of the UCLM compute-mode energy spent in its ADCs at the reference width (paper:
    ADC ≈ 48 % of UCLM power, hastily.md §4); this share scales with the energy per conversion."""
    lookup_cycles: int = 4
    """Cycles of one UCLM lookup (save row, write ones, read, restore; paper)."""
    vfu_lanes: int = 64
    """VFU lanes W (paper; 16 is also evaluated)."""
    vfu_op_cycles: int = 1
    """Cycles per VFU vector op: max, sub, add, mul, shift (assumption: PUMAsim single-cycle ALU)."""
    nd_cycles: int = 2
    """Cycles to extract n and d for the LUT exponential (assumption)."""
    div_cycles: int = 1
    """Cycles per VFU division. Fitted; assumption until calibrated: single-cycle like the ALU."""
    exp_vfu_cycles: int = 10
    """Cycles per element-lane of a VFU exponential (PUMA baseline). Fitted; assumption until
    calibrated: range reduction + short polynomial. Also used for other activations."""
    gelu_vfu_cycles: int = 14
    """Cycles per element-lane of GELU on the VFU (assumption: one exponential-class evaluation
    plus 4 ops for the GELU combination; the paper keeps GELU in fp32 and gives no cost)."""
    layernorm_ops: int = 8
    """VFU ops per LayerNorm element (assumption)."""
    level_intra_cycles: int = 16
    """Cycles of one intra-tile reduction tree level (gather + broadcast). Fitted; assumption."""
    level_inter_cycles: int = 64
    """Cycles of one inter-tile reduction tree level. Fitted; assumption."""
    kv_row_cycles: int = 1
    """Cycles to write one 64-bit array row; 8 bit-planes in parallel (assumption)."""
    bus_bytes: int = 64
    """Memory bus width, bytes (512 bit; paper)."""
    shared_memory_bytes: int = 128 * 256 * 1024
    """Aggregate tile shared memory, bytes (128 tiles × 256 KB; paper)."""
    e_mvm_pj: float = 22.38 * 375
    """Energy of one UCLM MVM, pJ: 22.38 mW compute-mode power (paper, Table II) × 375 ns MVM time.
    Fitted; assumption until calibrated (the ADC dominates)."""
    e_lookup_pj: float = 0.518 * 4
    """Energy per element lookup, pJ: 0.518 mW lookup-mode power × 4 ns (reconstruction)."""
    e_vfu_pj: float = 1.7
    """Energy per VFU cycle, pJ: 1.7 mW (paper, Table II) × 1 ns. Likely under-costed."""
    e_smem_pj: float = 25.35
    """Energy per shared-memory access, pJ: 25.35 mW × 1 ns (paper, Table II)."""
    e_bus_pj: float = 6.0
    """Energy per 512-bit bus transfer, pJ: 6 mW × 1 ns (paper, Table II)."""
    e_kv_row_pj: float = 3.2
    """Energy per written 64-bit array row, pJ (assumption: ≈0.05 pJ/bit; uncalibrated)."""
    e_dram_pj_per_bit: float = 20.0
    """DRAM energy, pJ/bit (assumption: DDR4-class)."""
    dram_bytes_per_s: float = 25.6e9
    """DRAM bandwidth, bytes/s (assumption: DDR4-class)."""

    def __post_init__(self):
        check_positive(
            self,
            "tiles",
            "cores_per_tile",
            "uclms_per_core",
            "mvm_cycles",
            "reference_adc_bits",
            "lookup_cycles",
            "vfu_lanes",
            "bus_bytes",
            "shared_memory_bytes",
            integer=True,
        )
        check_positive(self, "freq_hz", "dram_bytes_per_s")
        check_non_negative(
            self,
            "vfu_op_cycles",
            "nd_cycles",
            "div_cycles",
            "exp_vfu_cycles",
            "gelu_vfu_cycles",
            "layernorm_ops",
            "level_intra_cycles",
            "level_inter_cycles",
            "kv_row_cycles",
            "e_mvm_pj",
            "e_lookup_pj",
            "e_vfu_pj",
            "e_smem_pj",
            "e_bus_pj",
            "e_kv_row_pj",
            "e_dram_pj_per_bit",
        )
        if not 0 <= self.adc_energy_share <= 1:
            raise ValueError(f"adc_energy_share must be in [0, 1], got {self.adc_energy_share}")

    @property
    def uclms(self) -> int:
        """UCLMs on the chip (16,384 for the paper's configuration)."""
        return self.tiles * self.cores_per_tile * self.uclms_per_core


HASTILY = HastilyConfig()
"""The paper's configuration (arXiv 2502.12344)."""
DEFAULT_CONFIG = HASTILY

OPTIONS = {"exp": "lut", "multicore_softmax": True, "pipelining": True}
"""Behaviour options: exp="lut"|"vfu", multicore_softmax, pipelining. exp="vfu" with
multicore_softmax=False is the PUMA baseline."""


class _Model:
    def __init__(self, cfg: HastilyConfig, opts: dict, hardware: HastilyOptions):
        self.cfg, self.opts = cfg, opts
        self.crossbar = hardware.effective_crossbar
        adc = self.crossbar.adc_bits
        self.mvm_cycles = ceil_scaled(cfg.mvm_cycles, adc_time_factor(adc, cfg.reference_adc_bits))
        adc_ratio = adc_energy_pj(adc) / adc_energy_pj(cfg.reference_adc_bits)
        self.e_mvm_pj = cfg.e_mvm_pj * (1 - cfg.adc_energy_share + cfg.adc_energy_share * adc_ratio)
        self.kv_columns_per_core = cfg.uclms_per_core * self.crossbar.cols  # Kᵀ positions one core holds
        self.lookup_arrays = cfg.uclms_per_core * self.crossbar.slices  # arrays looking up in parallel

    def product(self, op: Op):
        """(per-row cycles, one-off write cycles, per-row pJ by component, write pJ, UCLMs)."""
        cfg, W, xb = self.cfg, self.cfg.vfu_lanes, self.crossbar
        P, Q = ceil_div(op.k, xb.rows), ceil_div(op.n, xb.cols)
        cores = self.cores(op)
        adds = (P - 1) * ceil_div(op.n, W)
        per_row = self.mvm_cycles + ceil_div(adds, cores) * cfg.vfu_op_cycles
        transfers = ceil_div(op.k, cfg.bus_bytes) + ceil_div(op.n, cfg.bus_bytes)
        energy = {
            "uclm_mvm": op.batch * P * Q * self.e_mvm_pj,
            "vfu": op.batch * adds * cfg.vfu_op_cycles * cfg.e_vfu_pj,
            "bus": op.batch * transfers * cfg.e_bus_pj,
            "shared_memory": op.batch * transfers * cfg.e_smem_pj,
        }
        write_cycles, write_pj = 0, 0.0
        if not op.static:  # the second operand (Kᵀ or V) is written into UCLMs as weights
            write_cycles = min(op.k, xb.rows) * cfg.kv_row_cycles
            write_pj = op.batch * op.k * Q * xb.slices * cfg.e_kv_row_pj  # a bit-plane row per array
        return per_row, write_cycles, energy, write_pj, op.batch * P * Q

    def cores(self, op: Op) -> int:
        """Cores holding one instance of a product's W, and so its partial sums and outputs."""
        xb = self.crossbar
        return ceil_div(ceil_div(op.k, xb.rows) * ceil_div(op.n, xb.cols), self.cfg.uclms_per_core)

    def softmax_row(self, length: int):
        """(cycles, pJ by component) of one softmax row of `length` elements."""
        cfg, W = self.cfg, self.cfg.vfu_lanes
        C = ceil_div(length, self.kv_columns_per_core) if self.opts["multicore_softmax"] else 1
        l_c = ceil_div(length, C)
        steps = ceil_div(l_c, W)
        vfu = steps * (4 * cfg.vfu_op_cycles + cfg.div_cycles)
        if self.opts["exp"] == "lut":
            vfu += steps * (cfg.nd_cycles + cfg.vfu_op_cycles)
            lookups = cfg.lookup_cycles * ceil_div(l_c, self.lookup_arrays)
            energy = {"uclm_lookup": length * cfg.e_lookup_pj}
        else:
            vfu += steps * cfg.exp_vfu_cycles
            lookups, energy = 0, {}
        levels = math.ceil(math.log2(C)) if C > 1 else 0
        tree = 2 * sum(
            cfg.level_inter_cycles if 2**level > cfg.cores_per_tile else cfg.level_intra_cycles
            for level in range(1, levels + 1)
        )
        energy["vfu"] = C * vfu * cfg.e_vfu_pj
        energy["bus"] = 2 * (C - 1) * cfg.e_bus_pj  # partial max and sum up the tree, results down
        return vfu + lookups + tree, energy

    def vector_row(self, op: Op, owners: int):
        """(cycles, unit, pJ by component) of one row of a non-product op on the VFU or bus; its
        ⌈n/W⌉ vector steps are spread over the `owners` cores holding the row."""
        cfg = self.cfg
        steps = ceil_div(op.n, cfg.vfu_lanes)
        if op.kind == "move":
            transfers = ceil_div(op.n, cfg.bus_bytes)
            return transfers, "memory", {"bus": transfers * cfg.e_bus_pj, "shared_memory": transfers * cfg.e_smem_pj}
        per_lane = {
            "norm": cfg.layernorm_ops * cfg.vfu_op_cycles,
            "gelu": cfg.gelu_vfu_cycles,
            "activation": cfg.exp_vfu_cycles,
        }.get(op.kind, cfg.vfu_op_cycles)
        return ceil_div(steps, owners) * per_lane, "vfu", {"vfu": steps * per_lane * cfg.e_vfu_pj}


def estimate(workload: Workload, *, hardware: HastilyOptions, config: HastilyConfig | None = None, **options) -> Report:
    """Cycles and energy of `workload` on the HASTILY chip described by `hardware`."""
    opts, cfg = resolve("hastily", options, OPTIONS, HASTILY, config)
    check_choice("exp", opts["exp"], ("lut", "vfu"))
    check_choice("multicore_softmax", opts["multicore_softmax"], (True, False))
    check_choice("pipelining", opts["pipelining"], (True, False))
    model, pipelined = _Model(cfg, opts, hardware), opts["pipelining"]
    rows, stage, outside, uclms = [], 0, 0, 0
    owners = 1  # cores holding the current rows: those of the last product's outputs
    notes = extrapolation_note(model.crossbar.adc_bits)
    workload, host = off_chip(workload, hardware.heads)
    if host:
        notes.append(f"{len(host)} head product(s), {sum(op.macs for op in host):,} MACs, run on the host: not priced")
    for op in workload.ops:
        scale = lambda d, k=1: {c: v * k for c, v in d.items()}  # noqa: E731
        if op.kind == "matmul":
            per_row, write, energy, write_pj, blocks = model.product(op)
            owners = model.cores(op)
            uclms += blocks
            components = {**scale(energy, op.m), "kv_write": write_pj}
            busy = write + op.m * per_row
            in_pipe = per_row + (cfg.kv_row_cycles if write else 0)
            rows.append(Row.of(op, "uclm", busy, components))
        elif op.kind == "softmax":
            per_row, energy = model.softmax_row(op.n)
            busy, in_pipe = op.m * per_row, per_row
            components = scale(energy, op.rows)
            score_bytes = op.elements  # INT8 scores
            if not pipelined and score_bytes > cfg.shared_memory_bytes:
                spill = 2 * score_bytes  # written out, read back
                busy += math.ceil(spill / cfg.dram_bytes_per_s * cfg.freq_hz)
                components["dram"] = spill * 8 * cfg.e_dram_pj_per_bit
            unit = "vfu+lut" if opts["exp"] == "lut" else "vfu"
            rows.append(Row.of(op, unit, busy, components))
        else:
            per_row, unit, energy = model.vector_row(op, owners)
            busy, in_pipe = op.m * per_row, per_row  # instances (heads) on their own cores, in parallel
            rows.append(Row.of(op, unit, busy, scale(energy, op.rows)))
        if pipelined and op.layer is not None:
            stage = max(stage, in_pipe)
        else:
            outside += rows[-1].cycles
    if pipelined:
        layers = len(workload.layers())
        b = workload.batch
        static_rows = [op.m for op in workload.ops if op.static and op.layer is not None]
        tokens = (max(static_rows) if static_rows else max((op.m for op in workload.ops), default=0)) // b
        in_sequence = sum(row.cycles for row in rows)
        # never slower than the same ops in sequence: the better schedule is taken
        total = min(ceil_div(b, 2) * (layers + min(b, 2)) * tokens * stage + outside, in_sequence)
    else:
        total = outside
    if uclms > cfg.uclms:
        notes.append(
            f"needs {uclms:,} UCLMs, the chip has {cfg.uclms:,}: weights assumed resident (the paper's assumption)"
        )
    return Report(
        "hastily",
        rows,
        total,
        cfg.freq_hz,
        options={**hardware.as_dict(), **opts, "config": cfg},
        notes=tuple(notes),
        workload=workload.name,
    )
