"""expp time / torch.exp time on the same 16M-element bfloat16 tensor, measured in the same run.

python bench/expp.py [--numel N] [--device cpu|cuda]
"""

import pathlib
import sys

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from bench.timing import arguments, median_seconds, parse  # noqa: E402
from numerics.expp import expp, expp_table  # noqa: E402


def main() -> None:
    ap = arguments(__doc__, repeats=9)
    ap.add_argument("--numel", type=int, default=16 * 1024 * 1024)
    args = parse(ap)
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(args.numel, generator=g) * 8).to(torch.bfloat16).to(args.device)
    expp_table(x.device)  # built once per device; not part of the per-call cost
    t_exp = median_seconds(lambda: torch.exp(x), repeats=args.repeats)
    t_expp = median_seconds(lambda: expp(x), repeats=args.repeats)
    print(
        f"device {args.device}, {args.numel:,} bfloat16 elements, {torch.get_num_threads()} threads, "
        f"median of {args.repeats}"
    )
    print(f"torch.exp  {t_exp * 1e3:8.2f} ms")
    print(f"expp       {t_expp * 1e3:8.2f} ms")
    print(f"ratio expp / torch.exp = {t_expp / t_exp:.2f}")


if __name__ == "__main__":
    main()
