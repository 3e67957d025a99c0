"""RedMulE's matrix product with BF16 operands (the SoftEx cluster's GEMM engine, softex.md §6).

``bf16_matmul`` is what the ``"softex"`` target runs for every product and what the Atleus systolic
tier runs in BF16 (``sa_dtype="bfloat16"``).
"""

from __future__ import annotations

import torch

from numerics.formats import bf16_values, round_to_bfloat16

__all__ = ["bf16_matmul", "ACCUMULATIONS"]

ACCUMULATIONS = ("fp32", "bf16")
"""Accumulator formats of :func:`bf16_matmul`."""


def _operand(t: torch.Tensor) -> torch.Tensor:
    """``t`` rounded to BF16 (nearest even), as float32. NaN payloads are left as the cast makes them: a NaN
    operand only makes NaN outputs, which the result's rounding makes canonical (two torch calls instead
    of :func:`bf16_values`' five: products run at every layer of every pass)."""
    if t.dtype == torch.float64:
        return bf16_values(t).float()
    if t.dtype == torch.bfloat16:
        return t.detach().float()
    return t.detach().float().to(torch.bfloat16).float()


def bf16_matmul(
    a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None, *, accumulate: str = "fp32"
) -> torch.Tensor:
    """``a @ b (+ bias)`` with BF16 operands and a BF16 result, as a float32 tensor.

    ``accumulate="fp32"``: products (exact in FP32) summed in FP32, bias added in FP32, one rounding
    to BF16 at the end (the summation order is the host's; only the last bits of the FP32 sum
    depend on it). ``accumulate="bf16"``: a chained fused multiply-add whose accumulator is BF16,
    ``acc = bf16(acc + a_k b_k)`` for k = 0..K-1 starting from the bias (or +0), one rounding per step.
    """
    if accumulate not in ACCUMULATIONS:
        raise ValueError(f"matmul_accumulate must be one of {ACCUMULATIONS}; got {accumulate!r}")
    a32, b32 = _operand(a), _operand(b)
    if accumulate == "fp32":
        out = torch.matmul(a32, b32)
        if bias is not None:
            out = out + bias.detach().float()
        return bf16_values(out).float()
    a64, b64 = a32.double(), b32.double()
    if a64.dim() == 1:
        a64 = a64.unsqueeze(0)
    if b64.dim() == 1:
        b64 = b64.unsqueeze(-1)
    shape = torch.broadcast_shapes(a64.shape[:-2], b64.shape[:-2]) + (a64.shape[-2], b64.shape[-1])
    acc = torch.zeros(shape, dtype=torch.float64, device=a.device)
    if bias is not None:
        acc = acc + bf16_values(bias).double()
    for k in range(a64.shape[-1]):
        # the product of two BF16 values is exact in float64, and one float64 sum of a 16-bit and an
        # 8-bit value rounds innocuously before the single rounding to BF16 (53 >= 2*16 + 2)
        acc = round_to_bfloat16(acc + a64[..., :, k : k + 1] * b64[..., k : k + 1, :]).double()
    out = acc.float()
    if a.dim() == 1:
        out = out.squeeze(-2)
    if b.dim() == 1:
        out = out.squeeze(-1)
    return out
