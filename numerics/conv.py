"""Convolutions as the accelerators run them: im2col matrix products.

A convolution with ``groups`` = G is G independent products ``Y_g = X_g · W_g`` (flexisaga.md §5, the
cost side's trace uses the same view):

* ``X_g`` (M × K): M = batch · H_out · W_out output positions, K = C_in/G · k_h · k_w the receptive field
  in (channel, kernel row, kernel column) order, zero padding included;
* ``W_g`` (K × N): N = C_out/G output channels, ``W_g = weight[g·N : (g+1)·N].reshape(N, K).T``.

Depthwise convolutions (G = C_in) are the case K = k_h·k_w, N = C_out/C_in. Every target computes each
``Y_g`` with its own product, so a convolution is bit for bit the target's product of its im2col form.
Conv1d is the 2-D case with a kernel height of 1. Functional padding is zeros (``nn.Conv*`` applies other
padding modes itself before calling the functional form: :func:`module_input` does the same).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ConvFunctions",
    "ConvGeometry",
    "conv_call",
    "im2col",
    "weight_matrices",
    "from_gemm",
    "conv_as_gemm",
    "module_input",
    "is_depthwise",
    "copy_conv_attributes",
    "CONV_ATTRIBUTES",
]

ConvFunctions = (F.conv1d, F.conv2d)
"""The convolutions emulated (``torch.conv1d``/``torch.conv2d`` are the same functions)."""


@dataclasses.dataclass(frozen=True)
class ConvGeometry:
    """Stride, padding, dilation and groups of a 1-D or 2-D convolution (per spatial dimension)."""

    dims: int
    stride: tuple
    padding: tuple | str
    """Zero padding per side, or ``"same"``/``"valid"`` as ``F.conv2d`` takes it."""
    dilation: tuple
    groups: int = 1

    @classmethod
    def of(cls, dims: int, stride=1, padding=0, dilation=1, groups=1) -> ConvGeometry:
        """Normalise ``F.conv{dims}d``-style arguments (ints or tuples)."""

        def tup(v):
            return tuple(v) if isinstance(v, (tuple, list)) else (int(v),) * dims

        pad = padding if isinstance(padding, str) else tup(padding)
        return cls(dims, tup(stride), pad, tup(dilation), int(groups))

    def pads(self, kernel: tuple) -> tuple:
        """(before, after) zero padding per spatial dimension for a kernel of this size."""
        if self.padding == "valid":
            return tuple((0, 0) for _ in kernel)
        if self.padding == "same":  # total d·(k-1), the odd one after, as torch pads
            totals = [d * (k - 1) for d, k in zip(self.dilation, kernel)]
            return tuple((t // 2, t - t // 2) for t in totals)
        return tuple((p, p) for p in self.padding)


def conv_call(func, args, kwargs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, ConvGeometry]:
    """(input, weight, bias, geometry) of an ``F.conv1d``/``F.conv2d`` call."""
    names = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
    call = dict(zip(names, args))
    call.update(kwargs)
    dims = 1 if func is F.conv1d else 2
    geometry = ConvGeometry.of(
        dims, call.get("stride", 1), call.get("padding", 0), call.get("dilation", 1), call.get("groups", 1)
    )
    return call["input"], call["weight"], call.get("bias"), geometry


def im2col(x: torch.Tensor, kernel: tuple, geometry: ConvGeometry) -> tuple[torch.Tensor, tuple]:
    """The G matrices X_g, as one (G, M, K) tensor, and the output's spatial size. ``x`` is batched
    (N, C_in, *spatial)."""
    pads = geometry.pads(kernel)
    flat = [p for pair in reversed(pads) for p in pair]  # F.pad takes the last dimension first
    x = F.pad(x, flat) if any(flat) else x
    if geometry.dims == 1:
        x, kernel = x.unsqueeze(-2), (1, *kernel)
        stride, dilation = (1, *geometry.stride), (1, *geometry.dilation)
    else:
        stride, dilation = geometry.stride, geometry.dilation
    spatial = tuple((size - d * (k - 1) - 1) // s + 1 for size, k, s, d in zip(x.shape[-2:], kernel, stride, dilation))
    cols = F.unfold(x, kernel, dilation=dilation, stride=stride)  # (N, C_in·k_h·k_w, L), channel-major
    n, ck, positions = cols.shape
    g = geometry.groups
    cols = cols.view(n, g, ck // g, positions).permute(1, 0, 3, 2).reshape(g, n * positions, ck // g)
    return cols, spatial[1:] if geometry.dims == 1 else spatial


def weight_matrices(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """The G matrices W_g (K × N) of a convolution weight (C_out, C_in/G, *kernel), as (G, K, N)."""
    c_out = weight.shape[0]
    return weight.reshape(groups, c_out // groups, -1).transpose(1, 2)


def from_gemm(y: torch.Tensor, batch: int, spatial: tuple) -> torch.Tensor:
    """The convolution's output (N, C_out, *spatial) from the G products Y_g as (G, M, N_g)."""
    g, _, n_g = y.shape
    return y.view(g, batch, math.prod(spatial), n_g).permute(1, 0, 3, 2).reshape(batch, g * n_g, *spatial)


def conv_as_gemm(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    geometry: ConvGeometry,
    gemm: Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor],
) -> torch.Tensor:
    """The convolution computed as ``gemm(X (G, M, K), W (G, K, N), bias (G, 1, N) or None)`` -> (G, M, N).
    Unbatched input (C_in, *spatial) gives unbatched output, as ``F.conv2d``."""
    unbatched = x.dim() == geometry.dims + 1
    if unbatched:
        x = x.unsqueeze(0)
    cols, spatial = im2col(x, tuple(weight.shape[2:]), geometry)
    w = weight_matrices(weight, geometry.groups)
    b = None if bias is None else bias.reshape(geometry.groups, 1, -1)
    out = from_gemm(gemm(cols, w, b), x.shape[0], spatial)
    return out.squeeze(0) if unbatched else out


def module_input(conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The input ``nn.Conv1d``/``nn.Conv2d`` hands to its functional form: padded by the module itself
    when its ``padding_mode`` is not ``"zeros"``."""
    if conv.padding_mode == "zeros":
        return x
    return F.pad(x, conv._reversed_padding_repeated_twice, mode=conv.padding_mode)


def module_geometry(conv: nn.Module) -> ConvGeometry:
    """The geometry of ``nn.Conv1d``/``nn.Conv2d`` ``conv`` as its functional call sees it."""
    padding = conv.padding if conv.padding_mode == "zeros" else 0
    return ConvGeometry.of(len(conv.kernel_size), conv.stride, padding, conv.dilation, conv.groups)


CONV_ATTRIBUTES = (
    "in_channels",
    "out_channels",
    "kernel_size",
    "stride",
    "padding",
    "dilation",
    "groups",
    "padding_mode",
    "_reversed_padding_repeated_twice",
)
"""What models read from their ``nn.Conv*`` layers (e.g. Whisper's stride, MobileNetV2's TF padding)."""


def copy_conv_attributes(module: nn.Module, conv: nn.Module) -> ConvGeometry:
    """Give ``module`` (a conv layer's replacement) the attributes of ``conv`` that models read; returns
    its geometry."""
    for name in CONV_ATTRIBUTES:
        setattr(module, name, getattr(conv, name))
    return module_geometry(conv)


def is_depthwise(conv: nn.Module) -> bool:
    """One input channel per group (K = k_h·k_w), more than one group."""
    return conv.groups > 1 and conv.groups == conv.in_channels
