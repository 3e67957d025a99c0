"""Unlabeled everyday English shipped with edgenum (``numerics/data/corpus.txt``, the project's own text
under its licence): calibration data for activation-aware pruning and reconstruction, and text for
recovery fine-tuning, kept apart from the study's sentences (``hwmodels/data/sentences.txt``)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["CORPUS_PATH", "load_corpus"]

CORPUS_PATH = Path(__file__).with_name("data") / "corpus.txt"


def load_corpus(path: str | Path | None = None) -> list[str]:
    """The non-empty, non-comment lines of ``path`` (default: the shipped corpus, 292 sentences)."""
    path = Path(path or CORPUS_PATH)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not UTF-8 text: {error}") from None
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
