"""Every published figure of the four specs, as data: value, unit, what it measures, workload,
operating point and source. Where a paper leaves a condition open, the condition says what this
project assumes and why; `calibration.evaluate` evaluates each figure under exactly that condition.

Sources are the specs' "Published figures" sections (docs/hardware/<target>.md), which quote the
papers' abstracts and summaries of their full text.
"""

from __future__ import annotations

from dataclasses import dataclass

RELATIONS = ("=", "up to", "≈", "<", ">", "range")
"""How the published value bounds the quantity: "=" a value; "up to" the best case of a sweep,
compared as a value at the condition that maximises it; "≈" an approximate value; "<" / ">" a
qualitative bound (checked, not fitted); "range" the interval [value, high] (checked)."""


@dataclass(frozen=True)
class Figure:
    """One published figure."""

    key: str
    """Unique id, "<target>.<name>"."""
    target: str
    """Accelerator: "softex", "hastily", "atleus" or "flexisaga"."""
    measures: str
    """What the figure measures."""
    value: float
    """Published value (the lower end for a range)."""
    unit: str
    """Unit of `value` ("x" for ratios, "" for pure numbers)."""
    workload: str
    """Workload the figure was measured on (model, input size, batch)."""
    condition: str
    """Operating point and setup; assumptions say so."""
    source: str
    """Paper and section."""
    relation: str = "="
    """One of RELATIONS."""
    high: float | None = None
    """Upper end of a "range" figure."""

    def __post_init__(self):
        if self.relation not in RELATIONS:
            raise ValueError(f"relation must be one of {RELATIONS}, got {self.relation!r}")
        if (self.relation == "range") != (self.high is not None):
            raise ValueError(f"{self.key}: `high` is given exactly for range figures")
        if not self.key.startswith(self.target + "."):
            raise ValueError(f"key {self.key!r} must start with the target name {self.target!r}")
        for name in ("measures", "workload", "condition", "source"):
            if not getattr(self, name):
                raise ValueError(f"{self.key}: {name} must be given (no figure without its conditions)")

    @property
    def published(self) -> str:
        """The published value as written: relation, value and unit."""
        unit = f" {self.unit}" if self.unit and self.unit != "x" else self.unit
        if self.relation == "range":
            return f"{self.value:g}–{self.high:g}{unit}"
        prefix = "" if self.relation == "=" else self.relation + " "
        return f"{prefix}{self.value:g}{unit}"


SOFTEX_PAPER = "Belano et al., arXiv 2412.06321, abstract (softex.md §6.5)"
HASTILY_PAPER = "Kim, Sharma, Roy, arXiv 2502.12344 (hastily.md §6)"
ATLEUS_ABSTRACT = "Dhingra, Doppa, Pande, arXiv 2501.09588, abstract (atleus.md §6)"
ATLEUS_SUMMARY = "Dhingra, Doppa, Pande, arXiv 2501.09588, full-text summary (atleus.md §6)"
FLEXISAGA_PAPER = "Müller, Lübeck et al., arXiv 2506.01566, abstract (flexisaga.md §6)"

LONG_VECTOR = "one row of 2^20 elements (assumption: 'up to' is the long-vector asymptote, softex.md §6.3)"
BERT_512 = "batch 1, sequence 512 (assumption: length not stated; BERT's maximum)"
HASTILY_FULL = "pipelined, LUT exponential, multi-core softmax (full HASTILY); 1 GHz (assumed clock)"
PUMA = (
    "PUMA: VFU exponential, one-core softmax, otherwise identical to HASTILY, row pipelining included "
    "(hastily.md §5.1; pipelining is a separate ablation, §5.2)"
)
ROBERTA_STEP = "RoBERTa-base, batch 1, sequence 384 (SQuAD-style; assumption)"
ATLEUS_STEP = "one LoRA fine-tuning step, M8F8 unless stated, pipelined (assumption: the paper's focus)"
CNN_SPARSITY = (
    "uniform structured vector sparsity 0.9 in every block weight, orientation 'auto', "
    "array cycles only (the paper measures FlexiSAGA itself; non-GEMM ops run on a host) "
    "(assumption: pruning rates not published)"
)

