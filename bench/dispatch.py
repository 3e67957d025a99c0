"""The fixed cost of emulation on small models (tests.architectures, seeded random weights): per model, the
FP32 forward, the same forward emulated on "softex" with every emulated operation switched off (what the
function mode, the module entries and the option lookups cost: the dispatch; on ``nn.TransformerEncoder``
also the spelled-out attention that replaces torch's fused kernel), and emulated with the defaults; each
over FP32 (paired medians, as in bench/coverage.py), and the dispatch's share of what the
emulation adds.

    python -m bench.dispatch [--models gpt2,distilbert] [--repeats 5]
"""

import warnings

import torch

from bench.timing import arguments, paired_ratio, parse
from numerics.nn import emulate
from tests.architectures import ARCHITECTURES

TRANSFORMERS = ("gpt2", "llama", "t5", "bart", "whisper", "vit", "distilbert", "torch_encoder")


def main() -> None:
    ap = arguments(__doc__, repeats=5)
    ap.add_argument("--models", default=",".join(TRANSFORMERS))
    args = parse(ap)
    print("| model | FP32 us | dispatch only / FP32 | emulated / FP32 | dispatch share of the added time |")
    print("|---|---:|---:|---:|---:|")
    for name in args.models.split(","):
        model, inputs = ARCHITECTURES[name].on(args.device)
        dispatch_only = emulate(model, "softex", softmax=False, matmul=False, gelu=False)
        emulated = emulate(model, "softex")
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            alone = paired_ratio(lambda: dispatch_only(**inputs), lambda: model(**inputs), args.repeats)  # noqa: B023
            full = paired_ratio(lambda: emulated(**inputs), lambda: model(**inputs), args.repeats).ratio  # noqa: B023
        fp32, dispatch = alone.ref_seconds, alone.ratio  # FP32's time from the same rounds
        share = (dispatch - 1) / (full - 1) if full > 1 else float("nan")
        print(f"| {name} | {fp32 * 1e6:.0f} | {dispatch:.2f}x | {full:.2f}x | {share:.0%} |", flush=True)


if __name__ == "__main__":
    main()
