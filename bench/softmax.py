"""SoftEx softmax time / torch.softmax (FP32) time on the same (8, 12, 512, 512) scores, in the same run.

Target: ratio <= 5 (the median of per-round ratios, each round timing one call of each back to
back). Pass --threads 1 on a shared machine: oversubscribed OpenMP threads distort both timings.

    python bench/softmax.py [--shape 8 12 512 512] [--lanes 8] [--device cpu|cuda] [--threads N]
"""

import pathlib
import sys

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from bench.timing import arguments, paired_ratio, parse  # noqa: E402
from numerics.expp import expp_table  # noqa: E402
from numerics.softex import softmax  # noqa: E402


def main() -> None:
    ap = arguments(__doc__, repeats=7)
    ap.add_argument("--shape", type=int, nargs="+", default=[8, 12, 512, 512])
    ap.add_argument("--lanes", type=int, default=8)
    ap.add_argument("--accumulators", type=int, default=1)
    args = parse(ap)
    g = torch.Generator().manual_seed(0)
    x32 = (torch.randn(*args.shape, generator=g) * 3).to(args.device)
    x = x32.to(torch.bfloat16)  # input preparation, not timed
    expp_table(x.device)
    expp_table(x.device, torch.float32)
    emulated = lambda: softmax(x, lanes=args.lanes, accumulators=args.accumulators)  # noqa: E731
    t_sx, t_ref, ratio = paired_ratio(emulated, lambda: torch.softmax(x32, dim=-1), args.repeats, best_of=1)
    print(
        f"device {args.device}, shape {tuple(args.shape)}, lanes {args.lanes}, accumulators {args.accumulators}, "
        f"{torch.get_num_threads()} threads, medians of {args.repeats} rounds timing both back to back"
    )
    print(f"torch.softmax fp32  {t_ref * 1e3:9.2f} ms")
    print(f"softex softmax      {t_sx * 1e3:9.2f} ms")
    print(f"ratio softex / torch.softmax = {ratio:.2f}")


if __name__ == "__main__":
    main()
