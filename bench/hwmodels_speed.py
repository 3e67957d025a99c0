"""Wall time of estimate() on BERT-base at sequence 512, tracing included.

FlexiSAGA prices the masks of an emulated copy, so its time includes pruning the 72 Linears.
Run: PYTHONPATH=. python bench/hwmodels_speed.py   (prints best and median of 5 per target)
"""

import statistics
import time

import torch
import transformers

from hwmodels import TARGETS, estimate


def main(repeats: int = 5) -> None:
    torch.manual_seed(0)
    model = transformers.BertModel(transformers.BertConfig()).eval()
    ids = torch.randint(0, model.config.vocab_size, (1, 512))
    estimate(model, "softex", ids)  # warm-up (first dispatch, allocator)
    for target in TARGETS:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            estimate(model, target, ids)
            times.append(time.perf_counter() - start)
        print(f"{target:<10} best {min(times):.3f} s  median {statistics.median(times):.3f} s")


if __name__ == "__main__":
    main()
