"""Unlabeled everyday English shipped with edgenum (``numerics/data/corpus*.txt``, the project's own text
under its licence): calibration data for activation-aware pruning and reconstruction, and text for
recovery fine-tuning, kept apart from the study's sentences (``hwmodels/data/sentences.txt``)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["CORPUS_PATH", "CORPUS_PATHS", "load_corpus"]

CORPUS_PATHS = (
    Path(__file__).with_name("data") / "corpus.txt",
    Path(__file__).with_name("data") / "corpus_more.txt",
)
"""The shipped files, in the order :func:`load_corpus` reads them: 292 sentences, then 3,506 more."""
CORPUS_PATH = CORPUS_PATHS[0]
"""The first 292 sentences (the corpus of earlier versions)."""


def load_corpus(path: str | Path | None = None, *, limit: int | None = None) -> list[str]:
    """The non-empty, non-comment lines of ``path`` (default: every shipped file, 3,798 sentences), the first
    ``limit`` of them if given. A ValueError names a file that is not UTF-8 text."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be None or a positive int, got {limit!r}")
    sentences = []
    for where in [Path(path)] if path is not None else CORPUS_PATHS:
        try:
            lines = where.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as error:
            raise ValueError(f"{where} is not UTF-8 text: {error}") from None
        sentences += [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    return sentences[:limit]
