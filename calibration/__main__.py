"""python -m calibration [--refit] [--loo] [--out DIR]

Prints every published figure beside the cost model's value and writes the table as
report.csv and report.md (default: beside this file). --refit first refits the free constants
and rewrites hwmodels/fitted.json; --loo then refits each target once per fitted figure, without
that figure, and keeps how well the model predicts it in calibration/loo.json (a few minutes).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from . import fit, loo, report


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m calibration", description=__doc__.split("\n\n")[1])
    parser.add_argument("--refit", action="store_true", help="refit and rewrite hwmodels/fitted.json first")
    parser.add_argument("--loo", action="store_true", help="leave-one-out: refit without each figure, then report")
    parser.add_argument(
        "--out",
        default=str(Path(__file__).parent),
        help="directory for report.csv and report.md (default: calibration/)",
    )
    args = parser.parse_args(argv)
    if args.refit:
        fit.write_fitted()
    if args.loo:
        loo.write(loo.run())
    lines = report.lines()
    print(report.to_text(lines), end="")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.csv").write_text(report.to_csv(lines), encoding="utf-8")
    (out / "report.md").write_text(report.to_markdown(lines), encoding="utf-8")
    print(f"wrote {out / 'report.csv'} and {out / 'report.md'}")


if __name__ == "__main__":
    main()
