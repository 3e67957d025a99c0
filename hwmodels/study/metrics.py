"""Accuracy against FP32 (embedding cosine, rank agreement, top-1 agreement) and the Pareto front."""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np
import torch
from torch import nn


def spearman(x, y) -> float:
    """Spearman rank correlation of two equal-length sequences (ties get their average rank);
    NaN when either is constant."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or len(x) < 2:
        raise ValueError(f"spearman needs two 1-D sequences of the same length >= 2; got {x.shape}, {y.shape}")
    rx, ry = _ranks(x) - (len(x) + 1) / 2, _ranks(y) - (len(y) + 1) / 2
    denominator = math.sqrt(float((rx * rx).sum() * (ry * ry).sum()))
    return float((rx * ry).sum() / denominator) if denominator else math.nan


def _ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their average rank."""
    ranks = np.empty(len(x))
    ranks[np.argsort(x, kind="stable")] = np.arange(1, len(x) + 1)
    _, group, counts = np.unique(x, return_inverse=True, return_counts=True)
    return (np.bincount(group, weights=ranks) / counts)[group]


def pareto_front(costs: Iterable[float], accuracies: Iterable[float]) -> list[int]:
    """Indices of the points no other point beats: none has lower-or-equal cost and
    higher-or-equal accuracy with one of them strictly better. Sorted by cost."""
    points = list(zip(costs, accuracies))
    valid = [not (math.isnan(c) or math.isnan(a)) for c, a in points]  # a NaN point beats nothing and is never on it
    front = [
        i
        for i, (c, a) in enumerate(points)
        if valid[i]
        and not any(ok and c2 <= c and a2 >= a and (c2, a2) != (c, a) for ok, (c2, a2) in zip(valid, points))
    ]
    return sorted(front, key=lambda i: points[i])


def readout(output, batch: dict) -> tuple[str, torch.Tensor]:
    """("logits", logits) for a model with a head (image classifiers included), else ("embedding",
    mean-pooled normalised embeddings): the sentence-transformers recipe over the attention mask."""
    logits = getattr(output, "logits", None)
    if logits is not None:
        return "logits", logits.float()
    hidden = getattr(output, "last_hidden_state", None)
    if hidden is None:
        hidden = output[0] if isinstance(output, (tuple, list)) else output
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    return "embedding", nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).float()


def accuracy(kind: str, reference: torch.Tensor, emulated: torch.Tensor, batch: dict) -> dict:
    """Accuracy metrics of one emulated readout against FP32's; the first is the headline."""
    if kind == "embedding":
        cosine = (reference * emulated).sum(-1).double()
        i, j = torch.triu_indices(len(reference), len(reference), offset=1)
        return {
            "mean_cosine": cosine.mean().item(),
            "min_cosine": cosine.min().item(),
            "rank_agreement": spearman(
                (reference @ reference.T)[i, j].double().numpy(), (emulated @ emulated.T)[i, j].double().numpy()
            ),
        }
    if reference.dim() == 3:  # language model: every real token's next-token prediction
        keep = batch["attention_mask"].bool()
        reference, emulated = reference[keep], emulated[keep]
    cosine = nn.functional.cosine_similarity(reference.double(), emulated.double(), dim=-1)
    return {
        "top1_agreement": (reference.argmax(-1) == emulated.argmax(-1)).double().mean().item(),
        "mean_cosine": cosine.mean().item(),
    }
