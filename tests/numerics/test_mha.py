"""SpelledOutAttention computes what nn.MultiheadAttention computes, in spellings emulation can see,
and torch's fused fast paths never bypass it."""

import collections
import copy
import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from numerics.mha import SpelledOutAttention, spell_out_attention_
from numerics.nn import emulate

E, H, L, S, N = 8, 2, 4, 5, 3  # embed dim, heads, query length, key length, batch
KDIM, VDIM = 6, 3

MODULE_OPTIONS = {
    "plain": {},
    "no_bias": {"bias": False},
    "kv_dims": {"kdim": KDIM, "vdim": VDIM},
    "bias_kv": {"add_bias_kv": True},
    "zero_attn": {"add_zero_attn": True},
    "all": {"bias": False, "kdim": KDIM, "vdim": VDIM, "add_bias_kv": True, "add_zero_attn": True},
}
MASKS = [
    "none",
    "kpm_bool",
    "kpm_float",
    "attn2d_bool",
    "attn3d_float",
    "both_bool",
    "both_float",
    "causal",
    "causal_kpm",
]
LAYOUTS = ["seq_first", "batch_first", "unbatched"]
WEIGHTS = ["none", "averaged", "per_head"]  # need_weights=False / True with average_attn_weights True / False


def make_pair(options, batch_first, dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    mha = nn.MultiheadAttention(E, H, batch_first=batch_first, dtype=dtype, **options)
    with torch.no_grad():  # non-zero biases, so that their slices are checked too
        for p in mha.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return mha, SpelledOutAttention.from_module(mha)


def make_inputs(options, layout, dtype, gen):
    batched = layout != "unbatched"

    def shape(length, dim):
        if not batched:
            return (length, dim)
        return (N, length, dim) if layout == "batch_first" else (length, N, dim)

    q = torch.randn(shape(L, E), generator=gen, dtype=dtype)
    k = torch.randn(shape(S, options.get("kdim", E)), generator=gen, dtype=dtype)
    v = torch.randn(shape(S, options.get("vdim", E)), generator=gen, dtype=dtype)
    return q, k, v


def make_masks(kind, batched, dtype, gen):
    """(key_padding_mask, attn_mask, is_causal); key 0 is never masked, so no row is fully masked."""
    n = N if batched else 1
    kpm_bool = torch.rand(n, S, generator=gen) < 0.4
    kpm_bool[:, 0] = False
    attn_bool = torch.rand(L, S, generator=gen) < 0.4
    attn_bool[:, 0] = False
    causal = torch.ones(L, S, dtype=torch.bool).triu(1)  # top-left aligned, like SDPA's is_causal
    kpm_float = torch.randn(n, S, generator=gen, dtype=dtype)
    attn3d_float = torch.randn(n * H, L, S, generator=gen, dtype=dtype)
    kpm, attn, is_causal = {
        "none": (None, None, False),
        "kpm_bool": (kpm_bool, None, False),
        "kpm_float": (kpm_float, None, False),
        "attn2d_bool": (None, attn_bool, False),
        "attn3d_float": (None, attn3d_float, False),
        "both_bool": (kpm_bool, attn_bool, False),
        "both_float": (kpm_float, attn3d_float, False),
        "causal": (None, causal, True),
        "causal_kpm": (kpm_bool, causal, True),
    }[kind]
    if kpm is not None and not batched:
        kpm = kpm[0]
    return kpm, attn, is_causal


def call(module, inputs, masks, weights):
    kpm, attn, is_causal = masks
    return module(
        *inputs,
        key_padding_mask=kpm,
        attn_mask=attn,
        is_causal=is_causal,
        need_weights=weights != "none",
        average_attn_weights=weights == "averaged",
    )


@pytest.mark.parametrize("weights", WEIGHTS)
@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("options", list(MODULE_OPTIONS), ids=list(MODULE_OPTIONS))
def test_matches_multihead_attention(options, layout, mask, weights):
    options = MODULE_OPTIONS[options]
    mha64, spelled64 = make_pair(options, batch_first=layout == "batch_first")
    mha32 = copy.deepcopy(mha64).float()
    spelled32 = SpelledOutAttention.from_module(mha32)
    for mha, spelled, dtype, tol in ((mha64, spelled64, torch.float64, 1e-10), (mha32, spelled32, torch.float32, 1e-5)):
        gen = torch.Generator().manual_seed(1)
        inputs = make_inputs(options, layout, dtype, gen)
        masks = make_masks(mask, layout != "unbatched", dtype, gen)
        want, want_w = call(mha, inputs, masks, weights)
        got, got_w = call(spelled, inputs, masks, weights)
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, atol=tol, rtol=tol)
        if weights == "none":
            assert got_w is None and want_w is None
        else:
            assert got_w.shape == want_w.shape
            torch.testing.assert_close(got_w, want_w, atol=tol, rtol=tol)


