"""FlexiSAGA sparse GEMM: PE-order kernel vs torch.matmul, and bitmap compression, by sparsity.

python bench/sparse_gemm.py [--threads N]   (prints ratios; timings depend on the machine)
"""

import pathlib
import sys

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from bench.timing import arguments, median_seconds, parse  # noqa: E402
from numerics.sparsity import FlexiSAGAConfig, encode_bitmap, prune, sparse_gemm  # noqa: E402


def main(m=128, k=768, n=768, tile=(16, 16)):
    args = parse(arguments(__doc__, repeats=3))
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(m, k, generator=g), torch.randn(k, n, generator=g)
    fused = FlexiSAGAConfig(fused_mac=True)
    print(f"(M, K, N) = ({m}, {k}, {n}), tile {tile}, torch threads {torch.get_num_threads()}")
    print("vector  sparsity  seq/matmul  fused/matmul  compression  DecU words/dense words")
    for vector in ("row", "col"):
        for s in (0.0, 0.5, 0.75):
            pruned, _ = prune(w, s, tile=tile, vector=vector)
            t_mm = median_seconds(lambda pruned=pruned: torch.matmul(x, pruned), repeats=args.repeats, warmup=1)
            t_seq = median_seconds(lambda pruned=pruned: sparse_gemm(x, pruned), repeats=args.repeats, warmup=1)
            t_fused = median_seconds(lambda pruned=pruned: sparse_gemm(x, pruned, fused), repeats=1, warmup=0)
            e = encode_bitmap(pruned, tile, vector=vector)
            print(
                f"{vector:6}  {s:8.2f}  {t_seq / t_mm:10.1f}  {t_fused / t_mm:12.1f}  "
                f"{e.compression_ratio:11.3f}  {e.decu_words / (k * n):10.3f}"
            )


if __name__ == "__main__":
    main()
