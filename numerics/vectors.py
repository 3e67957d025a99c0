"""Golden test vectors for RTL testbenches: deterministic stimulus / expected-output pairs of the
bit-exact functions, as hexadecimal text files (one code per line, what ``$readmemh`` reads) plus a
JSON manifest.

    from numerics.vectors import write_vectors
    write_vectors("softmax", "out/softmax", lanes=8, length=1024, accumulators=4)

or ``python -m numerics vectors softmax --lanes 8 --length 1024 --accumulators 4 --out out/softmax``.

Every set mixes seeded random stimulus with the edge cases the specs call out (special values,
saturation, partial beats, rows with no finite logit). Each file holds one code per line, lowest
index first, in row-major order, written in two's complement at the width the manifest gives
(``bits``, with ``signed`` for two's-complement streams); :func:`read_vectors` reads a set back.

| function | stimulus | expected | spec |
|---|---|---|---|
| ``expp`` | every BF16 code (65,536) | BF16 codes | softex.md §2 |
| ``softmax`` | ``rows`` x ``length`` BF16 codes | BF16 codes | softex.md §3 |
| ``gelu`` | every BF16 code | BF16 codes | softex.md §4 |
| ``crossbar`` | inputs ``m`` x ``k``, weights ``k`` x ``n`` (integers) | outputs ``m`` x ``n`` | atleus.md §2.3 |
| ``uclm_exp`` | FP32 codes | FP32 codes | hastily.md §2.3 |
| ``uclm_softmax`` | int logits ``rows`` x ``length`` (``scale`` in the manifest) | uint8 codes | hastily.md §2.4 |
| ``bitmap`` | a pruned ``k`` x ``n`` FP32 weight | vector bits, element bits, FP32 values | flexisaga.md §2.4 |
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
from pathlib import Path
from typing import Callable

import torch

from numerics.validation import check_int

__all__ = ["FUNCTIONS", "make_vectors", "write_vectors", "read_vectors", "version"]

_BF16_CODES = 1 << 16


def version() -> str:
    """The installed edgenum version ("unknown" when run from a source tree that is not installed)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as _version

    try:
        return _version("edgenum")
    except PackageNotFoundError:
        return "unknown"


@dataclasses.dataclass(frozen=True)
class Stream:
    """One file of a vector set: integer codes, their width in bits and whether they are two's complement
    (float codes, bit flags and unsigned codes are not)."""

    codes: torch.Tensor
    bits: int
    shape: tuple
    signed: bool = False


def _stream(codes: torch.Tensor, bits: int, signed: bool = False) -> Stream:
    return Stream(codes.detach().to(torch.int64).cpu().contiguous(), bits, tuple(codes.shape), signed)


def _all_bf16() -> torch.Tensor:
    from numerics.formats import bits_to_bf16

    return bits_to_bf16(torch.arange(-(1 << 15), 1 << 15, dtype=torch.int32).to(torch.int16))


def _bf16_codes(x: torch.Tensor) -> torch.Tensor:
    from numerics.formats import bf16_to_bits

    return bf16_to_bits(x).to(torch.int64) & 0xFFFF


def _expp(seed: int) -> tuple[dict, dict, dict]:
    from numerics.expp import expp

    x = _all_bf16()
    return {}, {"x": _stream(_bf16_codes(x), 16)}, {"y": _stream(_bf16_codes(expp(x)), 16)}


def _gelu(seed: int, terms: int = 4) -> tuple[dict, dict, dict]:
    from numerics.softex import gelu

    x = _all_bf16()
    return {"terms": terms}, {"x": _stream(_bf16_codes(x), 16)}, {"y": _stream(_bf16_codes(gelu(x, terms=terms)), 16)}