def test_from_module_copies_parameters_and_options():
    mha, spelled = make_pair(MODULE_OPTIONS["all"] | {"dropout": 0.25}, batch_first=True)
    assert all(type(getattr(spelled, p)) is nn.Linear for p in ("q_proj", "k_proj", "v_proj", "out_proj"))
    assert (spelled.embed_dim, spelled.num_heads, spelled.head_dim) == (E, H, E // H)
    assert (spelled.kdim, spelled.vdim, spelled.dropout, spelled.batch_first) == (KDIM, VDIM, 0.25, True)
    assert spelled.add_zero_attn and spelled.training
    assert spelled.q_proj.bias is None and spelled.in_proj_bias is None and spelled.in_proj_weight is None
    torch.testing.assert_close(spelled.k_proj.weight, mha.k_proj_weight, rtol=0, atol=0)
    torch.testing.assert_close(spelled.bias_v, mha.bias_v, rtol=0, atol=0)
    assert spelled.k_proj.weight.data_ptr() != mha.k_proj_weight.data_ptr()  # cloned, not shared
    for p in spelled.parameters():
        assert p.dtype == torch.float64 and p.device == mha.out_proj.weight.device

    mha, spelled = make_pair({}, batch_first=False)
    mha.eval().in_proj_weight.requires_grad_(False)
    spelled = SpelledOutAttention.from_module(mha)
    assert not spelled.training and not spelled.v_proj.weight.requires_grad and spelled.out_proj.weight.requires_grad
    # read-only packed views, typed so that torch's fused-path checks back off (see numerics.mha)
    assert torch.equal(spelled.in_proj_weight, mha.in_proj_weight)
    assert torch.equal(spelled.in_proj_bias, mha.in_proj_bias)
    assert torch.overrides.has_torch_function((spelled.in_proj_weight,))
    torch.testing.assert_close(spelled.out_proj.bias, mha.out_proj.bias, rtol=0, atol=0)
    with torch.no_grad():  # slices taken under no_grad keep their parameter's flag
        assert SpelledOutAttention.from_module(nn.MultiheadAttention(E, H)).q_proj.weight.requires_grad


@pytest.mark.parametrize("need_weights", [True, False])
def test_gradients_match(need_weights):
    options = {"kdim": KDIM, "vdim": VDIM, "add_bias_kv": True, "add_zero_attn": True}
    mha, spelled = make_pair(options, batch_first=False)
    gen = torch.Generator().manual_seed(2)
    grads = []
    for module in (mha, spelled):
        inputs = [
            t.requires_grad_()
            for t in make_inputs(options, "seq_first", torch.float64, torch.Generator().manual_seed(3))
        ]
        masks = make_masks("both_float", True, torch.float64, torch.Generator().manual_seed(4))
        out, w = call(module, inputs, masks, "averaged" if need_weights else "none")
        loss = (out * torch.randn(out.shape, generator=gen.manual_seed(5), dtype=out.dtype)).sum()
        if w is not None:
            loss = loss + (w**2).sum()
        loss.backward()
        grads.append([t.grad for t in inputs])
    spelled_params = {
        "q_proj_weight": spelled.q_proj.weight,
        "k_proj_weight": spelled.k_proj.weight,
        "v_proj_weight": spelled.v_proj.weight,
        "out_proj.weight": spelled.out_proj.weight,
        "out_proj.bias": spelled.out_proj.bias,
        "bias_k": spelled.bias_k,
        "bias_v": spelled.bias_v,
    }
    for want, got in zip(*grads):
        torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)
    for name, p in mha.named_parameters():
        if name == "in_proj_bias":
            got = torch.cat([spelled.q_proj.bias.grad, spelled.k_proj.bias.grad, spelled.v_proj.bias.grad])
        else:
            got = spelled_params[name].grad
        torch.testing.assert_close(got, p.grad, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("need_weights", [True, False])
def test_training_dropout_matches(need_weights):
    """Same RNG draws as nn.MultiheadAttention: F.dropout on the probabilities / SDPA's dropout."""
    mha, spelled = make_pair({"dropout": 0.3, "add_bias_kv": True}, batch_first=True)
    inputs = make_inputs({}, "batch_first", torch.float64, torch.Generator().manual_seed(1))
    masks = make_masks("kpm_bool", True, torch.float64, torch.Generator().manual_seed(2))
    results = []
    for module in (mha, spelled):
        torch.manual_seed(7)
        results.append(call(module, inputs, masks, "per_head" if need_weights else "none"))
    (want, want_w), (got, got_w) = results
    torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)
    if need_weights:
        torch.testing.assert_close(got_w, want_w, atol=1e-10, rtol=1e-10)
    torch.manual_seed(8)
    assert not torch.allclose(call(spelled, inputs, masks, "none")[0], got)  # dropout did happen


