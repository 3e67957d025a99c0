"""FlexiSAGA sparse GEMM: PE-order kernel vs torch.matmul, and bitmap compression, by sparsity.

Run: PYTHONPATH=. python bench/sparse_gemm.py   (prints ratios; timings depend on the machine)
"""
import time

import torch

from numerics.sparsity import FlexiSAGAConfig, encode_bitmap, prune, sparse_gemm


def best_of(fn, repeat=3):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main(m=128, k=768, n=768, tile=(16, 16)):
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(m, k, generator=g), torch.randn(k, n, generator=g)
    fused = FlexiSAGAConfig(fused_mac=True)
    print(f"(M, K, N) = ({m}, {k}, {n}), tile {tile}, torch threads {torch.get_num_threads()}")
    print("vector  sparsity  seq/matmul  fused/matmul  compression  DecU words/dense words")
    for vector in ("row", "col"):
        for s in (0.0, 0.5, 0.75):
            pruned, _ = prune(w, s, tile=tile, vector=vector)
            t_mm = best_of(lambda: torch.matmul(x, pruned))
            t_seq = best_of(lambda: sparse_gemm(x, pruned))
            t_fused = best_of(lambda: sparse_gemm(x, pruned, fused), repeat=1)
            e = encode_bitmap(pruned, tile, vector=vector)
            print(f"{vector:6}  {s:8.2f}  {t_seq / t_mm:10.1f}  {t_fused / t_mm:12.1f}  "
                  f"{e.compression_ratio:11.3f}  {e.decu_words / (k * n):10.3f}")


if __name__ == "__main__":
    main()
