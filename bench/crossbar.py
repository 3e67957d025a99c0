"""Crossbar emulation cost: a 384 -> 1536 Linear on 128 tokens, emulated time / nn.Linear time.

For each preset, the fast path (a configuration that cannot clip, computed as one exact
integer product) and the clipping path (saturating conversions, bit for bit) of the integer product,
then the whole layer as the target swaps it in (``CrossbarLinear``: input codes, the product, the
scales; the preset's own ADC, the target's weight granularity) on float inputs. Ratios are medians over
several back-to-back runs on the current device (CPU by default).

    python bench/crossbar.py [--device cuda] [--threads N]
"""

from __future__ import annotations

import dataclasses
import pathlib
import sys

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from bench.timing import arguments, paired_ratio, parse  # noqa: E402
from numerics.cim_layers import CrossbarLinear  # noqa: E402
from numerics.crossbar import ATLEUS_RERAM, HASTILY_SRAM, crossbar_matmul  # noqa: E402
from numerics.quant import QuantConfig  # noqa: E402

TOKENS, D_IN, D_OUT = 128, 384, 1536


def main() -> None:
    args = parse(arguments(__doc__, repeats=5))
    dev = args.device
    g = torch.Generator().manual_seed(0)
    linear = torch.nn.Linear(D_IN, D_OUT).to(dev)
    x = torch.randn(TOKENS, D_IN, generator=g).to(dev)
    ref = torch.no_grad()(lambda: linear(x))
    x_int = torch.randint(-127, 128, (TOKENS, D_IN), generator=g).to(dev)
    w_int = torch.randint(-127, 128, (D_IN, D_OUT), generator=g).to(dev)
    cases = {
        "ATLEUS_RERAM": {
            "fast": ATLEUS_RERAM,  # flip keeps counts <= 192 < 256
            "clipping": dataclasses.replace(ATLEUS_RERAM, flip_columns=False),
        },
        "HASTILY_SRAM": {"fast": dataclasses.replace(HASTILY_SRAM, adc_bits=7), "clipping": HASTILY_SRAM},
    }
    print(
        f"{TOKENS} tokens x Linear({D_IN} -> {D_OUT}) on {dev}, "
        f"{torch.get_num_threads()} threads; ratio = median of emulated / nn.Linear"
    )
    print(f"{'preset':<14}{'path':<10}{'ms':>10}{'ratio':>10}")
    for name, paths in cases.items():
        for path, cfg in paths.items():
            assert cfg.can_clip == (path == "clipping")
            t, _, r = paired_ratio(lambda cfg=cfg: crossbar_matmul(x_int, w_int, cfg), ref, args.repeats)
            print(f"{name:<14}{path:<10}{t * 1e3:>10.2f}{r:>10.1f}")
        preset = ATLEUS_RERAM if name == "ATLEUS_RERAM" else HASTILY_SRAM
        quant = QuantConfig(granularity="crossbar" if name == "ATLEUS_RERAM" else "channel")
        layer = CrossbarLinear(linear.cpu(), 8, preset, quant).to(dev)
        t, _, r = paired_ratio(torch.no_grad()(lambda layer=layer: layer(x)), ref, args.repeats)
        print(f"{name:<14}{'layer':<10}{t * 1e3:>10.2f}{r:>10.1f}")


if __name__ == "__main__":
    main()
