"""emulate() under interrupts, threads, autograd, nesting and pickling (the emulation machinery itself)."""

import io
import pickle
import threading

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from numerics.nn import emulate
from tests.models import TinyTransformer, tiny_gpt2

TARGETS = ("softex", "hastily", "atleus", "flexisaga")


def _no_mode_active() -> bool:
    return torch._C._len_torch_function_stack() == 0


class Interruptible(nn.Module):
    """TinyTransformer that raises KeyboardInterrupt in its FFN while ``interrupt`` is set."""

    def __init__(self):
        super().__init__()
        self.body = TinyTransformer()
        self.interrupt = False

    def forward(self, tokens):
        x = self.body.embed(tokens)
        if self.interrupt:
            raise KeyboardInterrupt
        return self.body(tokens) + 0 * x


@pytest.mark.parametrize("target", TARGETS)
def test_ctrl_c_leaves_no_emulation_on(target):
    model = Interruptible()
    em = emulate(model, target)
    tokens = torch.randint(0, 50, (2, 5))
    expected = em(tokens)
    counts = dict(em.emulation.counts)
    em.interrupt = True
    with pytest.raises(KeyboardInterrupt):
        em(tokens)
    assert _no_mode_active()  # plain torch ops are plain again
    em.interrupt = False
    assert torch.equal(em(tokens), expected) and dict(em.emulation.counts) == counts


