"""published.py: every figure carries its conditions and is either evaluated or explained."""

import pytest

from calibration.evaluate import EVALUATORS, NOT_EVALUABLE, evaluate
from calibration.published import BY_KEY, FIGURES, Figure
from hwmodels import TARGETS


def test_every_figure_is_complete_and_unique():
    assert len(BY_KEY) == len(FIGURES)
    assert {f.target for f in FIGURES} == set(TARGETS)
    for figure in FIGURES:
        assert figure.workload and figure.condition and figure.source and figure.measures


def test_every_figure_is_evaluated_or_explained():
    keys = set(BY_KEY)
    assert set(EVALUATORS) | set(NOT_EVALUABLE) == keys
    assert not set(EVALUATORS) & set(NOT_EVALUABLE)
    with pytest.raises(ValueError, match="no area model"):
        evaluate("softex.area")
    with pytest.raises(ValueError, match="unknown figure"):
        evaluate("softex.nothing")


def test_published_text():
    assert BY_KEY["softex.vit_throughput"].published == "310 GOPS"
    assert BY_KEY["softex.softmax_speedup"].published == "up to 10.8x"
    assert BY_KEY["hastily.speedup_over_puma"].published == "1.7–5.9x"


def test_bad_figures():
    args = dict(
        key="softex.x", target="softex", measures="m", value=1.0, unit="x", workload="w", condition="c", source="s"
    )
    with pytest.raises(ValueError, match="relation"):
        Figure(**args, relation="about")
    with pytest.raises(ValueError, match="high"):
        Figure(**args, relation="range")
    with pytest.raises(ValueError, match="high"):
        Figure(**args, high=2.0)
    with pytest.raises(ValueError, match="condition"):
        Figure(**{**args, "condition": ""})
    with pytest.raises(ValueError, match="target"):
        Figure(**{**args, "key": "hastily.x"})
