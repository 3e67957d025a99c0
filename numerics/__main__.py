"""``python -m numerics``: golden test vectors for RTL testbenches.

    python -m numerics vectors expp --out out/expp
    python -m numerics vectors softmax --lanes 8 --length 1024 --accumulators 4 --out out/softmax
    python -m numerics vectors crossbar --preset hastily --adc-bits 5 --out out/crossbar
    python -m numerics --version

Function options are given as ``--name value`` (``-`` or ``_`` in names); see ``numerics.vectors``.
"""

from __future__ import annotations

import argparse
import sys

from numerics.vectors import FUNCTIONS, version, write_vectors


def _value(text: str):
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _options(extra: list[str]) -> dict:
    options, rest = {}, list(extra)
    while rest:
        flag = rest.pop(0)
        if not flag.startswith("--") or not rest or rest[0].startswith("--"):
            raise ValueError(f"options are '--name value' pairs; got {flag!r}")
        options[flag[2:].replace("-", "_")] = _value(rest.pop(0))
    return options


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m numerics", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"edgenum {version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    vectors = commands.add_parser("vectors", help="write a golden vector set (hex files + manifest.json)")
    vectors.add_argument("function", choices=sorted(FUNCTIONS))
    vectors.add_argument("--out", required=True, help="output folder")
    vectors.add_argument("--seed", type=int, default=0)
    args, extra = parser.parse_known_args(argv)
    try:
        path = write_vectors(args.function, args.out, seed=args.seed, **_options(extra))
    except (ValueError, TypeError) as error:
        print(f"python -m numerics vectors: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {path.parent}/ ({args.function}, seed {args.seed})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
