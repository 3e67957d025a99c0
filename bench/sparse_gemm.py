"""FlexiSAGA sparse GEMM: PE-order kernel vs torch.matmul, and bitmap compression, by sparsity.

python bench/sparse_gemm.py [--threads N] [--eager]   (prints ratios; timings depend on the machine)

The PE-order columns are the compiled kernel where a C compiler is found (numerics/kernels.py), else
the eager loop: ``sparse_gemm`` on a weight that comes back (its plan kept), plain and fused; the kernel
path it picks and the other path's time over it (what ``numerics.kernels.COLUMN_COST`` is read from);
the whole ``SparseLinear`` against ``nn.Linear`` (no gradient); and the plan's one-off cost
against one matmul; each ratio the median of back-to-back pairs (bench/timing.py). --eager adds a
column timing the eager loop itself (one call each: it is slow).
"""

import math
import os
import pathlib
import sys

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from bench.timing import arguments, median_seconds, paired_ratio, parse  # noqa: E402
from numerics import kernels  # noqa: E402
from numerics.sparse_linear import SparseLinear  # noqa: E402
from numerics.sparsity import FlexiSAGAConfig, encode_bitmap, prune, sparse_gemm  # noqa: E402


def eager_seconds(fn) -> float:
    old = os.environ.get("EDGENUM_KERNELS")
    os.environ["EDGENUM_KERNELS"] = "eager"
    try:
        return median_seconds(fn, repeats=1, warmup=0)
    finally:
        os.environ.pop("EDGENUM_KERNELS")
        if old is not None:
            os.environ["EDGENUM_KERNELS"] = old


def main(m=128, k=768, n=3072, tile=(16, 16)):
    ap = arguments(__doc__, repeats=5)
    ap.add_argument("--eager", action="store_true", help="also time the eager PE-order loop")
    args = parse(ap)
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(m, k, generator=g), torch.randn(k, n, generator=g)
    fused = FlexiSAGAConfig(fused_mac=True)
    kernel = "compiled kernel" if kernels.available() else "eager loop (no C compiler)"
    print(f"(M, K, N) = ({m}, {k}, {n}), tile {tile}, torch threads {torch.get_num_threads()}, PE order: {kernel}")
    print(
        "vector  sparsity  seq/matmul  fused/matmul"
        + ("  eager/matmul" if args.eager else "")
        + "  path     other/path  layer/linear  plan/matmul  compression"
    )
    for vector in ("row", "col"):
        for s in (0.0, 0.5, 0.75):
            pruned, _ = prune(w, s, tile=tile, vector=vector)
            matmul = lambda pruned=pruned: torch.matmul(x, pruned)  # noqa: E731
            seq = paired_ratio(lambda pruned=pruned: sparse_gemm(x, pruned), matmul, args.repeats).ratio
            fused_ratio = paired_ratio(lambda pruned=pruned: sparse_gemm(x, pruned, fused), matmul, args.repeats).ratio
            eager = (
                f"  {eager_seconds(lambda pruned=pruned: sparse_gemm(x, pruned)) / median_seconds(matmul):12.1f}"
                if args.eager
                else ""
            )
            plan = kernels.pe_plan(pruned[None])
            path = plan.path(m) if plan is not None else "eager"
            other = "blocks" if path == "columns" else "columns"
            other_ratio = math.nan
            if plan is not None:
                w3, x3 = pruned[None], x[None]
                other_ratio = paired_ratio(
                    lambda plan=plan, w3=w3, x3=x3, other=other: kernels.pe_gemm(x3, w3, False, plan, other),
                    lambda plan=plan, w3=w3, x3=x3, path=path: kernels.pe_gemm(x3, w3, False, plan, path),
                    args.repeats,
                ).ratio
            plan_ratio = paired_ratio(lambda pruned=pruned: kernels.pe_plan(pruned[None]), matmul, args.repeats).ratio
            linear = torch.nn.Linear(k, n)
            layer = SparseLinear(pruned.T, pruned.T != 0, linear.bias)
            with torch.no_grad():
                layer_ratio = paired_ratio(
                    lambda layer=layer: layer(x), lambda linear=linear: linear(x), args.repeats
                ).ratio
            e = encode_bitmap(pruned, tile, vector=vector)
            print(
                f"{vector:6}  {s:8.2f}  {seq:10.2f}  {fused_ratio:12.2f}{eager}  {path:7}  {other_ratio:10.2f}"
                f"  {layer_ratio:12.2f}  {plan_ratio:11.2f}  {e.compression_ratio:11.3f}"
            )


if __name__ == "__main__":
    main()
