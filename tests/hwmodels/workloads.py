"""Synthetic workloads built by hand (no tracing) for fast cost-model tests."""

from hwmodels.workload import Op, Workload


def transformer_layer(n, d=64, heads=2, d_ff=256, batch=1, layer=0, fused_qkv=False):
    """Ops of one BERT-style layer in execution order, scopes like Hugging Face BERT."""
    s = f"encoder.layer.{layer}."
    t = batch * n
    proj = (
        [Op("matmul", "addmm", s + "attention.self.qkv", 1, t, d, 3 * d, True)]
        if fused_qkv
        else [Op("matmul", "addmm", s + f"attention.self.{x}", 1, t, d, d, True) for x in ("query", "key", "value")]
    )
    hb = heads * batch
    return proj + [
        Op("matmul", "sdpa/qk", s + "attention.self", hb, n, d // heads, n),
        Op("elementwise", "sdpa/scale", s + "attention.self", hb, n, 0, n),
        Op("softmax", "sdpa/softmax", s + "attention.self", hb, n, 0, n),
        Op("matmul", "sdpa/av", s + "attention.self", hb, n, n, d // heads),
        Op("matmul", "addmm", s + "attention.output.dense", 1, t, d, d, True),
        Op("elementwise", "add", s + "attention.output", 1, t, 0, d),
        Op("norm", "layer_norm", s + "attention.output.LayerNorm", 1, t, 0, d),
        Op("matmul", "addmm", s + "intermediate.dense", 1, t, d, d_ff, True),
        Op("gelu", "gelu", s + "intermediate.act", 1, t, 0, d_ff),
        Op("matmul", "addmm", s + "output.dense", 1, t, d_ff, d, True),
        Op("elementwise", "add", s + "output", 1, t, 0, d),
        Op("norm", "layer_norm", s + "output.LayerNorm", 1, t, 0, d),
    ]


def encoder(n, layers=2, batch=1, **kwargs):
    """A small encoder: embeddings movement, `layers` layers, a pooler outside the blocks."""
    ops = [Op("move", "embedding", "embeddings.word_embeddings", 1, batch * n, 0, kwargs.get("d", 64))]
    for i in range(layers):
        ops += transformer_layer(n, batch=batch, layer=i, **kwargs)
    ops.append(Op("matmul", "addmm", "pooler.dense", 1, batch, kwargs.get("d", 64), kwargs.get("d", 64), True))
    return Workload(ops, batch=batch, name="encoder")
