"""Small seeded models of the architectures users bring, built offline from configs (random weights):
what the coverage tests and ``bench/coverage.py`` run on every target."""

from __future__ import annotations

import dataclasses
from typing import Callable

import torch
from torch import nn


@dataclasses.dataclass(frozen=True)
class Architecture:
    """A model builder, its seeded inputs, and the tensor compared against FP32."""

    name: str
    build: Callable[[], nn.Module]
    inputs: Callable[[], dict]
    readout: Callable[[object], torch.Tensor]
    hardware_products: int
    """Static-weight layers (Linears and convolutions, heads excepted) the hardware runs: the crossbar
    and sparse targets must swap exactly this many."""
    heads: int = 0
    """Static-weight layers that are heads (kept off the accelerator)."""

    def on(self, device) -> tuple[nn.Module, dict]:
        """The model and its inputs on ``device``."""
        return self.build().to(device), {k: v.to(device) for k, v in self.inputs().items()}


def _seeded(make):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return make().eval()


def _ids(batch=2, length=10, vocab=100, seed=1):
    return torch.randint(3, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


def _logits(out):
    return out.logits


def _hidden(out):
    return out if isinstance(out, torch.Tensor) else out.last_hidden_state


def gpt2():
    import transformers

    config = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=100, n_positions=32)
    return _seeded(lambda: transformers.GPT2LMHeadModel(config))


def llama():
    """RMSNorm, SiLU-gated MLP, rotary positions, grouped-query attention (4 heads, 2 KV heads), causal SDPA."""
    import transformers

    config = transformers.LlamaConfig(
        vocab_size=100,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    return _seeded(lambda: transformers.LlamaForCausalLM(config))


def t5():
    import transformers

    config = transformers.T5Config(
        vocab_size=100, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4, decoder_start_token_id=0
    )
    return _seeded(lambda: transformers.T5ForConditionalGeneration(config))


_ENCODER_DECODER = dict(
    d_model=64,
    encoder_layers=2,
    decoder_layers=2,
    encoder_attention_heads=4,
    decoder_attention_heads=4,
    encoder_ffn_dim=128,
    decoder_ffn_dim=128,
)
"""Two encoder and two decoder layers of width 64, 4 heads, FFN 128 (BART, Whisper)."""


def bart():
    import transformers

    config = transformers.BartConfig(
        vocab_size=100,
        **_ENCODER_DECODER,
        max_position_embeddings=64,
    )
    return _seeded(lambda: transformers.BartForConditionalGeneration(config))


def whisper():
    """A conv stem (two Conv1d) in front of an encoder-decoder."""
    import transformers

    config = transformers.WhisperConfig(
        vocab_size=100,
        num_mel_bins=16,
        **_ENCODER_DECODER,
        max_source_positions=16,
        max_target_positions=32,
        decoder_start_token_id=1,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        suppress_tokens=None,
        begin_suppress_tokens=None,
    )
    return _seeded(lambda: transformers.WhisperForConditionalGeneration(config))


def vit():
    """A patch-embedding convolution in front of an encoder."""
    import transformers

    config = transformers.ViTConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, image_size=32, patch_size=8
    )
    return _seeded(lambda: transformers.ViTForImageClassification(config))


def distilbert():
    import transformers

    config = transformers.DistilBertConfig(vocab_size=100, dim=64, n_layers=2, n_heads=4, hidden_dim=128)
    return _seeded(lambda: transformers.DistilBertForSequenceClassification(config))


def torch_encoder():
    """``nn.TransformerEncoder`` (``nn.MultiheadAttention`` inside)."""

    def make():
        layer = nn.TransformerEncoderLayer(64, 4, 128, dropout=0.0, batch_first=True)
        return nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)

    return _seeded(make)


def _image(name):
    def build():
        from hwmodels.study import image_subject

        return image_subject(name, images=1, size=32).model

    return build


def _pixels(channels=3, size=32, batch=2):
    return lambda: {
        "pixel_values": torch.randn(batch, channels, size, size, generator=torch.Generator().manual_seed(2))
    }


ARCHITECTURES = {
    a.name: a
    for a in (
        # blocks x (attention 4 + MLP 2) Linears; the LM head is tied and a head
        Architecture("gpt2", gpt2, lambda: {"input_ids": _ids()}, _logits, 2 * 4, heads=1),
        Architecture("llama", llama, lambda: {"input_ids": _ids()}, _logits, 2 * 7, heads=1),
        Architecture(
            "t5",
            t5,
            lambda: {"input_ids": _ids(), "decoder_input_ids": _ids(length=6, seed=2)},
            _logits,
            2 * (4 + 2) + 2 * (8 + 2),
            heads=1,
        ),
        Architecture(
            "bart",
            bart,
            lambda: {"input_ids": _ids(), "decoder_input_ids": _ids(length=6, seed=2)},
            _logits,
            2 * (4 + 2) + 2 * (8 + 2),
            heads=1,
        ),
        Architecture(
            "whisper",
            whisper,
            lambda: {
                "input_features": torch.randn(2, 16, 32, generator=torch.Generator().manual_seed(3)),
                "decoder_input_ids": _ids(length=6, seed=2),
            },
            _logits,
            2 + 2 * (4 + 2) + 2 * (8 + 2),
            heads=1,
        ),
        Architecture("vit", vit, _pixels(), _logits, 1 + 2 * 6, heads=1),
        Architecture("distilbert", distilbert, lambda: {"input_ids": _ids()}, _logits, 2 * 6, heads=2),
        Architecture(
            "torch_encoder",
            torch_encoder,
            lambda: {"src": torch.randn(2, 10, 64, generator=torch.Generator().manual_seed(4))},
            _hidden,
            2 * 6,
        ),
        # ResNet-18: stem, 16 block convs, 3 downsampling shortcuts; MobileNetV2: 52 convs (17 depthwise)
        Architecture("resnet18", _image("resnet18"), _pixels(), _logits, 1 + 16 + 3, heads=1),
        Architecture("mobilenet_v2", _image("mobilenet_v2"), _pixels(), _logits, 52, heads=1),
    )
}