def test_eval_ignores_dropout_and_is_causal_needs_mask():
    mha, spelled = make_pair({"dropout": 0.5}, batch_first=True)
    mha.eval(), spelled.eval()
    inputs = make_inputs({}, "batch_first", torch.float64, torch.Generator().manual_seed(1))
    torch.testing.assert_close(spelled(*inputs)[0], mha(*inputs)[0], atol=1e-10, rtol=1e-10)
    for module in (mha, spelled):
        with pytest.raises(RuntimeError, match="Need attn_mask if specifying the is_causal hint"):
            module(*inputs, is_causal=True)


class Recorder(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.calls = collections.Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls[func] += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("need_weights", [False, True])
def test_interceptor_sees_projections_and_attention(need_weights):
    _, spelled = make_pair({"kdim": KDIM, "vdim": VDIM}, batch_first=True)
    inputs = make_inputs({"kdim": KDIM, "vdim": VDIM}, "batch_first", torch.float64, torch.Generator())
    masks = make_masks("both_bool", True, torch.float64, torch.Generator())
    with Recorder() as rec:
        call(spelled, inputs, masks, "averaged" if need_weights else "none")
    assert rec.calls[F.linear] == 4
    assert rec.calls[F.scaled_dot_product_attention] == (0 if need_weights else 1)
    assert rec.calls[torch.matmul] == (2 if need_weights else 0)
    assert rec.calls[torch.softmax] == (1 if need_weights else 0)
    hidden = (torch.bmm, torch.baddbmm, torch.Tensor.bmm, torch.Tensor.baddbmm, F.multi_head_attention_forward)
    assert not any(rec.calls[f] for f in hidden)


@pytest.fixture
def forward_calls(monkeypatch):
    """Counts calls of SpelledOutAttention.forward and nn.MultiheadAttention.forward. Patched on the class:
    a forward hook would itself turn off nn.TransformerEncoderLayer's fast path."""
    calls = collections.Counter()
    for cls in (SpelledOutAttention, nn.MultiheadAttention):

        def counted(self, *args, _forward=cls.forward, **kwargs):
            calls[type(self).__name__] += 1
            return _forward(self, *args, **kwargs)

        monkeypatch.setattr(cls, "forward", counted)
    return calls


def padded_batch(batch_first, gen):
    x = torch.randn((N, S, E) if batch_first else (S, N, E), generator=gen, dtype=torch.float64)
    pad = torch.zeros(N, S, dtype=torch.bool)
    pad[1, 3:] = True  # left aligned, which nested tensors need
    pad[2, 4:] = True
    return x, pad


@pytest.mark.filterwarnings("ignore:enable_nested_tensor is True", "ignore:The PyTorch API of nested tensors")
@pytest.mark.parametrize(("norm_first", "batch_first"), list(itertools.product([False, True], repeat=2)))
def test_transformer_encoder(norm_first, batch_first, forward_calls):
    layer = nn.TransformerEncoderLayer(
        E, H, 16, dropout=0.0, batch_first=batch_first, norm_first=norm_first, dtype=torch.float64
    )
    encoder = nn.TransformerEncoder(layer, 2)  # enable_nested_tensor=True: decided now, around nn.MultiheadAttention
    assert encoder.use_nested_tensor == (batch_first and not norm_first)
    models = {"layer": layer, "encoder": encoder}
    spelled = {name: copy.deepcopy(m) for name, m in models.items()}
    assert spell_out_attention_(spelled["layer"]) == {"MultiheadAttention -> SpelledOutAttention": 1}
    assert spell_out_attention_(spelled["encoder"]) == {"MultiheadAttention -> SpelledOutAttention": 2}
    x, pad = padded_batch(batch_first, torch.Generator().manual_seed(1))
    causal = torch.ones(S, S, dtype=torch.bool).triu(1)
    keep = ~pad.T.unsqueeze(-1) if not batch_first else ~pad.unsqueeze(-1)

    for name, model in models.items():
        new = spelled[name]
        assert type(new.layers[0].self_attn if name == "encoder" else new.self_attn) is SpelledOutAttention
        for mode, kwargs in itertools.product(("train", "eval"), ({}, {"pad": pad}, {"pad": pad, "causal": causal})):
            model.train(mode == "train"), new.train(mode == "train")
            kwargs = {
                "src_key_padding_mask": kwargs.get("pad"),
                "mask" if name == "encoder" else "src_mask": kwargs.get("causal"),
            }
            with torch.set_grad_enabled(mode == "train"):
                forward_calls.clear()
                want = model(x, **kwargs)
                if mode == "eval" and batch_first:  # torch fuses here: the comparison covers its fast paths
                    assert forward_calls["MultiheadAttention"] == 0
                got = new(x, **kwargs)
            assert forward_calls["SpelledOutAttention"] == (2 if name == "encoder" else 1)
            if mode == "eval" and name == "encoder" and kwargs["src_key_padding_mask"] is not None:
                # nested tensors leave padded positions 0; the unfused path computes them
                want, got = want * keep, got * keep
            torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)


