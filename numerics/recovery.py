"""Recovery fine-tuning of a pruned model by distillation: the FP32 model is the teacher, the pruned copy
the student, and the student's kept weights learn to reproduce the teacher's hidden states on unlabeled
text (e.g. :func:`numerics.corpus.load_corpus`). Pruned weights stay +0 under any optimizer (the
sparse modules multiply by their fixed masks, so those weights get zero gradient).
"""

from __future__ import annotations

import dataclasses
import sys
import time

import torch
from torch import nn

from numerics.quant import call_with
from numerics.reconstruct import padding_mask

__all__ = ["recover", "Recovery"]


@dataclasses.dataclass(frozen=True)
class Recovery:
    """What :func:`recover` did."""

    steps: int
    """Optimizer steps taken."""
    seconds: float
    """Wall time."""
    losses: tuple[float, ...]
    """The distillation loss of each step."""
    stopped_by: str
    """``"steps"`` or ``"time_budget"``."""


def _hidden(output) -> torch.Tensor:
    """The tensor distilled: ``last_hidden_state``, else ``logits``, else the output itself."""
    for name in ("last_hidden_state", "logits"):
        value = getattr(output, name, None)
        if value is not None:
            return value
    return output[0] if isinstance(output, (tuple, list)) else output


def _loss(student_out, teacher_out, batch) -> torch.Tensor:
    """Mean squared error between the two hidden states over real tokens (``attention_mask``), scaled by
    the teacher's mean square (a loss of 1 is as far as predicting zeros)."""
    s, t = _hidden(student_out).float(), _hidden(teacher_out).float()
    keep = padding_mask(batch)
    if keep is not None and s.dim() == 3 and tuple(s.shape[:2]) == tuple(keep.shape):
        s, t = s[keep], t[keep]
    return (s - t).square().mean() / t.square().mean().clamp_min(1e-12)


def recover(
    student: nn.Module,
    teacher: nn.Module,
    batches,
    *,
    steps: int = 400,
    lr: float = 2e-4,
    seed: int = 0,
    time_budget: float | None = None,
    progress=None,
) -> Recovery:
    """Fine-tune ``student`` (a pruned copy of ``teacher``, e.g. ``emulate(teacher, "flexisaga", ...)``) in
    place to reproduce ``teacher``'s hidden states on ``batches`` (a list of forward arguments: tensors,
    tuples or dicts; padding excluded through ``attention_mask``), with Adam at learning rate ``lr`` for
    ``steps`` steps or until ``time_budget`` seconds have passed. Each step takes one batch, in an order
    drawn from ``seed``; both models run in eval mode (no dropout), so a run is reproducible. The sparse
    modules compute with ``torch.matmul`` while training (the PE order changes only the last bits) and
    get their accumulation back afterwards. ``progress`` is a stream for a progress line every 10 steps
    (default ``sys.stderr``; ``False`` for none). The defaults, 400 steps at 2e-4 over the shipped
    corpus in batches of 64, are the recipe measured on all-MiniLM-L6-v2 (docs/hardware/flexisaga.md §10:
    0.95 mean cosine at 25 % sparsity, 0.87 at 50 %, in 6 to 18 minutes on 2 CPU cores)."""
    batches = list(batches)
    if not batches:
        raise ValueError("batches is empty: give at least one batch of forward arguments")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not 0 < lr < float("inf"):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    if time_budget is not None and (not isinstance(time_budget, (int, float)) or time_budget <= 0):
        raise ValueError(f"time_budget must be None or a number of seconds > 0, got {time_budget!r}")
    params = [p for p in student.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the student has no trainable parameter")
    stream = sys.stderr if progress is None else progress
    sparse = [m for m in student.modules() if hasattr(m, "mask") and hasattr(m, "config")]
    configs = {m: m.config for m in sparse}
    modes = {m: m.training for m in (*student.modules(), *teacher.modules())}
    order = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(params, lr=lr)
    losses: list[float] = []
    start, stopped_by = time.perf_counter(), "steps"
    try:
        for m in sparse:
            m.config = dataclasses.replace(m.config, accumulation="fast")
        student.eval()
        teacher.eval()
        sequence: list[int] = []
        for step in range(steps):
            if time_budget is not None and time.perf_counter() - start > time_budget:
                stopped_by = "time_budget"
                break
            if not sequence:
                sequence = torch.randperm(len(batches), generator=order).tolist()
            batch = batches[sequence.pop()]
            with torch.no_grad():
                target = call_with(teacher, batch)
            loss = _loss(call_with(student, batch), target, batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            if stream and (step + 1) % 10 == 0:
                print(f"recover: step {step + 1}/{steps}, loss {losses[-1]:.4f}, {time.perf_counter() - start:.0f} s",
                      file=stream, flush=True)  # fmt: skip
    finally:
        for m, config in configs.items():
            m.config = config
        for m, mode in modes.items():
            m.training = mode
    return Recovery(len(losses), time.perf_counter() - start, tuple(losses), stopped_by)
