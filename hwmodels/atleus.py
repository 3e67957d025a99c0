"""Atleus cost model (atleus.md §4): static weights on ReRAM crossbars (ISAAC tiles), dynamic
products, softmax, norms and LoRA on the systolic tier, NoC/TSV/HBM traffic, and the four-stage
intra-layer pipeline. Times are computed in nanoseconds and reported in cycles of the systolic
tier's clock.

The ReRAM tier's geometry, cell and input bits, ADC width, weight precisions (MxFy), LoRA rank and
the systolic tier's format are hardware options (:class:`numerics.targets.atleus.AtleusOptions`,
whose crossbar defaults to ``ATLEUS_RERAM``); this module holds only cost constants.

- ReRAM product with W (K×N) at b_w bits: N_xb = ``CrossbarConfig.crossbars(K, N)`` at b_w
  (⌈K/rows⌉·⌈N/⌊cols/⌈b_w/b_c⌉⌋⌉ for the preset); all tokens of a sequence take
  ⌈n/ρ⌉·b_x·t_xbar + t_dig. Per token and crossbar-cycle: `cols` ADC conversions (energy by ADC
  width), `rows` DAC drives, one crossbar read, registers, shift-and-add; plus d_out·⌈d_in/rows⌉
  dequantisation ops (a shift for pow2 scales), eDRAM and bus traffic.
- Systolic products: best of OS/WS/IS (`hwmodels.systolic.gemm_cycles`) on 128×32 arrays; heads
  spread over the cores, a single product split by columns. Softmax, LayerNorm and activations
  8 ops per element, element-wise ops 1, at 32 elements per cycle per core.
- Pipeline (reconstruction): S1 Q/K/V projections, S2 systolic tier (Q·Kᵀ, softmax, A·V, LoRA),
  S3 O projection + residual + LayerNorm, S4 FFN, assigned by execution order inside each block.
  T = (L·max(B, 4) + min(B, 4) − 1)·max_i T_Si, T_Si per sequence; unpipelined T = Σ. Ops outside
  the blocks (embeddings, classifier: digital, weights from HBM) run before or after, unpipelined.
- `mode="finetune"` (a LoRA step): dX = dY·Wᵀ through every frozen matrix (on ReRAM at forward
  cost, or on the systolic tier with weights from HBM), attention and LoRA backward at 2×, other
  digital ops at 1× (assumption), saved activations written to and read from HBM.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass

from numerics.cim_layers import layer_kind, lora_leaf
from numerics.heads import head_rule
from numerics.quant import QuantConfig
from numerics.targets.atleus import AtleusOptions

from .adc import adc_energy_pj, extrapolation_note
from .config import check_choice, check_non_negative, check_positive, resolve
from .report import Report, Row
from .systolic import ceil_div, gemm_cycles
from .workload import Op, Workload

MAC_ENERGY_PJ = {"float32": 1.6, "bfloat16": 0.5}
"""Systolic MAC energy by format, pJ (assumption: Horowitz 45 nm × 0.35 for 10 nm)."""
_FORMAT_BITS = {"float32": 32, "bfloat16": 16}
_FUSED_QKV = re.compile(r"(c_attn|qkv|query_key_value|in_proj)$")


@dataclass(frozen=True)
class AtleusConfig:
    """Cost constants of Atleus (atleus.md §4); geometry and formats are hardware options. FITTED
    fields are overridden by hwmodels/fitted.json."""

    FITTED = ("t_dig_cycles", "sa_cores", "sa_freq_hz", "e_dequant_pj", "e_vector_op_pj", "e_tsv_pj_per_bit")

    reram_cores: int | str = 16
    """ReRAM cores (paper), or "fit": as many crossbars as the workload's weights need (assumption,
    atleus.md §7: the paper's 24,576 hold RoBERTa-base at M8F8 but not the 24-layer d = 1024 models)."""
    tiles_per_core: int = 16
    """ReRAM tiles per core (paper)."""
    crossbars_per_tile: int = 96
    """Crossbars per tile (ISAAC's 12 units × 8)."""
    t_xbar_ns: float = 100.0
    """Crossbar read time per input bit, ns (ISAAC)."""
    digital_freq_hz: float = 1.2e9
    """ReRAM tile digital clock, Hz (ISAAC)."""
    t_dig_cycles: int = 10
    """Digital cycles per MVM after the analog read (assumption)."""
    e_dac_pj: float = 0.417
    """DAC energy per row per input bit, pJ (ISAAC / Accelergy)."""
    e_shift_add_pj: float = 0.021
    """Shift-and-add energy per 16-bit op, pJ (ISAAC / Accelergy)."""
    e_crossbar_pj: float = 30.0
    """Crossbar read energy per crossbar-cycle, pJ (ISAAC Table I: 2.4 mW/8 × 100 ns)."""
    e_registers_pj: float = 18.4
    """Input/output register energy per crossbar-cycle, pJ (ISAAC Table I)."""
    e_edram_pj: float = 20.45
    """eDRAM energy per 256-bit access, pJ (ISAAC / Accelergy)."""
    e_bus_pj_per_bit: float = 0.054
    """Tile bus energy, pJ/bit (ISAAC / Accelergy)."""
    e_dequant_pj: float = 0.1
    """Energy per dequantisation scale op, pJ (assumption: fp16 FMA; 0.021 for pow2 scales)."""
    sa_cores: int = 16
    """Systolic-tier cores (assumption: not retrievable)."""
    sa_rows: int = 128
    """Systolic array rows per core (paper)."""
    sa_cols: int = 32
    """Systolic array columns per core (paper)."""
    sa_freq_hz: float = 1e9
    """Systolic-tier clock, Hz (assumption); the report counts cycles of this clock."""
    e_sram_pj_per_bit: float = 0.05
    """Systolic-tier SRAM energy, pJ/bit (assumption: 10 pJ per 64-bit 8 KB read × 0.35)."""
    vector_ops_per_element: int = 8
    """Ops per softmax, LayerNorm or activation element (assumption)."""
    vector_elements_per_cycle: int = 32
    """Non-product elements per cycle per systolic core (assumption)."""
    e_vector_op_pj: float = 0.32
    """Energy per non-product op, pJ (assumption: fp32 add 0.9 pJ at 45 nm × 0.35)."""
    noc_hops: int = 2
    """Planar hops per transfer (assumption)."""
    e_router_pj_per_bit: float = 0.08
    """Router energy per bit per hop, pJ (ISAAC router)."""
    e_link_pj_per_bit: float = 0.075
    """Link energy per bit per hop (1 mm), pJ (assumption)."""
    e_tsv_pj_per_bit: float = 0.03
    """TSV energy per bit per tier crossing, pJ (assumption; 0.01–0.05)."""
    router_cycles: int = 3
    """NoC router pipeline stages per hop (assumption: 3-stage routers)."""
    link_cycles: int = 1
    """NoC cycles per link traversal (assumption)."""
    flit_bits: int = 128
    """NoC flit width, bits (assumption)."""
    tsv_cycles: int = 1
    """NoC cycles per tier crossing through a TSV (assumption)."""
    noc_freq_hz: float = 1e9
    """NoC clock, Hz (assumption)."""
    planar_crossing_hops: int = 2
    """With mapping="planar", planar hops (router + 1 mm link each) that replace one tier crossing
    (assumption: the two tiers side by side; the paper compares against no planar design)."""
    e_hbm_pj_per_bit: float = 3.9
    """HBM2 energy, pJ/bit (https://doi.org/10.1145/3123939.3124545)."""
    hbm_bytes_per_s: float = 256e9
    """HBM2 bandwidth, one stack, bytes/s."""

    def __post_init__(self):
        if self.reram_cores != "fit":
            check_positive(self, "reram_cores", integer=True)
        check_positive(
            self,
            "tiles_per_core",
            "crossbars_per_tile",
            "sa_cores",
            "sa_rows",
            "sa_cols",
            "vector_ops_per_element",
            "vector_elements_per_cycle",
            "noc_hops",
            "flit_bits",
            integer=True,
        )
        check_positive(self, "t_xbar_ns", "digital_freq_hz", "sa_freq_hz", "hbm_bytes_per_s", "noc_freq_hz")
        check_non_negative(
            self,
            "t_dig_cycles",
            "e_dac_pj",
            "e_shift_add_pj",
            "e_crossbar_pj",
            "e_registers_pj",
            "e_edram_pj",
            "e_bus_pj_per_bit",
            "e_dequant_pj",
            "e_sram_pj_per_bit",
            "e_vector_op_pj",
            "e_router_pj_per_bit",
            "e_link_pj_per_bit",
            "e_tsv_pj_per_bit",
            "e_hbm_pj_per_bit",
            "router_cycles",
            "link_cycles",
            "tsv_cycles",
            "planar_crossing_hops",
        )

    def crossbars(self, needed: int = 0) -> int:
        """Crossbars on the ReRAM tier (24,576 for the paper's configuration); with reram_cores="fit",
        the `needed` ones in whole cores."""
        per_core = self.tiles_per_core * self.crossbars_per_tile
        cores = max(1, ceil_div(needed, per_core)) if self.reram_cores == "fit" else self.reram_cores
        return cores * per_core


