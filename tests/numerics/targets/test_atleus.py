"""Target "atleus" through emulate(): the systolic tier's precision and the crossbar Linears."""

import pytest
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


class _Stem(nn.Module):
    """A convolution and a Linear, both put on the crossbars."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv1d(4, 8, 3, groups=2)
        self.fc = nn.Linear(8, 64)

    def forward(self, x):
        return self.fc(self.conv(x).mean(-1))


def test_weight_domain_noise_is_a_float_product_of_a_noisy_weight():
    x = torch.randn(3, 4, 10, generator=torch.Generator().manual_seed(1))
    quiet = emulate(_Stem(), "atleus", noise_domain="weight")
    # no noise: the float product with the dequantized weights c·Q (no input quantization, no ADC), up to
    # FP32 summation order (im2col products, the bias added apart); the crossbar product is ~1e-2 away
    h = nn.functional.conv1d(x, quiet.conv.weight, quiet.conv.bias, groups=2).mean(-1)
    float_product = nn.functional.linear(h, quiet.fc.weight, quiet.fc.bias)
    torch.testing.assert_close(quiet(x), float_product, rtol=1e-6, atol=1e-6)
    assert (emulate(_Stem(), "atleus")(x) - float_product).abs().max() > 1e-3

    sigma = 0.02
    noisy = emulate(_Stem(), "atleus", noise_domain="weight", noise=sigma, seed=3)
    fc = noisy.fc
    w = fc._noisy_weight()
    assert torch.equal(w, fc._noisy_weight())  # one chip instance: the same draw every call
    # (W̃ − c·Q)/(c·q_m) is σ_w·z: 512 draws of N(0, σ²), so the sample std is σ within 10 % (5 std errors)
    c = fc.wq.expand(fc.wq.scales).t().float()
    z = (w - fc.weight) / (c * (2**7 - 1))
    assert abs(float(z.std()) / sigma - 1) < 0.1 and abs(float(z.mean())) < 5 * sigma / 512**0.5
    assert not torch.equal(noisy(x), quiet(x))
    again = emulate(_Stem(), "atleus", noise_domain="weight", noise=sigma, seed=3, resample_noise=True)
    assert not torch.equal(again.fc._noisy_weight(), again.fc._noisy_weight())  # a fresh draw every call


def test_weight_domain_refuses_what_it_cannot_express():
    with pytest.raises(ValueError, match="noise_domain must be one of"):
        emulate(_Stem(), "atleus", noise_domain="bits")
    with pytest.raises(ValueError, match=r"exist only in the cell domain"):
        emulate(_Stem(), "atleus", noise_domain="weight", noise={"stuck_at_0_rate": 0.01})