FIGURES: tuple[Figure, ...] = (
    # --- SoftEx ----------------------------------------------------------------------------
    Figure(
        "softex.area",
        "softex",
        "SoftEx area (3.22 % of the cluster)",
        0.039,
        "mm²",
        "none (silicon)",
        "12 nm, 8 lanes",
        SOFTEX_PAPER,
    ),
    Figure(
        "softex.exp_vs_glibc",
        "softex",
        "exponential speed-up over glibc expf on the cores",
        121,
        "x",
        "exponential of a vector",
        "setup not published",
        SOFTEX_PAPER,
    ),
    Figure(
        "softex.softmax_speedup",
        "softex",
        "softmax time, software on 8 cores / SoftEx",
        10.8,
        "x",
        LONG_VECTOR,
        "0.8 V, 1.12 GHz, 8 lanes",
        SOFTEX_PAPER,
        "up to",
    ),
    Figure(
        "softex.softmax_energy",
        "softex",
        "softmax energy, software on 8 cores / SoftEx",
        10.8,
        "x",
        LONG_VECTOR,
        "0.8 V, 1.12 GHz, 8 lanes",
        SOFTEX_PAPER,
        "up to",
    ),
    Figure(
        "softex.gelu_speedup",
        "softex",
        "GELU time, software / SoftEx",
        5.11,
        "x",
        LONG_VECTOR,
        "0.8 V, 1.12 GHz, 8 lanes, 4 terms",
        SOFTEX_PAPER,
        "up to",
    ),
    Figure(
        "softex.gelu_energy",
        "softex",
        "GELU energy, software / SoftEx",
        5.29,
        "x",
        LONG_VECTOR,
        "0.8 V, 1.12 GHz, 8 lanes, 4 terms",
        SOFTEX_PAPER,
        "up to",
    ),
    Figure(
        "softex.vit_throughput",
        "softex",
        "end-to-end throughput (2 ops per MatMul MAC)",
        310,
        "GOPS",
        "ViT-B/16, 224×224, batch 1",
        "0.8 V, 1.12 GHz, SoftEx for softmax and GELU",
        SOFTEX_PAPER,
    ),
    Figure(
        "softex.vit_efficiency",
        "softex",
        "end-to-end energy efficiency (2 ops per MatMul MAC)",
        1.34,
        "TOPS/W",
        "ViT-B/16, 224×224, batch 1",
        "0.55 V, SoftEx for softmax and GELU",
        SOFTEX_PAPER,
    ),
    # --- HASTILY ---------------------------------------------------------------------------
    Figure(
        "hastily.bert_base_tops",
        "hastily",
        "throughput (2 ops per MAC of all matmuls)",
        158,
        "TOPS",
        "BERT-Base, " + BERT_512,
        HASTILY_FULL,
        HASTILY_PAPER,
    ),
    Figure(
        "hastily.bert_large_tops",
        "hastily",
        "throughput (2 ops per MAC of all matmuls)",
        263,
        "TOPS",
        "BERT-Large, " + BERT_512,
        HASTILY_FULL,
        HASTILY_PAPER,
    ),
    Figure(
        "hastily.bert_base_tops_per_w",
        "hastily",
        "energy efficiency",
        8,
        "TOPS/W",
        "BERT-Base, " + BERT_512,
        HASTILY_FULL + "; 'regardless of model size, layers or batch'",
        HASTILY_PAPER,
        "≈",
    ),
    Figure(
        "hastily.bert_large_tops_per_w",
        "hastily",
        "energy efficiency",
        8,
        "TOPS/W",
        "BERT-Large, " + BERT_512,
        HASTILY_FULL + "; 'regardless of model size, layers or batch'",
        HASTILY_PAPER,
        "≈",
    ),
    Figure(
        "hastily.tops_grow_with_layers",
        "hastily",
        "throughput of 12 layers / throughput of 6 layers",
        1,
        "x",
        "BERT-Base and its first 6 layers, " + BERT_512,
        HASTILY_FULL + "; 'grows with layers'",
        HASTILY_PAPER,
        ">",
    ),
    Figure(
        "hastily.puma_tops",
        "hastily",
        "PUMA baseline throughput",
        26,
        "TOPS",
        "BERT-Base, " + BERT_512,
        PUMA + "; same chip, 8T-SRAM crossbars",
        HASTILY_PAPER,
    ),
    Figure(
        "hastily.puma_efficiency_ratio",
        "hastily",
        "PUMA TOPS/W / HASTILY TOPS/W ('similar')",
        1,
        "x",
        "BERT-Base, " + BERT_512,
        PUMA + " vs " + HASTILY_FULL,
        HASTILY_PAPER,
        "≈",
    ),
    Figure(
        "hastily.speedup_over_puma",
        "hastily",
        "throughput HASTILY / PUMA (abstract's range)",
        1.7,
        "x",
        "BERT-Base, " + BERT_512 + "; the paper's sweep is not stated",
        HASTILY_FULL + " vs " + PUMA,
        HASTILY_PAPER,
        "range",
        high=5.9,
    ),
    Figure(
        "hastily.a40_tops",
        "hastily",
        "NVIDIA A40 throughput (bitsandbytes 8-bit)",
        19,
        "TOPS",
        "BERT-Base, batch 1",
        "nvidia-smi power minus idle",
        HASTILY_PAPER,
    ),
    Figure(
        "hastily.a40_tops_per_w",
        "hastily",
        "NVIDIA A40 energy efficiency",
        0.3,
        "TOPS/W",
        "BERT-Base/Large, batch 1 (0.3) to larger batches (0.9)",
        "nvidia-smi power minus idle",
        HASTILY_PAPER,
        "range",
        high=0.9,
    ),
    Figure(
        "hastily.speedup_over_a40",
        "hastily",
        "throughput HASTILY / A40",
        4.4,
        "x",
        "BERT models (per matched configuration)",
        "abstract's range",
        HASTILY_PAPER,
        "range",
        high=9.8,
    ),
    Figure(
        "hastily.efficiency_over_a40",
        "hastily",
        "TOPS/W HASTILY / A40",
        16,
        "x",
        "BERT models (per matched configuration)",
        "abstract's range",
        HASTILY_PAPER,
        "range",
        high=36,
    ),
    # --- Atleus ----------------------------------------------------------------------------
    Figure(
        "atleus.speedup_over_gpu",
        "atleus",
        "performance over the state of the art (a GPU)",
        56,
        "x",
        "RoBERTa-base, BERT-Large, GPT-2 Medium, BLOOM-560m (per-model values unknown)",
        "GPU model not published",
        ATLEUS_ABSTRACT,
        "up to",
    ),
    Figure(
        "atleus.efficiency_over_gpu",
        "atleus",
        "energy efficiency over the state of the art (a GPU)",
        64.5,
        "x",
        "same models",
        "GPU model not published",
        ATLEUS_ABSTRACT,
        "up to",
    ),
    Figure(
        "atleus.lora_accuracy_loss",
        "atleus",
        "accuracy loss of noise-aware LoRA vs ideal devices",
        0.5,
        "%",
        "RoBERTa-base, BERT-Large on SQuAD and SWAG",
        "ReRAM non-idealities, noise σ unknown",
        ATLEUS_SUMMARY,
        "<",
    ),
    Figure(
        "atleus.reram_energy_share",
        "atleus",
        "ReRAM tier share of total energy ('a minority')",
        0.5,
        "",
        ROBERTA_STEP,
        ATLEUS_STEP,
        ATLEUS_SUMMARY,
        "<",
    ),
    Figure(
        "atleus.bits_slope",
        "atleus",
        "relative energy change per relative weight-bit change, M4F4 → M8F8 ('near-linear, slope < 1')",
        1,
        "",
        ROBERTA_STEP,
        ATLEUS_STEP,
        ATLEUS_SUMMARY,
        "<",
    ),
    Figure(
        "atleus.m8f4_vs_m4f8",
        "atleus",
        "energy at M4F8 / energy at M8F4 ('M8F4 saves more')",
        1,
        "x",
        ROBERTA_STEP,
        ATLEUS_STEP,
        ATLEUS_SUMMARY,
        ">",
    ),
    Figure(
        "atleus.inference_lead",
        "atleus",
        "Atleus ahead of HAIMA and 3D-TPU in inference only",
        1,
        "x",
        "same models",
        "baselines HAIMA, 3D-TPU (not modelled)",
        ATLEUS_SUMMARY,
        ">",
    ),
    # --- FlexiSAGA -------------------------------------------------------------------------
    Figure(
        "flexisaga.sparse_speedup_low",
        "flexisaga",
        "whole-DNN sparse-over-dense speed-up, low end",
        1.41,
        "x",
        "MobileNetV2 1.0, 224×224, batch 1 (assumption: the lowest of the project's CNNs; "
        "depthwise convolutions stay dense)",
        CNN_SPARSITY + "; 16×16 array",
        FLEXISAGA_PAPER,
    ),
    Figure(
        "flexisaga.sparse_speedup_high",
        "flexisaga",
        "whole-DNN sparse-over-dense speed-up, high end",
        4.28,
        "x",
        "ResNet-50, 224×224, batch 1 (assumption: the highest of the project's CNNs)",
        CNN_SPARSITY + "; 16×16 array",
        FLEXISAGA_PAPER,
    ),
    Figure(
        "flexisaga.vs_platforms",
        "flexisaga",
        "outperforms commercial and literature accelerators",
        1,
        "x",
        "not published",
        "platforms, metric and numbers not published",
        FLEXISAGA_PAPER,
        ">",
    ),
)
"""All published figures, in report order."""

BY_KEY = {figure.key: figure for figure in FIGURES}
"""FIGURES by key."""
