"""Coverage of every target on the architectures users bring (tests.architectures, seeded random weights):
per model and target, what was emulated in one forward pass, what was not, the output's cosine vs FP32,
the emulated forward's time over FP32's (the median ratio of the best of 5 calls each, timed back to back, so
that load from other processes hits both alike) and the cost model's cycles.

    python -m bench.coverage [--models gpt2,resnet18] [--targets softex,hastily] [--repeats 3]
"""

import warnings

import torch
import torch.nn.functional as F

from bench.timing import arguments, paired_ratio, parse
from hwmodels import estimate
from numerics.nn import emulate
from tests.architectures import ARCHITECTURES

TARGETS = ("softex", "hastily", "atleus", "flexisaga")


def _cosine(a, b) -> float:
    return F.cosine_similarity(a.double().flatten(1), b.double().flatten(1), dim=-1).mean().item()


def _counts(counter) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counter.items())) or "-"


def main() -> None:
    ap = arguments(__doc__, repeats=3)
    ap.add_argument("--models", default=",".join(ARCHITECTURES))
    ap.add_argument("--targets", default=",".join(TARGETS))
    args = parse(ap)
    print("| model | target | emulated in one pass | unemulated | cosine vs FP32 | time vs FP32 | cycles |")
    print("|---|---|---|---|---:|---:|---:|")
    for name in args.models.split(","):
        arch = ARCHITECTURES[name]
        model, inputs = arch.on(args.device)
        with torch.no_grad():
            reference = arch.readout(model(**inputs))
        for target in args.targets.split(","):
            em = emulate(model, target)
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = arch.readout(em(**inputs))
                counts, unemulated = dict(em.emulation.counts), dict(em.emulation.unemulated)
                ratio = paired_ratio(lambda: em(**inputs), lambda: model(**inputs), args.repeats).ratio  # noqa: B023
            cycles = estimate(em, forward_kwargs=inputs).total_cycles
            print(
                f"| {name} | {target} | {_counts(counts)} | {_counts(unemulated)} | {_cosine(out, reference):.4f} "
                f"| {ratio:.1f}x | {cycles:,} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