def _softmax_rows(rows: int, length: int, g: torch.Generator) -> torch.Tensor:
    """Seeded rows, the first ones replaced by the spec's edge cases (softex.md §3.5)."""
    x = torch.randn(rows, length, generator=g) * 4
    edge = [
        torch.full((length,), float("-inf")),  # no finite logit: all +0
        torch.where(torch.arange(length) % 3 == 0, float("-inf"), x[0]),  # -inf entries give +0
        torch.linspace(-128, 128, length),  # wide range: subnormal outputs
        torch.zeros(length),  # uniform row
        torch.where(torch.arange(length) == length - 1, 30.0, x[1]),  # maximum in the last (partial) beat
        torch.where(torch.arange(length) == 0, float("nan"), x[2]),  # NaN: the whole row NaN
        torch.where(torch.arange(length) == length // 2, float("inf"), x[3]),  # +inf: the whole row NaN
        torch.linspace(0, 0.01 * length, length),  # slowly rising: the max moves every beat
    ]
    for i, row in enumerate(edge[:rows]):
        x[i] = row
    return x.to(torch.bfloat16)


def _softmax(
    seed: int, lanes: int = 8, accumulators: int = 1, length: int = 1024, rows: int = 16, flush_subnormals: bool = False
) -> tuple[dict, dict, dict]:
    from numerics.softex import softmax

    _check_positive("length", length)
    _check_positive("rows", rows)
    x = _softmax_rows(rows, length, torch.Generator().manual_seed(seed))
    y = softmax(x, -1, lanes=lanes, accumulators=accumulators, flush_subnormals=flush_subnormals)
    options = {
        "lanes": lanes,
        "accumulators": accumulators,
        "length": length,
        "rows": rows,
        "flush_subnormals": flush_subnormals,
        "partial_beat": length % lanes != 0,
    }
    return options, {"x": _stream(_bf16_codes(x), 16)}, {"y": _stream(_bf16_codes(y), 16)}


def _crossbar(
    seed: int, preset: str = "atleus", adc_bits: int | None = None, m: int = 16, k: int = 256, n: int = 64
) -> tuple[dict, dict, dict]:
    from numerics.crossbar import ATLEUS_RERAM, HASTILY_SRAM, crossbar_matmul

    presets = {"atleus": ATLEUS_RERAM, "hastily": HASTILY_SRAM}
    if preset not in presets:
        raise ValueError(f"preset must be one of {sorted(presets)}, got {preset!r}")
    config = presets[preset] if adc_bits is None else dataclasses.replace(presets[preset], adc_bits=adc_bits)
    for name, value in (("m", m), ("k", k), ("n", n)):
        _check_positive(name, value)
    g = torch.Generator().manual_seed(seed)
    (x_lo, x_hi), (w_lo, w_hi) = config.input_range, config.weight_range
    x = torch.randint(x_lo, x_hi + 1, (m, k), generator=g)
    w = torch.randint(w_lo, w_hi + 1, (k, n), generator=g)
    x[0], w[:, 0] = x_hi, w_hi  # every count at its largest: the ADC saturates
    x[min(1, m - 1)], w[:, min(1, n - 1)] = x_lo, w_lo
    y = crossbar_matmul(x, w, config)
    options = {
        "preset": preset,
        "adc_bits": config.adc_bits,
        "m": m,
        "k": k,
        "n": n,
        "config": {f.name: getattr(config, f.name) for f in dataclasses.fields(config)},
    }
    return (
        options,
        {
            "x": _stream(x, config.input_bits, signed=config.input_encoding == "twos_complement"),
            "w": _stream(w, config.weight_bits, signed=True),
        },
        {"y": _stream(y, config.accumulator_bits, signed=True)},
    )


def _fp32_codes(x: torch.Tensor) -> torch.Tensor:
    from numerics.formats import fp32_to_bits

    return fp32_to_bits(x.to(torch.float32)).to(torch.int64) & 0xFFFFFFFF


def _uclm_exp(seed: int, count: int = 4096) -> tuple[dict, dict, dict]:
    from numerics.uclm import exp_lut

    _check_positive("count", count)
    g = torch.Generator().manual_seed(seed)
    x = torch.cat(
        [
            torch.tensor([0.0, -0.0, float("-inf"), -1e-30, 1e-30, -87.0, 80.0, math.log(2) / 128]),
            torch.rand(count, generator=g) * 40 - 30,
        ]
    )
    return {"count": int(x.numel())}, {"x": _stream(_fp32_codes(x), 32)}, {"y": _stream(_fp32_codes(exp_lut(x)), 32)}


def _uclm_softmax(seed: int, length: int = 128, rows: int = 16, scale: float = 1 / 64) -> tuple[dict, dict, dict]:
    from numerics.uclm import softmax as uclm_softmax

    _check_positive("length", length)
    _check_positive("rows", rows)
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(-2000, 2000, (rows, length), generator=g)
    x[0] = 0  # uniform
    if rows > 1:
        x[1] = -(1 << 20)
        x[1, length // 2] = 1 << 20  # one dominant logit: the others underflow
    codes = uclm_softmax(x, scale=scale, return_codes=True)
    return (
        {"length": length, "rows": rows, "scale": scale},
        {"x": _stream(x, 32, signed=True)},
        {"y": _stream(codes, 8)},
    )


def _bitmap(
    seed: int, k: int = 64, n: int = 48, rows: int = 16, cols: int = 16, sparsity: float = 0.5, vector: str = "row"
) -> tuple[dict, dict, dict]:
    from numerics.sparsity import encode_bitmap, prune

    g = torch.Generator().manual_seed(seed)
    w, _ = prune(torch.randn(k, n, generator=g), sparsity, tile=(rows, cols), vector=vector)
    encoded = encode_bitmap(w, (rows, cols), vector=vector)
    options = {
        "k": k,
        "n": n,
        "tile": [rows, cols],
        "sparsity": sparsity,
        "vector": vector,
        "metadata_bits": encoded.metadata_bits,
    }
    return (
        options,
        {"w": _stream(_fp32_codes(w), 32)},
        {
            "vector_bits": _stream(encoded.vector_bits, 1),
            "element_bits": _stream(encoded.element_bits, 1),
            "values": _stream(_fp32_codes(encoded.values), 32),
        },
    )


def _check_positive(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")


FUNCTIONS: dict[str, Callable] = {
    "expp": _expp,
    "softmax": _softmax,
    "gelu": _gelu,
    "crossbar": _crossbar,
    "uclm_exp": _uclm_exp,
    "uclm_softmax": _uclm_softmax,
    "bitmap": _bitmap,
}
"""Function name -> generator(seed, **options) of (options, stimulus streams, expected streams)."""


def make_vectors(function: str, *, seed: int = 0, **options) -> dict:
    """The vector set of ``function`` as {"options", "stimulus", "expected"} (streams of codes)."""
    if function not in FUNCTIONS:
        raise ValueError(f"function must be one of {', '.join(FUNCTIONS)}, got {function!r}")
    check_int("seed", seed, 0, 2**63 - 1)
    accepted = [p for p in inspect.signature(FUNCTIONS[function]).parameters if p != "seed"]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(unknown)} for {function}; valid options: {', '.join(accepted) or 'none'}"
        )
    used, stimulus, expected = FUNCTIONS[function](seed, **options)
    return {"options": used, "stimulus": stimulus, "expected": expected}


def _hex_lines(stream: Stream) -> str:
    digits = max(1, -(-stream.bits // 4))
    mask = (1 << stream.bits) - 1
    return "".join(f"{int(c) & mask:0{digits}x}\n" for c in stream.codes.flatten().tolist())


def write_vectors(function: str, out_dir, *, seed: int = 0, **options) -> Path:
    """Write the vector set of ``function`` into ``out_dir`` (one ``.hex`` file per stream and
    ``manifest.json``); returns the manifest's path."""
    vectors = make_vectors(function, seed=seed, **options)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for role in ("stimulus", "expected"):
        for name, stream in vectors[role].items():
            path = out / f"{role}_{name}.hex"
            path.write_text(_hex_lines(stream))
            files[f"{role}/{name}"] = {
                "file": path.name,
                "bits": stream.bits,
                "signed": stream.signed,
                "shape": list(stream.shape),
                "count": int(stream.codes.numel()),
            }
    manifest = {
        "function": function,
        "options": vectors["options"],
        "seed": seed,
        "edgenum_version": version(),
        "format": "one hexadecimal code per line, 'bits' wide (two's complement where 'signed'), row-major",
        "files": files,
    }
    path = out / "manifest.json"
    path.write_text(json.dumps(manifest, indent=2, default=str))
    return path


def read_vectors(out_dir) -> dict:
    """A written set read back: the manifest plus {"stimulus/<name>" or "expected/<name>": int64 tensor},
    the streams the manifest marks ``signed`` sign-extended."""
    out = Path(out_dir)
    manifest = json.loads((out / "manifest.json").read_text())
    tensors = {}
    for key, info in manifest["files"].items():
        values = [int(line, 16) for line in (out / info["file"]).read_text().split()]
        t = torch.tensor(values, dtype=torch.int64).reshape(info["shape"])
        bits = info["bits"]
        if info["signed"]:
            t = torch.where(t >= 1 << (bits - 1), t - (1 << bits), t)
        tensors[key] = t
    return {"manifest": manifest, **tensors}