ATLEUS = AtleusConfig()
"""The paper's configuration (arXiv 2501.09588)."""
DEFAULT_CONFIG = ATLEUS

OPTIONS = {
    "mode": "inference",
    "pipelining": True,
    "replication": 1,
    "backward_on": "systolic",
    "mapping": "heterogeneous",
    "causal_skip": True,
}
"""Behaviour options: mode="inference"|"finetune"; pipelining; replication (int ≥ 1 or "auto": spare
crossbars to the slowest ReRAM stage); backward_on="reram"|"systolic"; mapping="heterogeneous"|
"planar" (the tiers side by side: every TSV crossing becomes planar hops)|"systolic_only" (static
weights streamed from HBM to the systolic tier, a 3D-TPU-like baseline);
causal_skip: the Q·Kᵀ and A·V of causal attention (``Op.causal``, found by the trace) do half the
work, as every score above the diagonal is masked (atleus.md §4: "halved with causal_skip";
assumption: on by default, as a scheduler skips the masked tiles; the softmax is not halved)."""

PAPER_LORA_RANK = 32
"""LoRA rank of the paper's fine-tuning (atleus.md §2.4); what the deprecated ``lora=True`` means."""


def _quant_with(out: dict, **bits) -> dict:
    """``out`` with its quant preset's weight bits replaced."""
    base = AtleusOptions(quant=out.get("quant", AtleusOptions.quant)).quant_config
    return {**out, "quant": dataclasses.replace(base, **bits)}