def test_fast_paths_are_off_for_an_encoder_built_around_spelled_out_attention(forward_calls):
    layer = nn.TransformerEncoderLayer(E, H, 16, dropout=0.0, batch_first=True, dtype=torch.float64)
    reference = nn.TransformerEncoder(copy.deepcopy(layer), 2, enable_nested_tensor=False).eval()
    spell_out_attention_(layer)
    with pytest.warns(UserWarning, match="_qkv_same_embed_dim was not True"):
        encoder = nn.TransformerEncoder(layer, 2).eval()
    x, pad = padded_batch(True, torch.Generator().manual_seed(2))
    with torch.no_grad():
        got = encoder(x, src_key_padding_mask=pad)
        want = reference(x, src_key_padding_mask=pad)
    assert forward_calls["SpelledOutAttention"] == 2
    torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)


def test_multihead_attention_fast_path_agrees():
    mha, spelled = make_pair({}, batch_first=True)
    mha.eval(), spelled.eval()
    x = torch.randn(N, L, E, dtype=torch.float64)
    with torch.no_grad():  # nn.MultiheadAttention takes torch._native_multi_head_attention here
        want, want_w = mha(x, x, x)
        got, got_w = spelled(x, x, x)
    torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(got_w, want_w, atol=1e-10, rtol=1e-10)


def test_spell_out_attention_replaces_submodules_only():
    model = nn.Sequential(nn.Linear(E, E), nn.ReLU())
    before = copy.deepcopy(model.state_dict())
    assert spell_out_attention_(model) == collections.Counter()
    assert [type(m) for m in model] == [nn.Linear, nn.ReLU]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())

    root = nn.MultiheadAttention(E, H)
    assert spell_out_attention_(root) == collections.Counter()
    assert type(root) is nn.MultiheadAttention

    shared = nn.MultiheadAttention(E, H)
    model = nn.ModuleDict({"a": shared, "b": shared, "c": nn.ModuleList([nn.MultiheadAttention(E, H)])})
    assert spell_out_attention_(model) == {"MultiheadAttention -> SpelledOutAttention": 2}
    assert type(model["a"]) is SpelledOutAttention and model["a"] is model["b"]
    assert type(model["c"][0]) is SpelledOutAttention


@pytest.mark.filterwarnings("ignore")
def test_emulation_sees_the_attention():
    """emulate() spells nn.MultiheadAttention out itself: both see their attention emulated."""
    layer = nn.TransformerEncoderLayer(E, H, 16, dropout=0.0, batch_first=True)
    model = nn.TransformerEncoder(layer, 2).eval()
    spelled = copy.deepcopy(model)
    spell_out_attention_(spelled)
    x, pad = padded_batch(True, torch.Generator().manual_seed(3))
    counts = {}
    for name, m in (("original", model), ("spelled", spelled)):
        em = emulate(m, "softex")
        with torch.no_grad():
            em(x.float(), src_key_padding_mask=pad)
        counts[name] = em.emulation.counts
    assert counts["original"]["softmax"] == 2 and counts["spelled"]["softmax"] == 2
