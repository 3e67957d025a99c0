"""Target "hastily" through emulate(): which calls run on the crossbars and the UCLM, and how."""

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from numerics.cim_layers import CrossbarLinear, hastily_attention
from numerics.crossbar import HASTILY_SRAM
from numerics.nn import emulate
from numerics.uclm import softmax as uclm_softmax
from tests.models import TinyTransformer

G = torch.Generator().manual_seed(0)
Q, K, V = (torch.randn(2, 3, 9, 16, generator=G) for _ in range(3))


class Sdpa(nn.Module):
    def forward(self, q, k, v):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)


class Eager(nn.Module):
    def forward(self, q, k, v):
        return torch.softmax(q @ k.transpose(-1, -2) / 4, dim=-1) @ v


def int8(t, dims):
    """Absmax INT8 codes and scales over ``dims`` (a row: -1; a matrix: (-2, -1)), computed independently."""
    s = t.double().abs().amax(dims, keepdim=True) / 127
    return torch.round(t.double() / s).clamp(-127, 127).to(torch.int64), s


def test_sdpa_runs_whole_on_hastily():
    em = emulate(Sdpa(), "hastily")
    got = em(Q, K, V)
    assert em.emulation.counts == {"attention": 1}
    assert torch.equal(got, hastily_attention(Q, K, V, is_causal=True))


def test_eager_attention_products_and_softmax():
    wide = dataclasses.replace(HASTILY_SRAM, adc_bits=7)  # 64-row counts fit: products exact
    em = emulate(Eager(), "hastily", crossbar=wide)
    got = em(Q, K, V)
    assert em.emulation.counts == {"matmul": 2, "softmax": 1}
    (qi, sq), (ki, sk) = int8(Q, -1), int8(K.transpose(-1, -2), (-2, -1))
    scores = ((qi @ ki).double() * sq * sk).float() / 4
    probs = uclm_softmax(scores.double(), -1).float()
    (pi, sp), (vi, sv) = int8(probs, -1), int8(V, (-2, -1))
    want = ((pi @ vi).double() * sp * sv).float()
    assert torch.equal(got, want)


def test_linears_swapped_and_adc_sweep_changes_results():
    model = TinyTransformer()
    tokens = torch.randint(0, 50, (2, 5), generator=torch.Generator().manual_seed(1))
    em = emulate(model, "hastily", adc_bits=7)
    assert isinstance(em.qkv, CrossbarLinear) and em.qkv.crossbar.adc_bits == 7
    assert em.emulation.swapped == {"Linear -> CrossbarLinear": 4}
    narrow = emulate(model, "hastily", adc_bits=3)
    ref = model(tokens)
    err = lambda m: (m(tokens) - ref).abs().mean().item()  # noqa: E731
    assert err(narrow) > err(em)
