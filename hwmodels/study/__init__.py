"""Accuracy and efficiency side by side: the engine of ``edgenum study``.

For one model and a list of runs (a target and its options), the study measures

* **accuracy against FP32**, on a sentence set shipped in ``hwmodels/data/sentences.txt``:
  for a sentence-embedding model, the cosine similarity of each mean-pooled embedding to its FP32
  counterpart and the *rank agreement* (Spearman correlation) of the pairwise sentence
  similarities; for a model with a classification or language-model head, the top-1 agreement of
  its predictions with FP32's (no labels ship with the set, so FP32's predictions are the truth);
  for an image model (:func:`image_subject`: ResNet-18/50, MobileNetV2), the same top-1 agreement
  and logit cosine on synthetic images;
* **cost per inference** from :func:`hwmodels.estimate` of the emulated model itself: cycles,
  latency and energy of one sentence as long as the longest of the set, or of one image
  (``"fp32"`` has no cost model: n/a).

A run's options are the target's hardware options (``emulate``'s, which the cost model prices
through the emulated model) plus, optionally, cost-model options (see :func:`split_options`); every
run's names and values are checked when the plan is built, before anything runs.

    from hwmodels.study import default_subject, plan, run_study, format_table
    subject = default_subject()                              # MiniLM when installed, else a tiny BERT
    results = run_study(subject, plan(sweeps=["atleus.adc_bits=4,6,8"]))
    print(format_table(results))
"""

from .errors import StudyError
from .executors import DaskCluster, Executor, LocalPool, Sequential
from .metrics import accuracy, pareto_front, readout, spearman
from .options import (
    CORPUS,
    DEFAULT_TARGETS,
    Run,
    check_run,
    emulate_option_names,
    estimate_option_names,
    parse_assignment,
    parse_value,
    plan,
    split_options,
)
from .outputs import COSTS, cost_of, format_table, pareto_flags, plot_study, write_outputs
from .runner import Bench, Result, RunFailed, calibration_batches, check_device, progress_bar, run_study
from .store import ResultStore, run_key
from .subjects import (
    CALIBRATION_IMAGES,
    IMAGE_MODELS,
    SENTENCES_PATH,
    HashTokenizer,
    Subject,
    SubjectSpec,
    default_subject,
    image_subject,
    load_sentences,
    minilm_subject,
    pretrained_subject,
    tiny_subject,
)

__all__ = [
    "CALIBRATION_IMAGES",
    "CORPUS",
    "COSTS",
    "Bench",
    "DaskCluster",
    "Executor",
    "LocalPool",
    "ResultStore",
    "RunFailed",
    "Sequential",
    "StudyError",
    "SubjectSpec",
    "check_device",
    "cost_of",
    "run_key",
    "DEFAULT_TARGETS",
    "IMAGE_MODELS",
    "SENTENCES_PATH",
    "HashTokenizer",
    "Result",
    "Run",
    "Subject",
    "accuracy",
    "calibration_batches",
    "check_run",
    "default_subject",
    "emulate_option_names",
    "estimate_option_names",
    "format_table",
    "image_subject",
    "load_sentences",
    "minilm_subject",
    "pareto_flags",
    "pareto_front",
    "parse_assignment",
    "parse_value",
    "plan",
    "plot_study",
    "pretrained_subject",
    "progress_bar",
    "readout",
    "run_study",
    "spearman",
    "split_options",
    "tiny_subject",
    "write_outputs",
]