LEGACY_OPTIONS = {
    "weights": ('weights="MxFy" is quant="MxFy"', lambda v, out, _: {**out, "quant": v}),
    "lora": (
        "lora=False is lora_rank=0, lora=True is lora_rank=32 (the paper's)",
        lambda v, out, given: {**out, "lora_rank": (given.get("lora_rank") or PAPER_LORA_RANK) if v else 0},
    ),
    "mha_weight_bits": (
        "set quant=QuantConfig(mha_weight_bits, ffn_weight_bits) or a preset",
        lambda v, out, _: _quant_with(out, mha_weight_bits=v),
    ),
    "ffn_weight_bits": (
        "set quant=QuantConfig(mha_weight_bits, ffn_weight_bits) or a preset",
        lambda v, out, _: _quant_with(out, ffn_weight_bits=v),
    ),
}
"""Cost-model spellings of hardware options from before the one description: name -> (advice,
translate(value, options so far, options given))."""


class _Model:
    def __init__(self, cfg: AtleusConfig, hardware: AtleusOptions):
        self.cfg = cfg
        self.ns_per_cycle = 1e9 / cfg.sa_freq_hz
        self.crossbar = hardware.effective_crossbar
        self.quant: QuantConfig = hardware.quant_config
        self.sa_dtype, self.lora_rank = hardware.sa_dtype, hardware.lora_rank
        # a pow2 scale is a shift (atleus.md §2.1); other formats a multiply
        self.e_dequant_pj = cfg.e_shift_add_pj if self.quant.scale_format == "pow2" else cfg.e_dequant_pj

    def weight_bits(self, op: Op) -> int:
        """MHA bits for attention projections; FFN bits for other Linears and every convolution."""
        mha = layer_kind(op.scope) == "mha" and "convolution" not in op.name
        return self.quant.mha_weight_bits if mha else self.quant.ffn_weight_bits

    def crossbars(self, op: Op) -> int:
        at_bits = dataclasses.replace(self.crossbar, weight_bits=self.weight_bits(op))
        return op.batch * at_bits.crossbars(op.k, op.n)

    def transfer_ns(self, token_bits: int, crossing: bool, planar: bool) -> float:
        """Latency of one token's output to the next stage: its flits behind noc_hops hops (router +
        link each), plus a tier crossing (a TSV, or planar hops with mapping="planar")."""
        cfg = self.cfg
        hop = cfg.router_cycles + cfg.link_cycles
        cycles = cfg.noc_hops * hop + ceil_div(token_bits, cfg.flit_bits)
        if crossing:
            cycles += cfg.planar_crossing_hops * hop if planar else cfg.tsv_cycles
        return cycles * 1e9 / cfg.noc_freq_hz

    def crossing_energy(self, bits: int, planar: bool) -> dict:
        """pJ of `bits` crossing between the tiers: TSVs, or planar hops with mapping="planar"."""
        cfg = self.cfg
        if planar:
            return {"noc": bits * cfg.planar_crossing_hops * (cfg.e_router_pj_per_bit + cfg.e_link_pj_per_bit)}
        return {"tsv": bits * cfg.e_tsv_pj_per_bit}

    @property
    def token_ns(self) -> float:
        """One token through a crossbar: b_x input bits of t_xbar, then the digital S&A/dequant."""
        cfg = self.cfg
        return self.crossbar.input_bits * cfg.t_xbar_ns + cfg.t_dig_cycles * 1e9 / cfg.digital_freq_hz

    def reram(self, op: Op, replication: int):
        """(ns for all tokens, pJ by component) of a static product on ReRAM."""
        cfg, bar = self.cfg, self.crossbar
        b_x, xb, tokens = bar.input_bits, self.crossbars(op), op.m
        ns = ceil_div(tokens, replication) * b_x * cfg.t_xbar_ns + cfg.t_dig_cycles * 1e9 / cfg.digital_freq_hz
        xbar_cycles = tokens * xb * b_x
        conversions = xbar_cycles * bar.cols
        io_bits = tokens * op.batch * (op.k + op.n) * b_x
        out_bits = tokens * op.batch * op.n * b_x
        energy = {
            "adc": conversions * adc_energy_pj(bar.adc_bits),
            "dac": xbar_cycles * bar.rows * cfg.e_dac_pj,
            "crossbar": xbar_cycles * cfg.e_crossbar_pj,
            "registers": xbar_cycles * cfg.e_registers_pj,
            "shift_add": conversions * cfg.e_shift_add_pj,
            "dequant": tokens * op.batch * op.n * ceil_div(op.k, bar.rows) * self.e_dequant_pj,
            "edram": io_bits / 256 * cfg.e_edram_pj,
            "bus": io_bits * cfg.e_bus_pj_per_bit,
            "noc": out_bits * cfg.noc_hops * (cfg.e_router_pj_per_bit + cfg.e_link_pj_per_bit),
        }
        return ns, energy

    def systolic_product(self, batch, m, k, n, weight_from_hbm=False):
        """(ns, pJ by component) of batch products on the systolic tier."""
        cfg = self.cfg
        split = max(1, cfg.sa_cores // batch)  # a lone product is split by columns over the cores
        n_core = ceil_div(n, split)
        per = min(gemm_cycles(m, k, n_core, cfg.sa_rows, cfg.sa_cols, d) for d in ("os", "ws", "is"))
        ns = ceil_div(batch, cfg.sa_cores) * per * self.ns_per_cycle
        word = _FORMAT_BITS[self.sa_dtype]
        energy = {
            "systolic_mac": batch * m * k * n * MAC_ENERGY_PJ[self.sa_dtype],
            "systolic_sram": batch * (m * k + k * n + m * n) * word * cfg.e_sram_pj_per_bit,
        }
        if weight_from_hbm:
            bits = batch * k * n * word
            energy["hbm"] = bits * cfg.e_hbm_pj_per_bit
            ns += bits / 8 / cfg.hbm_bytes_per_s * 1e9
        return ns, energy

    def vector(self, op: Op):
        """(ns, pJ by component) of a non-product op on the systolic tier."""
        cfg = self.cfg
        ops = 1 if op.kind in ("elementwise", "move") else cfg.vector_ops_per_element
        cycles = ceil_div(op.elements * ops, cfg.vector_elements_per_cycle * cfg.sa_cores)
        return cycles * self.ns_per_cycle, {"systolic_vector": op.elements * ops * cfg.e_vector_op_pj}

    def lora(self, op: Op):
        """(ns, pJ) of the LoRA branches attached to a static product, or None."""
        leaf = op.scope.rsplit(".", 1)[-1]
        if _FUSED_QKV.search(leaf) and op.n % 3 == 0:
            d_in, d_out, branches = op.k, op.n // 3, 2  # Q and V slices of a fused projection
        elif lora_leaf(op.scope):
            d_in, d_out, branches = op.k, op.n, 1
        else:
            return None
        r, total_ns, total = self.lora_rank, 0.0, {}
        for m, k, n in ((op.m, d_in, r), (op.m, r, d_out)):
            ns, energy = self.systolic_product(branches * op.batch, m, k, n)
            total_ns += ns
            for key, value in energy.items():
                total[key] = total.get(key, 0) + value
        return total_ns, total, branches * op.batch * op.m * r * (d_in + d_out)


def _stages(ops):
    """Pipeline stage (1…4) of each block op, from execution order inside its block."""
    stages, by_layer = {}, {}
    for i, op in enumerate(ops):
        if op.layer is not None:
            by_layer.setdefault(op.layer, []).append(i)
    for indices in by_layer.values():
        dynamic = [i for i in indices if ops[i].kind == "matmul" and not ops[i].static]
        first_dyn, last_dyn = (dynamic[0], dynamic[-1]) if dynamic else (None, None)
        ffn = [i for i in indices if ops[i].static and not ops[i].is_attention and (last_dyn is None or i > last_dyn)]
        first_ffn = ffn[0] if ffn else None
        for i in indices:
            if first_dyn is not None and i < first_dyn:
                stages[i] = 1
            elif first_dyn is not None and i <= last_dyn:
                stages[i] = 2
            elif first_ffn is not None and i >= first_ffn:
                stages[i] = 4
            else:
                stages[i] = 3 if first_dyn is not None else 4
    return stages


def estimate(workload: Workload, *, hardware: AtleusOptions, config: AtleusConfig | None = None, **options) -> Report:
    """Cycles and energy of `workload` (an inference pass or a LoRA fine-tuning step) on the Atleus
    chip described by `hardware`."""
    opts, cfg = resolve("atleus", options, OPTIONS, ATLEUS, config)
    check_choice("mode", opts["mode"], ("inference", "finetune"))
    check_choice("backward_on", opts["backward_on"], ("reram", "systolic"))
    check_choice("mapping", opts["mapping"], ("heterogeneous", "planar", "systolic_only"))
    check_choice("pipelining", opts["pipelining"], (True, False))
    check_choice("causal_skip", opts["causal_skip"], (True, False))
    replication = opts["replication"]
    if replication != "auto" and (isinstance(replication, bool) or not isinstance(replication, int) or replication < 1):
        raise ValueError(f'replication must be an int >= 1 or "auto", got {replication!r}')
    model, ops, finetune = _Model(cfg, hardware), workload.ops, opts["mode"] == "finetune"
    heads = head_rule(hardware.heads)
    on_reram = [
        op.static
        and op.layer is not None
        and layer_kind(op.scope, heads) is not None
        and opts["mapping"] != "systolic_only"
        for op in ops
    ]  # the Linears and convolutions emulation puts on crossbars; heads run on the systolic tier
    stages = _stages(ops)
    used = sum(model.crossbars(op) for op, r in zip(ops, on_reram) if r)
    rho = {s: 1 for s in (1, 2, 3, 4)}  # stage 2 holds static products too, e.g. cross-attention projections
    if replication != "auto":
        rho = {s: replication for s in rho}
    else:
        by_stage = {s: [op for i, (op, r) in enumerate(zip(ops, on_reram)) if r and stages[i] == s] for s in rho}
        slowest = max(by_stage, key=lambda s: max((model.reram(op, 1)[0] for op in by_stage[s]), default=0))
        stage_xb = sum(model.crossbars(op) for op in by_stage[slowest])
        if stage_xb:
            rho[slowest] = 1 + max(0, cfg.crossbars(used) - used) // stage_xb

    rows, stage_ns, outside_ns, on_crossbars, s1_sent = [], {}, 0.0, set(), {}
    hbm_values = 0
    to_cycles = lambda ns: math.ceil(ns / model.ns_per_cycle)  # noqa: E731

    def add(op, unit, ns, energy, index, *, name=None, operations=None, chained=False, backward=False, stage=None):
        rows.append(Row.of(op, unit, to_cycles(ns), energy, name=name, operations=operations))
        account(op, unit, ns, index, chained=chained, backward=backward, stage=stage)

    def backward_pass(op, index, factor, ns, energy, operations, name="backward", stage=None):
        """The backward pass of `op` on the systolic tier: `factor` times its forward time and energy."""
        scaled = {k: factor * v for k, v in energy.items()}
        add(
            op,
            "systolic",
            factor * ns,
            scaled,
            index,
            name=name,
            operations=factor * operations,
            backward=True,
            stage=stage,
        )

    def account(op, unit, ns, index, *, chained=False, backward=False, stage=None):
        """Add `ns` of `op` on `unit` to its pipeline stage (or to the time outside the blocks)."""
        nonlocal outside_ns
        if op.layer is None:
            outside_ns += ns
            return
        key = (backward, op.layer, stage or stages[index])
        parallel, chain = stage_ns.get(key, (0.0, 0.0))
        if unit == "reram" and not chained:
            parallel = max(parallel, ns)  # S1: Q, K, V read the same input in parallel
        elif unit == "noc" and key[2] == 1:  # ... and send their outputs in parallel: the slowest counts
            sent = s1_sent.get(key, 0.0)
            chain += max(sent, ns) - sent
            s1_sent[key] = max(sent, ns)
        elif unit == "reram" and key in on_crossbars:
            # a further matrix chained in the stage streams each token on as it arrives: one more
            # token latency per sequence (atleus.md §4.6), not its whole time again
            chain += workload.batch * model.token_ns
        else:
            chain += ns
        if unit == "reram":
            on_crossbars.add(key)
        stage_ns[key] = (parallel, chain)

    planar, b_x = opts["mapping"] == "planar", model.crossbar.input_bits

    def cross(energy, op):
        for key, value in model.crossing_energy(op.elements * b_x, planar).items():
            energy[key] = energy.get(key, 0) + value

    def transfer(op, i, crossing):
        """The output's way to the next stage: one token's latency per sequence, in the stage (the
        other tokens' flits stream behind the crossbar reads; their energy is in the op's row)."""
        if op.layer is not None:
            account(op, "noc", workload.batch * model.transfer_ns(op.batch * op.n * b_x, crossing, planar), i)

    for i, op in enumerate(ops):
        if on_reram[i]:
            ns, energy = model.reram(op, rho[stages[i]])
            if stages[i] == 1:
                cross(energy, op)
            add(op, "reram", ns, energy, i, chained=stages[i] != 1)
            transfer(op, i, crossing=stages[i] == 1)
            if finetune:
                if opts["backward_on"] == "reram":  # transposed read at forward cost
                    add(op, "reram", ns, energy, i, name="backward dX", chained=True, backward=True)
                else:
                    ns_b, energy_b = model.systolic_product(op.batch, op.m, op.n, op.k, weight_from_hbm=True)
                    add(op, "systolic", ns_b, energy_b, i, name="backward dX", backward=True)
            lora = model.lora(op) if model.lora_rank else None
            if lora is not None:
                ns, energy, macs = lora
                add(op, "systolic", ns, energy, i, name="lora", operations=macs, stage=2)
                if finetune:
                    backward_pass(op, i, 2, ns, energy, macs, name="backward lora", stage=2)
        elif op.kind == "matmul":
            ns, energy = model.systolic_product(op.batch, op.m, op.k, op.n, weight_from_hbm=op.static)
            if op.causal and opts["causal_skip"]:
                ns, energy = ns / 2, {k: v / 2 for k, v in energy.items()}
            if (
                not op.static
                and op.layer is not None
                and stages[i] == 2
                and i == max(j for j, o in enumerate(ops) if o.layer == op.layer and stages[j] == 2)
            ):
                cross(energy, op)  # back to ReRAM
                add(op, "systolic", ns, energy, i)
                transfer(op, i, crossing=True)
            else:
                add(op, "systolic", ns, energy, i)
            if finetune:
                backward_pass(op, i, 2 if not op.static else 1, ns, energy, op.macs)
        else:
            ns, energy = model.vector(op)
            add(op, "systolic", ns, energy, i)
            if finetune:
                backward_pass(op, i, 2 if op.kind == "softmax" else 1, ns, energy, op.elements)
                if op.kind in ("softmax", "gelu", "activation") and op.layer is not None:
                    hbm_values += op.elements
        if finetune and on_reram[i] and stages[i] == 1:
            hbm_values += op.elements

    B, layers = workload.batch, len(workload.layers())

    def makespan(backward):
        per_stage = [(p + c) / B for (bw, _, _), (p, c) in stage_ns.items() if bw == backward]
        if not per_stage:
            return 0.0
        in_sequence = B * sum(per_stage)
        if opts["pipelining"]:  # never slower than the same stages in sequence: the better schedule
            return min((layers * max(B, 4) + min(B, 4) - 1) * max(per_stage), in_sequence)
        return in_sequence

    total_ns = outside_ns + makespan(False) + (makespan(True) if finetune else 0.0)
    extra, notes = {}, extrapolation_note(model.crossbar.adc_bits)
    if finetune and hbm_values:
        bits = 2 * hbm_values * _FORMAT_BITS[model.sa_dtype]  # written in forward, read in backward
        extra["hbm"] = bits * cfg.e_hbm_pj_per_bit * 1e-12
        total_ns += bits / 8 / cfg.hbm_bytes_per_s * 1e9
    if used > cfg.crossbars(used):
        notes.append(f"needs {used:,} crossbars, the ReRAM tier has {cfg.crossbars():,}: weights assumed resident")
    if cfg.reram_cores == "fit":
        per_core = cfg.tiles_per_core * cfg.crossbars_per_tile
        notes.append(f"ReRAM tier sized to the model: {cfg.crossbars(used) // per_core} cores, {used:,} crossbars used")
    if any(r != 1 for r in rho.values()):
        notes.append(f"crossbar replication per ReRAM stage: {rho}")
    return Report(
        "atleus",
        rows,
        to_cycles(total_ns),
        cfg.sa_freq_hz,
        options={**hardware.as_dict(), **opts, "config": cfg},
        extra_components=extra,
        notes=tuple(notes),
        workload=workload.name,
    )
