"""Target "atleus" through emulate(): the systolic tier's precision and the crossbar Linears."""

import torch
from torch import nn

from numerics.cim_layers import CrossbarLinear
from numerics.nn import emulate
from tests.models import TinyTransformer

G = torch.Generator().manual_seed(0)
Q, K, V = (torch.randn(2, 3, 9, 16, generator=G) for _ in range(3))


class Eager(nn.Module):
    def forward(self, q, k, v):
        return torch.softmax(q @ k.transpose(-1, -2) / 4, dim=-1) @ v


def bf16(t):
    return t.bfloat16().float()  # torch's cast as the oracle


def test_systolic_tier_in_float32_is_exact():
    em = emulate(Eager(), "atleus", sa_dtype="float32")
    assert torch.equal(em(Q, K, V), Eager()(Q, K, V))
    assert em.emulation.counts == {"matmul": 2, "softmax": 1}


def test_systolic_tier_in_bfloat16():
    em = emulate(Eager(), "atleus")
    scores = bf16(bf16(Q) @ bf16(K).transpose(-1, -2)) / 4
    probs = bf16(torch.softmax(bf16(scores), -1))
    assert torch.equal(em(Q, K, V), bf16(probs @ bf16(V)))


def test_mixed_precision_preset_and_frozen_weights():
    model = TinyTransformer()
    em = emulate(model, "atleus", quant="M8F4", lora_rank=4)
    assert isinstance(em.ff[0], CrossbarLinear) and em.ff[0].wq.bits == 4  # FFN at 4 bits
    # the layer kind comes from module names (attention/query/key/value/qkv...); "out" of this model
    # carries none, so it counts as FFN with the feed-forward pair (BERT's names: see test_cim_layers)
    assert em.emulation.details["layers"] == {"mha": 1, "ffn": 3, "lora": 1, "conv": 0}
    assert em.qkv.wq.bits == 8 and em.out.wq.bits == 4
    trainable = [n for n, p in em.named_parameters() if p.requires_grad]
    assert trainable == ["qkv.lora_a", "qkv.lora_b"]  # the fused Q/K/V projection's LoRA, all else frozen
    assert all(p.requires_grad for p in model.parameters())  # the original is untouched
