"""Design-space search: one target's options searched for the accuracy/cost Pareto front.

The search is Optuna's NSGA-II (a multi-objective evolutionary sampler): each trial is a run of the
target with options drawn from declared ranges, maximising the headline accuracy against FP32 and
minimising one cost per inference (energy, latency or cycles). Trials run like study runs (on any
executor, several at a time when it has workers) and are written by the same
:class:`~hwmodels.study.store.ResultStore`, so a search is durable and resumable like a study.

    from hwmodels.study import explore, subjects
    ranges = explore.parse_ranges("atleus", ["adc_bits=4:8", "quant=M8F4,M4F8,M4F4"])
    results = explore.explore(subjects.default_subject(), "atleus", ranges, trials=30)
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterable

from .. import TARGETS as COST_TARGETS
from .errors import StudyError
from .executors import Executor, Sequential
from .options import Run, check_run, parse_assignment, parse_value
from .outputs import cost_of
from .runner import Result
from .store import ResultStore, run_key

CHECKED_INTEGERS = 64
"""Int ranges up to this many values have every value checked before the search (a value a range
contains may still be invalid, e.g. SoftEx accumulators other than 1 and 4); longer ones their ends."""


@dataclasses.dataclass(frozen=True)
class Dimension:
    """One searched option: a list of ``choices``, or an int or float range ``low`` to ``high``
    (both included)."""

    option: str
    choices: tuple = ()
    low: int | float | None = None
    high: int | float | None = None

    @property
    def checked(self) -> list:
        """The values checked against the target before the search."""
        if self.choices:
            return list(self.choices)
        if isinstance(self.low, int) and isinstance(self.high, int) and self.high - self.low < CHECKED_INTEGERS:
            return list(range(self.low, self.high + 1))
        return [self.low, self.high]

    def distribution(self):
        """The Optuna distribution of this option."""
        distributions = _optuna().distributions
        if self.choices:
            return distributions.CategoricalDistribution(self.choices)
        if isinstance(self.low, int) and isinstance(self.high, int):
            return distributions.IntDistribution(self.low, self.high)
        return distributions.FloatDistribution(float(self.low), float(self.high))


def parse_range(target: str, text: str) -> Dimension:
    """``"adc_bits=4:8"`` (an int range), ``"sparsity=0.1:0.9"`` (a float range) or
    ``"quant=M8F4,M4F8"`` (choices) -> a :class:`Dimension`; ``target.`` before the option is allowed."""
    key, sep, values = text.partition("=")
    option = key.strip().removeprefix(f"{target}.")
    if not (sep and option and values.strip()) or "." in option:
        raise StudyError("range", f"expected OPTION=LOW:HIGH or OPTION=V1,V2,..., e.g. adc_bits=4:8; got {text!r}")
    if ":" in values:
        low, _, high = values.partition(":")
        low, high = parse_value(low), parse_value(high)
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high))
        if not numbers or not low < high:
            raise StudyError("range", f"{text!r}: a range is LOW:HIGH with numbers, LOW < HIGH")
        return Dimension(option, low=low, high=high)
    _, _, choices = parse_assignment(f"{target}.{option}={values}")
    if len(set(map(repr, choices))) < 2:
        raise StudyError("range", f"{text!r}: give two values or more (a single value is a --set)")
    return Dimension(option, choices=tuple(choices))


def fixed_options(target: str, settings: Iterable[str]) -> dict:
    """The ``--set`` options of ``target`` ("target.option=value"), checked."""
    fixed = {}
    for text in settings:
        name, option, values = parse_assignment(text)
        if name != target:
            raise StudyError("set", f"{text!r} sets an option of {name}; the search is of {target}")
        if len(values) != 1:
            raise StudyError("set", f"a setting takes one value: {text!r}")
        fixed[option] = values[0]
    check_run(target, fixed)
    return fixed


def parse_ranges(target: str, texts: Iterable[str], settings: Iterable[str] = ()) -> list[Dimension]:
    """The searched options of ``target``, every value of each checked against the emulation and the
    cost model (on top of ``settings``) before anything runs."""
    if target not in COST_TARGETS:
        raise StudyError("target", f"{target!r} has no cost model to search against; one of {', '.join(COST_TARGETS)}")
    fixed = fixed_options(target, settings)
    dimensions = [parse_range(target, text) for text in texts]
    if not dimensions:
        raise StudyError("range", "give at least one searched option, e.g. --range adc_bits=4:8")
    for dimension in dimensions:
        if dimension.option in fixed or [d.option for d in dimensions].count(dimension.option) > 1:
            raise StudyError("range", f"{dimension.option} is searched twice, or also set")
        for value in dimension.checked:
            try:
                check_run(target, {**fixed, dimension.option: value})
            except ValueError as error:
                raise StudyError("range", f"{dimension.option}={value!r} is not allowed: {error}") from None
    return dimensions


def explore(
    subject,
    target: str,
    dimensions: list[Dimension],
    *,
    fixed: dict | None = None,
    objective: str = "energy",
    trials: int = 30,
    seed: int = 0,
    population: int | None = None,
    device="cpu",
    executor: Executor | None = None,
    store: ResultStore | None = None,
    progress: Callable[[int, int, Run, float], None] | None = None,
) -> list[Result]:
    """Search ``target``'s ``dimensions`` for ``trials`` trials; the distinct runs, in trial order.

    NSGA-II (seeded with ``seed``) with ``population`` trials per generation (default: a third of the
    trials, 4 to 20, so a short search still evolves). A trial whose options were run before reuses
    that run; a run in ``store`` from an earlier, resumed search counts as a trial. As many trials run
    at once as the executor has workers. A failed run is a failed trial."""
    optuna = _optuna()
    if not (isinstance(trials, int) and trials >= 1):
        raise ValueError(f"trials must be a positive int, got {trials!r}")
    fixed, executor = dict(fixed or {}), executor or Sequential()
    distributions = {d.option: d.distribution() for d in dimensions}
    sampler = optuna.samplers.NSGAIISampler(population_size=population or min(20, max(4, trials // 3)), seed=seed)
    search = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    runs: dict[str, Result] = {}  # key -> result, in trial order

    def objectives(result: Result) -> list[float] | None:
        cost = cost_of(result, objective)
        return None if cost is None else [result.accuracy, float(cost)]

    for result in store.results() if store is not None else []:  # a resumed search
        params = {k: result.run.options.get(k) for k in distributions}
        if result.run.target == target and objectives(result) and None not in params.values():
            runs[run_key(result.run)] = result
            search.add_trial(
                optuna.trial.create_trial(params=params, distributions=distributions, values=objectives(result))
            )
    done = len(search.trials)
    while done < trials:
        asked = [search.ask(distributions) for _ in range(min(executor.parallelism, trials - done))]
        batch = [Run(target, {**fixed, **trial.params}) for trial in asked]
        new = {
            run_key(run): (index, run) for index, run in reversed(list(enumerate(batch))) if run_key(run) not in runs
        }
        for _, result, info in executor.results(subject, sorted(new.values(), key=lambda pair: pair[0]), device):
            runs[run_key(result.run)] = result
            if store is not None:
                store.add(result, info)
        for trial, run in zip(asked, batch):
            result = runs[run_key(run)]
            values = objectives(result)
            search.tell(trial, values) if values else search.tell(trial, state=optuna.trial.TrialState.FAIL)
            done += 1
            if progress is not None:
                progress(done, trials, run, result.emulation_s)
    return list(runs.values())


def _optuna():
    try:
        import optuna
    except ImportError:
        raise ImportError("edgenum explore needs Optuna: pip install 'edgenum[explore]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna
