"""Recovery fine-tuning by distillation (numerics.recovery): masks stay, the loss falls, a seed reproduces
a run, the time budget stops it, and the sparse modules get their accumulation back."""

import pytest
import torch

from numerics.nn import emulate
from numerics.sparse_linear import SparseLinear, recover
from tests.models import TinyTransformer

BATCHES = [torch.randint(0, 50, (4, 6), generator=torch.Generator().manual_seed(i)) for i in range(4)]


def _pruned():
    teacher = TinyTransformer()
    return teacher, emulate(teacher, "flexisaga", sparsity=0.5, tile=(8, 8))


def _error(student, teacher):
    with torch.no_grad():
        return sum((student(b) - teacher(b)).square().mean().item() for b in BATCHES)


def test_distillation_lowers_the_error_and_keeps_the_masks():
    teacher, student = _pruned()
    before = _error(student, teacher)
    run = recover(student, teacher, BATCHES, steps=40, lr=3e-3, seed=0, progress=False)
    assert run.steps == 40 and run.stopped_by == "steps" and len(run.losses) == 40
    assert _error(student, teacher) < 0.5 * before  # measured: 5.78 -> 0.34
    for m in student.modules():
        if isinstance(m, SparseLinear):
            assert bool((m.weight[~m.mask] == 0).all()) and m.config.accumulation == "sequential"
    assert all(not p.requires_grad or p.grad is not None for p in student.parameters())


def test_a_seed_reproduces_a_run_and_the_time_budget_stops_it():
    runs = []
    for _ in range(2):
        teacher, student = _pruned()
        runs.append(recover(student, teacher, BATCHES, steps=10, lr=1e-3, seed=3, progress=False).losses)
    assert runs[0] == runs[1]
    teacher, student = _pruned()
    other = recover(student, teacher, BATCHES, steps=10, lr=1e-3, seed=4, progress=False).losses
    assert other != runs[0]  # another batch order
    teacher, student = _pruned()
    cut = recover(student, teacher, BATCHES, steps=10_000, lr=1e-3, time_budget=0.2, progress=False)
    assert cut.stopped_by == "time_budget" and 0 < cut.steps < 10_000


@pytest.mark.parametrize(
    "kwargs, match",
    [({"steps": 0}, "steps"), ({"lr": -1.0}, "lr"), ({"time_budget": 0}, "time_budget")],
)
def test_bad_arguments_are_refused(kwargs, match):
    teacher, student = _pruned()
    with pytest.raises(ValueError, match=match):
        recover(student, teacher, BATCHES, progress=False, **kwargs)
    with pytest.raises(ValueError, match="batches is empty"):
        recover(student, teacher, [], progress=False)