@pytest.mark.parametrize("target", ["hastily", "atleus"])
def test_ctrl_c_inside_a_crossbar_layer_does_not_pause_the_model(target, monkeypatch):
    import numerics.cim_layers as cim

    em = emulate(TinyTransformer(), target)
    tokens = torch.randint(0, 50, (2, 5))
    expected, counts = em(tokens), dict(em.emulation.counts)
    real = cim.crossbar_linear
    monkeypatch.setattr(cim, "crossbar_linear", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        em(tokens)
    monkeypatch.setattr(cim, "crossbar_linear", real)
    assert _no_mode_active()
    assert torch.equal(em(tokens), expected) and dict(em.emulation.counts) == counts  # softmax emulated again


def test_a_self_emulating_layer_runs_outside_the_mode_and_the_mode_returns(monkeypatch):
    import numerics.cim_layers as cim

    em = emulate(TinyTransformer(), "hastily")
    tokens = torch.randint(0, 50, (2, 5))
    expected, counts = em(tokens), dict(em.emulation.counts)
    depths, real = [], cim.crossbar_linear

    def spy(*args, **kwargs):
        depths.append(torch._C._len_torch_function_stack())
        return real(*args, **kwargs)

    monkeypatch.setattr(cim, "crossbar_linear", spy)
    assert torch.equal(em(tokens), expected)  # softmax after the layers is still emulated: same bits
    assert depths and set(depths) == {0} and dict(em.emulation.counts) == counts

    class Outer(torch.overrides.TorchFunctionMode):  # a mode of the user's, entered inside the forward
        def __torch_function__(self, func, types, args=(), kwargs=None):
            return func(*args, **(kwargs or {}))

    depths.clear()
    with Outer():
        assert torch.equal(em(tokens), expected)
    assert set(depths) == {1}  # the user's outer mode stays on inside the layer; only the emulation's is off
    assert _no_mode_active()


def test_a_mode_entered_inside_the_forward_stays_on_in_a_self_emulating_layer(monkeypatch):
    import numerics.cim_layers as cim

    seen = []

    class Inner(torch.overrides.TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            seen.append(func)
            return func(*args, **(kwargs or {}))

    class Wrapper(nn.Module):  # a model whose own forward enters a mode around a Linear
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(8, 4)

        def forward(self, x):
            with Inner():
                return self.proj(x)

    em = emulate(Wrapper(), "atleus")
    depths, real = [], cim.crossbar_linear

    def spy(*args, **kwargs):
        depths.append(torch._C._len_torch_function_stack())
        return real(*args, **kwargs)

    monkeypatch.setattr(cim, "crossbar_linear", spy)
    em(torch.randn(3, 8))
    # the emulation's mode is not the innermost one there: both stay on, the user's mode sees the layer
    assert depths == [2] and seen
    assert _no_mode_active()


@pytest.mark.parametrize("target", TARGETS)
def test_one_model_in_two_threads_gives_the_single_thread_bits(target):
    em = emulate(TinyTransformer(), target, **({"accumulation": "fast"} if target == "flexisaga" else {}))
    inputs = [torch.randint(0, 50, (2, 9), generator=torch.Generator().manual_seed(i)) for i in range(2)]
    with torch.no_grad():
        expected = [em(t) for t in inputs]
    wrong, barrier = [], threading.Barrier(2)

    def work(i):
        barrier.wait()
        for _ in range(15):
            with torch.no_grad():
                if not torch.equal(em(inputs[i]), expected[i]):
                    wrong.append(i)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []
    assert sum(em.emulation.counts.values()) > 0 or not em.emulation.handlers  # the last finished pass's record


def test_trace_in_one_thread_does_not_disturb_another():
    from hwmodels import trace

    model = TinyTransformer()
    tokens = torch.randint(0, 50, (2, 9))
    expected = trace(model, tokens)
    errors, stop = [], threading.Event()

    def plain_forwards():
        while not stop.is_set():
            try:
                with torch.no_grad():
                    model(tokens)
            except Exception as error:  # noqa: BLE001  (any crash is the failure)
                errors.append(error)

    other = threading.Thread(target=plain_forwards)
    other.start()
    try:
        workloads = [trace(model, tokens) for _ in range(20)]
    finally:
        stop.set()
        other.join()
    assert errors == []
    assert all(w.ops == expected.ops for w in workloads)


def _masked_attention_model():
    class Attn(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(8, 8)

        def forward(self, x, mask):
            q = self.proj(x).view(1, 2, 4, 4)
            return F.scaled_dot_product_attention(q, q, q, attn_mask=mask)

    torch.manual_seed(0)
    return Attn()


@pytest.mark.parametrize("target", ["softex", "hastily", "atleus"])
def test_fully_masked_rows_give_zero_with_and_without_grad(target):
    model = _masked_attention_model()
    em = emulate(model, target)
    mask = torch.ones(4, 4, dtype=torch.bool).tril()
    mask[2] = False  # query 2 sees no key at all
    x = torch.randn(1, 4, 8)
    with torch.no_grad():
        quiet = em(x, mask)
    xg = x.clone().requires_grad_(True)
    loud = em(xg, mask)
    assert torch.equal(quiet, loud.detach())
    assert torch.isfinite(loud).all() and (loud[:, :, 2] == 0).all()
    loud.square().sum().backward()
    assert torch.isfinite(xg.grad).all()


def test_an_emulated_model_inside_another_is_refused():
    inner = emulate(TinyTransformer(), "softex")
    with pytest.raises(ValueError, match="already emulated.*'0'"):
        emulate(nn.Sequential(inner), "hastily")


def test_an_emulated_model_called_by_another_runs_only_its_own_emulation():
    inner = emulate(TinyTransformer(), "hastily")

    class Outer(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = nn.LayerNorm(32)

        def forward(self, tokens):
            return self.norm(object.__getattribute__(self, "helper")(tokens))

    outer = Outer()
    outer_em = emulate(outer, "softex")
    object.__setattr__(outer_em, "helper", inner)  # called, not a submodule
    tokens = torch.randint(0, 50, (2, 5))
    with torch.no_grad():
        alone = inner(tokens)
        inside = outer_em(tokens)
    assert torch.equal(inside, outer_em.norm(alone))


def test_an_emulated_forward_keeps_its_signature_and_generate_works():
    import inspect

    model = tiny_gpt2(layers=1, d=32, heads=2, vocab=50, positions=16)
    em = emulate(model, "softex")
    assert inspect.signature(em.forward) == inspect.signature(model.forward)
    out = em.generate(torch.tensor([[3, 4, 5]]), max_new_tokens=3, do_sample=False)
    # one pass over the whole generation: three decoding steps of one layer, one softmax each
    assert out.shape == (1, 6) and em.emulation.counts["softmax"] == 3 and em.emulation.passes == 1


@pytest.mark.parametrize("target", TARGETS)
def test_emulated_models_pickle_and_save(target):
    em = emulate(TinyTransformer(), target, **({"accumulation": "fast"} if target == "flexisaga" else {}))
    tokens = torch.randint(0, 50, (2, 5))
    with torch.no_grad():
        expected = em(tokens)
    again = pickle.loads(pickle.dumps(em))
    buffer = io.BytesIO()
    torch.save(em, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    with torch.no_grad():
        assert torch.equal(again(tokens), expected) and torch.equal(loaded(tokens), expected)
    assert again.emulation.config == em.emulation.config


@pytest.mark.parametrize(
    "target,options",
    [("softex", {}), ("hastily", {}), ("hastily", {"calibrate": True}), ("atleus", {}), ("flexisaga", {})],
)
def test_a_sentence_does_not_depend_on_its_batch(target, options):
    """One sentence alone and padded inside a batch: its real tokens get the same bits (FlexiSAGA's
    dense FP32 attention products, like FP32 itself, may differ in the last bits with the BLAS
    blocking, so there the bound is FP32's own)."""
    from hwmodels.study import tiny_subject

    subject = tiny_subject(
        [
            "a man plays a guitar on stage",
            "the cat sleeps",
            "rain is expected over the long and wet weekend in the north",
        ]
    )
    batch = subject.batch
    n = int(batch["attention_mask"][1].sum())
    alone = {k: v[1:2, :n] for k, v in batch.items()}
    if options.pop("calibrate", False):
        options["calibrate_with"] = [batch["input_ids"]]
    em = emulate(subject.model, target, **options)
    with torch.no_grad():
        a = em(**alone).last_hidden_state[0]
        b = em(**batch).last_hidden_state[1, :n]
        fp32 = subject.model(**alone).last_hidden_state[0] - subject.model(**batch).last_hidden_state[1, :n]
    if target == "flexisaga":
        assert (a - b).abs().max() <= max(4 * fp32.abs().max().item(), 1e-6)
    else:
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    "target,bad,error,match",
    [
        (["softex"], {}, TypeError, "target must be a str"),
        ("atleus", {"seed": "abc"}, TypeError, "seed must be an int"),
        ("atleus", {"lora_alpha": "big"}, ValueError, "lora_alpha must be a number"),
        ("atleus", {"resample_noise": "yes"}, ValueError, "resample_noise must be True or False"),
        ("flexisaga", {"heads": 5}, ValueError, "heads must be a callable"),
        ("softex", {"lanes": True}, ValueError, "lanes must be an integer"),
        ("hastily", {"uclm": "fast"}, TypeError, "uclm must be a UCLMConfig"),
    ],
)
def test_bad_option_types_get_clear_errors(target, bad, error, match):
    with pytest.raises(error, match=match):
        emulate(TinyTransformer(), target, **bad)


@pytest.mark.parametrize("target", ["hastily", "atleus"])
def test_non_finite_activations_and_empty_batches_on_the_crossbars(target):
    em = emulate(TinyTransformer(), target)
    with pytest.raises(ValueError, match="input of a crossbar Linear .* contains Inf or NaN"):
        em.qkv(torch.full((1, 3, 32), float("inf")))
    assert em(torch.zeros(0, 5, dtype=torch.long)).shape == (0, 5, 32)


# ------------------------------------------------------------------ properties over random models

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


class Block(nn.Module):
    """A pre-norm attention block with a GELU MLP, on float inputs, with an optional key mask."""

    def __init__(self, d, heads, seed):
        super().__init__()
        torch.manual_seed(seed)
        self.heads = heads
        self.norm, self.qkv, self.out = nn.LayerNorm(d), nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

    def forward(self, x, keep=None):
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm(x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        mask = None if keep is None else keep[:, None, None, :]
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + self.out(att.transpose(1, 2).reshape(b, n, d))
        return x + self.mlp(x)


cases = st.fixed_dictionaries(
    {
        "target": st.sampled_from(TARGETS),
        "dtype": st.sampled_from([torch.float32, torch.bfloat16]),
        "d": st.sampled_from([8, 16]),
        "heads": st.sampled_from([1, 2]),
        "batch": st.integers(1, 2),
        "n": st.integers(1, 5),
        "mask": st.sampled_from(["none", "padding", "all"]),
        "seed": st.integers(0, 9),
    }
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases)
def test_emulate_is_safe_on_random_models(case):
    model = Block(case["d"], case["heads"], case["seed"]).to(case["dtype"])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(case["seed"])
    x = torch.randn(case["batch"], case["n"], case["d"], generator=g).to(case["dtype"])
    keep = {
        "none": None,
        "padding": torch.arange(case["n"]).expand(case["batch"], -1) < max(1, case["n"] - 1),
        "all": torch.zeros(case["batch"], case["n"], dtype=torch.bool),
    }[case["mask"]]
    probe = torch.randn(3, 5, generator=g)
    plain = (torch.softmax(probe, -1), probe @ probe.T, F.gelu(probe))
    em = emulate(model, case["target"], **({"accumulation": "fast"} if case["target"] == "flexisaga" else {}))
    with torch.no_grad():
        reference = model(x, keep)
        quiet = em(x, keep)
    xg = x.clone().requires_grad_(True)
    loud = em(xg, keep)
    assert torch.equal(quiet, loud.detach())  # the same bits with and without grad
    assert torch.isfinite(quiet)[torch.isfinite(reference)].all()  # finite wherever FP32 is
    loud.float().square().sum().backward()
    assert torch.isfinite(xg.grad).all() or not torch.isfinite(reference).all()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the original untouched
    assert _no_mode_active()
    assert all(torch.equal(a, b) for a, b in zip(plain, (torch.softmax(probe, -1), probe @ probe.T, F.gelu(probe))))
