"""expp time / torch.exp time on the same 16M-element bfloat16 tensors, measured in the same run, for
inputs uniform in [-20, 0], N(0, 1) and N(0, 8^2): the median of per-round ratios, each round
timing one call of each back to back.

python bench/expp.py [--numel N] [--device cpu|cuda]
"""

import pathlib
import sys

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from bench.timing import arguments, paired_ratio, parse  # noqa: E402
from numerics.expp import expp, expp_table  # noqa: E402


def main() -> None:
    ap = arguments(__doc__, repeats=9)
    ap.add_argument("--numel", type=int, default=16 * 1024 * 1024)
    args = parse(ap)
    g = torch.Generator().manual_seed(0)
    inputs = {
        "uniform [-20, 0]": torch.rand(args.numel, generator=g) * -20,
        "N(0, 1)": torch.randn(args.numel, generator=g),
        "N(0, 8^2)": torch.randn(args.numel, generator=g) * 8,
    }
    expp_table(torch.device(args.device))  # built once per device; not part of the per-call cost
    print(
        f"device {args.device}, {args.numel:,} bfloat16 elements, {torch.get_num_threads()} threads, "
        f"medians of {args.repeats} rounds timing both back to back"
    )
    print("inputs             torch.exp ms   expp ms   expp / torch.exp")
    for name, values in inputs.items():
        x = values.to(torch.bfloat16).to(args.device)
        t_expp, t_exp, ratio = paired_ratio(lambda x=x: expp(x), lambda x=x: torch.exp(x), args.repeats, best_of=1)
        print(f"{name:17}  {t_exp * 1e3:12.2f}  {t_expp * 1e3:8.2f}  {ratio:17.2f}")


if __name__ == "__main__":
    main()
