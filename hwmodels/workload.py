"""Trace a PyTorch model into the operations a forward pass executes.

`trace` runs the model once under a torch dispatch mode and records every ATen operation that
does work: matrix products (with M, K, N, batch and whether the second operand is a static
weight), softmax, activations, normalisations, element-wise ops and data movement. View and
factory operations are free and not recorded.

Matrix products are recorded and, by default, not computed: the mode returns zeros of the exact
shape and strides the real kernel would (derived on the meta device), so tracing BERT-base at
sequence 512 costs milliseconds, not the 90 GFLOP of the real forward. The cheap ops run for
real. Models whose control flow depends on product values need `execute_products=True`.

Fused scaled-dot-product attention kernels are recorded as what they compute: Q·Kᵀ, the scale,
the mask (if any), the softmax and the product with V. Activation modules written as element-wise
formulas (e.g. GPT-2's tanh GELU, any module class whose name contains "GELU") are recorded as
one GELU op over their output: the ops come from the dispatcher, the module only groups them.

Repeated blocks (the layers the cost models pipeline) come from the model's structure: the children
of an ``nn.ModuleList`` or ``nn.Sequential`` whose children all share one class are candidates, and an
op belongs to the innermost candidate around it that runs at least two matrix products (so a
bottleneck of three convolution modules is one block, not three). Blocks are numbered in execution
order, encoder and decoder blocks apart. ``trace(..., blocks=[patterns])`` names them instead
(``fnmatch`` patterns of module names). A model without such blocks, and workloads built by hand,
take an op's block from the first number in its scope.

An emulated model (``numerics.nn.emulate``) is traced in reference arithmetic
(``numerics.emulation.reference_arithmetic``): the trace records the model's operations, never the
emulator's internals, and the workload carries the emulated target and its typed options
(``Workload.target``, ``Workload.hardware``) for ``estimate`` to price.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
import re
import threading
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map

from numerics.emulation import reference_arithmetic

KINDS = ("matmul", "softmax", "gelu", "activation", "norm", "elementwise", "move")
"""Operation kinds, in the order summaries list them."""

_MATMULS = {"mm", "addmm", "bmm", "baddbmm", "addbmm", "mv", "addmv", "dot", "_addmm_activation"}
_PLAIN_PRODUCTS = {"mm", "addmm", "bmm", "baddbmm"}
_CONVS = {"convolution", "_convolution"}
_SDPA = {
    "_scaled_dot_product_flash_attention_for_cpu",
    "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_efficient_attention",
    "_scaled_dot_product_cudnn_attention",
    "_scaled_dot_product_fused_attention_overrideable",
}
_SOFTMAX = {"_softmax", "_log_softmax", "_safe_softmax"}
_NORMS = {
    "native_layer_norm",
    "native_group_norm",
    "native_batch_norm",
    "_native_batch_norm_legit_no_training",
    "_native_batch_norm_legit",
    "_fused_rms_norm",
}
_ACTIVATIONS = {
    "relu",
    "relu_",
    "silu",
    "silu_",
    "sigmoid",
    "tanh",
    "elu",
    "leaky_relu",
    "hardswish",
    "hardsigmoid",
    "hardtanh",
    "mish",
    "softplus",
    "glu",
    "gelu_",
    "celu",
    "selu",
}
_MOVES = {
    "embedding",
    "cat",
    "stack",
    "clone",
    "copy_",
    "_to_copy",
    "gather",
    "index_select",
    "index",
    "index_put",
    "index_put_",
    "scatter",
    "roll",
    "flip",
    "constant_pad_nd",
    "repeat",
    "contiguous",
}
_REDUCTIONS = {
    "sum",
    "mean",
    "amax",
    "amin",
    "max",
    "min",
    "var",
    "var_mean",
    "std",
    "norm",
    "linalg_vector_norm",
    "any",
    "all",
    "argmax",
    "argmin",
    "prod",
    "cumsum",
    "logsumexp",
}
_FREE = {
    "arange",
    "empty",
    "empty_like",
    "empty_strided",
    "zeros",
    "zeros_like",
    "ones",
    "ones_like",
    "full",
    "full_like",
    "scalar_tensor",
    "new_empty",
    "new_empty_strided",
    "new_zeros",
    "new_ones",
    "new_full",
    "_local_scalar_dense",
    "lift_fresh",
    "lift_fresh_copy",
    "detach",
    "alias",
    "dropout",
    "native_dropout",
    "sym_size",
    "sym_stride",
    "sym_numel",
    "is_same_size",
    "_assert_async",
    "_assert_tensor_metadata",
    "item",
    "resize_",
    "set_",
    "rand",
    "randn",
    "randint",
    "bernoulli",
    "normal",
    "uniform_",
    "_unsafe_index",
}
_FUSED_MODULE_PATTERN = re.compile("gelu", re.IGNORECASE)
_LAYER_PATTERN = re.compile(r"(?:^|\.)(\d+)(?:\.|$)")
FROM_SCOPE = -1
"""``Op.block`` of an op built by hand: its block is the first number in its scope."""


@dataclass(frozen=True)
class Op:
    """One executed operation.

    Shapes follow one convention for every kind. A matrix product is `batch` independent
    products Y (M×N) = X (M×K)·W (K×N); W is the static weight when `static` is True (a
    product whose first operand is the weight is recorded transposed, Yᵀ = Wᵀ·Xᵀ, so the weight
    is always W). Every other op covers `batch`·`m` rows of length `n` (`k` = 0): softmax rows,
    normalised vectors, or an element-wise tensor viewed as rows of its last dimension.
    """

    kind: str
    """One of KINDS."""
    name: str
    """ATen operation (or grouping module) that produced it, e.g. "aten.addmm"."""
    scope: str = ""
    """Qualified name of the innermost module running it ("" outside any module)."""
    batch: int = 1
    """Independent instances (heads × sequences for attention products)."""
    m: int = 1
    """Rows of X per instance (tokens), or rows per instance for non-product ops."""
    k: int = 0
    """Reduction length of a product; 0 for other ops."""
    n: int = 1
    """Columns of W (output features), or row length for non-product ops."""
    static: bool = False
    """True when W is a parameter of the traced model (a weight), False when it is computed."""
    weight: torch.Tensor | None = field(default=None, compare=False, repr=False)
    """The static operand as used (a view of the parameter, not a copy), else None. It is K×N,
    except for grouped convolutions (K × all output channels)."""
    block: int | None = FROM_SCOPE
    """Repeated block running the op, numbered in execution order (set by ``trace`` from the model's
    structure); None outside every block; FROM_SCOPE (default): the first number in ``scope``."""
    causal: bool = False
    """True for the Q·Kᵀ, softmax and A·V of causal attention: every score above the diagonal is
    masked, so half of the work can be skipped (Atleus' ``causal_skip``)."""

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        for name in ("batch", "m", "n"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.k < 0:
            raise ValueError(f"k must be >= 0, got {self.k}")
        if self.weight is not None and not self.static:
            raise ValueError("weight is given only for static operands (static=True)")
        if self.block is not None and (isinstance(self.block, bool) or not isinstance(self.block, int)):
            raise ValueError(f"block must be an int or None, got {self.block!r}")
        if self.block is not None and self.block < FROM_SCOPE:
            raise ValueError(f"block must be >= 0, None or FROM_SCOPE, got {self.block}")

    @cached_property
    def weight_zero_fraction(self) -> float:
        """Fraction of exactly-zero elements of the static operand (0.0 without one).

        Computed on first use, so tracing never scans the weights."""
        if self.weight is None or self.weight.numel() == 0:
            return 0.0
        return 1.0 - int(torch.count_nonzero(self.weight)) / self.weight.numel()

    @property
    def macs(self) -> int:
        """Multiply-accumulates of a product (batch·M·K·N), 0 for other ops."""
        return self.batch * self.m * self.k * self.n if self.kind == "matmul" else 0

    @property
    def elements(self) -> int:
        """Output elements of a product, or elements processed by any other op."""
        return self.batch * self.m * self.n

    @property
    def rows(self) -> int:
        """Rows over all instances (batch·m)."""
        return self.batch * self.m

    @property
    def operations(self) -> int:
        """The op's work in its natural unit: MACs for products, elements otherwise."""
        return self.macs if self.kind == "matmul" else self.elements

    @property
    def layer(self) -> int | None:
        """Index of the repeated block running the op, if any: ``block``, or for an op built by hand
        the first numeric component of its scope."""
        if self.block != FROM_SCOPE:
            return self.block
        match = _LAYER_PATTERN.search(self.scope)
        return int(match.group(1)) if match else None

    @property
    def is_attention(self) -> bool:
        """True inside an attention module (scope mentions "attn" or "attention")."""
        scope = self.scope.lower()
        return "attn" in scope or "attention" in scope

    def to_dict(self) -> dict:
        """Plain-data view (the weight tensor is left out)."""
        return {
            "kind": self.kind,
            "name": self.name,
            "scope": self.scope,
            "batch": self.batch,
            "m": self.m,
            "k": self.k,
            "n": self.n,
            "static": self.static,
            "weight_zero_fraction": self.weight_zero_fraction,
            "macs": self.macs,
            "elements": self.elements,
        }


@dataclass(frozen=True)
class Workload:
    """The operations of one forward pass, in execution order."""

    ops: tuple[Op, ...]
    """Recorded operations."""
    batch: int = 1
    """Sequences (or images) in the pass: the leading dimension of the first tensor input."""
    name: str = ""
    """Label, by default the traced model's class name."""
    target: str | None = None
    """The target of the emulated model traced (None for a plain model)."""
    hardware: object = field(default=None, compare=False, repr=False)
    """The typed options the traced model was emulated with (``model.emulation.config``), or None."""

    def __post_init__(self):
        object.__setattr__(self, "ops", tuple(self.ops))
        if self.batch < 1:
            raise ValueError(f"batch must be >= 1, got {self.batch}")

    def macs(self) -> int:
        """Multiply-accumulates of all matrix products."""
        return sum(op.macs for op in self.ops)

    def flops(self) -> int:
        """2 per MAC (the GOPS/TOPS convention of the specs); non-product work is in elements()."""
        return 2 * self.macs()

    def elements(self, kind: str) -> int:
        """Elements processed by the ops of one kind."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        return sum(op.elements for op in self.ops if op.kind == kind)

    def layers(self) -> list[int]:
        """Indices of the repeated blocks that contain ops, ascending."""
        return sorted({op.layer for op in self.ops if op.layer is not None})

    def summary(self) -> str:
        """Readable table: per kind the op count, MACs and elements."""
        counts = Counter(op.kind for op in self.ops)
        lines = [
            f"Workload {self.name or '(unnamed)'}: {len(self.ops)} ops, batch {self.batch}, "
            f"{self.macs():,} MACs ({self.flops() / 1e9:.3f} GFLOP)",
            f"{'kind':<12}{'ops':>6}{'MACs':>18}{'elements':>16}",
        ]
        for kind in KINDS:
            if counts[kind]:
                macs = sum(op.macs for op in self.ops if op.kind == kind)
                lines.append(f"{kind:<12}{counts[kind]:>6}{macs:>18,}{self.elements(kind):>16,}")
        static = sum(op.macs for op in self.ops if op.static)
        lines.append(f"static-weight MACs {static:,}; dynamic (activation x activation) MACs {self.macs() - static:,}")
        return "\n".join(lines)

    __str__ = summary

    def to_dict(self) -> dict:
        """Plain-data view of the workload."""
        return {"name": self.name, "batch": self.batch, "target": self.target, "ops": [op.to_dict() for op in self.ops]}


def _storage_key(t: torch.Tensor) -> int:
    try:
        return t.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):
        return 0


def _placeholder_result(func, args, kwargs, pool):
    """Zeros with the shape and strides func would return (derived on the meta device).

    Buffers come from `pool`, one per (shape, strides, dtype, device): the values of skipped
    products are placeholders anyway, and reusing them avoids touching fresh memory per op."""
    base = func.overloadpacket.__name__
    device = next(x.device for x in args if isinstance(x, torch.Tensor))
    if base in _PLAIN_PRODUCTS:  # contiguous result, shape known without a meta kernel
        a, b = args[-2], args[-1]
        out = torch.empty(*a.shape[:-1], b.shape[-1], dtype=a.dtype, device="meta")
    else:
        to_meta = lambda x: x.to("meta") if isinstance(x, torch.Tensor) else x  # noqa: E731
        out = func(*tree_map(to_meta, args), **tree_map(to_meta, kwargs))

    def make(meta):
        if not isinstance(meta, torch.Tensor):
            return meta
        key = (tuple(meta.shape), meta.stride(), meta.dtype, device)
        if key not in pool:
            pool[key] = torch.empty_strided(meta.shape, meta.stride(), dtype=meta.dtype, device=device).zero_()
        return pool[key]

    return tree_map(make, out)


class _Recorder(TorchDispatchMode):
    def __init__(self, static_keys: set[int], execute_products: bool):
        super().__init__()
        self.static_keys = static_keys
        self.execute_products = execute_products
        self.ops: list[Op] = []
        self.scopes: list[str] = [""]
        self.suppress = 0
        self._zeros: dict[tuple, torch.Tensor] = {}
        self._causal_next: tuple | None = None  # (batch, m, k) of the A·V after a causal eager softmax

    # -- module grouping -------------------------------------------------------------------
    def enter(self, name: str, fused: bool):
        self.scopes.append(name)
        self.suppress += fused

    def leave(self, name: str, fused: bool, output):
        self.scopes.pop()
        self.suppress -= fused
        if fused and not self.suppress and isinstance(output, torch.Tensor):
            self._add("gelu", "module." + name.rsplit(".", 1)[-1], output, scope=name)

    # -- recording ---------------------------------------------------------------------------
    def _add(self, kind, name, t=None, *, scope=None, **shape):
        if t is not None:
            n = t.shape[-1] if t.dim() else 1
            shape = {"m": t.numel() // max(n, 1), "n": n, **shape}
        self.ops.append(Op(kind, name, self.scopes[-1] if scope is None else scope, **shape))

    def _is_static(self, t: torch.Tensor) -> bool:
        key = _storage_key(t)
        return key != 0 and key in self.static_keys

    def _product(self, name, x, w, batch=1):
        """Record batch products x (M×K) · w (K×N), putting a static operand second."""
        if self._is_static(x) and not self._is_static(w):
            x, w = w.transpose(-1, -2), x.transpose(-1, -2)
        self._append_product(name, batch, x.shape[-2], x.shape[-1], w)

    def _append_product(self, name, batch, m, k, w, groups=1):
        static = self._is_static(w)
        causal = not static and self._causal_next == (batch, m, k)
        if causal:
            self._causal_next = None
        self.ops.append(
            Op(
                "matmul",
                name,
                self.scopes[-1],
                batch,
                m,
                k,
                w.shape[-1] // groups,
                static,
                w.detach() if static else None,
                causal=causal,
            )
        )

    def _record(self, func, args, kwargs, out):
        base = func.overloadpacket.__name__
        name = f"aten.{base}"
        if base in ("mm", "addmm", "_addmm_activation"):
            a, b = (args[0], args[1]) if base == "mm" else (args[1], args[2])
            self._product(name, a, b)
            if base == "_addmm_activation":
                self._add("gelu" if kwargs.get("use_gelu", False) else "activation", name, out)
        elif base in ("bmm", "baddbmm"):
            a, b = (args[0], args[1]) if base == "bmm" else (args[1], args[2])
            self._product(name, a, b, batch=a.shape[0])
        elif base == "addbmm":
            a, b = args[1], args[2]
            self._product(name, a, b, batch=a.shape[0])
        elif base in ("mv", "addmv"):
            a, v = (args[0], args[1]) if base == "mv" else (args[1], args[2])
            self._product(name, a, v.unsqueeze(-1))
        elif base == "dot":
            self._product(name, args[0].unsqueeze(0), args[1].unsqueeze(-1))
        elif base in _CONVS:
            self._conv(name, args, out)
        elif base in _SDPA:
            self._attention(name, func, args, kwargs)
        elif base in _SOFTMAX:
            self._softmax(name, args[0], args[1])
        elif base in _NORMS:
            x = args[0]
            if base == "native_layer_norm" or base == "_fused_rms_norm":
                n = math.prod(args[1])
                self._add("norm", name, m=x.numel() // max(n, 1), n=n)
            else:
                self._add("norm", name, x)
        elif base == "gelu":
            self._add("gelu", name, out)
        elif base in _ACTIVATIONS:
            self._add("activation", name, out)
        elif base in _MOVES:
            self._add("move", name, out if isinstance(out, torch.Tensor) else args[0])
        elif base in _REDUCTIONS:
            self._add("elementwise", name, args[0])
        else:
            first = (
                out if isinstance(out, torch.Tensor) else next((x for x in args if isinstance(x, torch.Tensor)), None)
            )
            if first is not None:
                self._add("elementwise", name, first)

    def _conv(self, name, args, out):
        """A convolution as its im2col product: M = N·H_out·W_out, K = C_in/g·k_h·k_w, N = C_out/g.

        Grouped convolutions are `groups` independent products sharing one K × C_out weight.
        """
        w = args[1]
        groups = args[8] if len(args) > 8 else 1
        c_out = w.shape[0]
        k = w[0].numel()
        matrix = w.reshape(c_out, k).t()  # K × C_out, a view of the parameter
        self._append_product(name, groups, out.numel() // c_out, k, matrix, groups)

    def _attention(self, name, func, args, kwargs):
        bound = {**dict(zip((a.name for a in func._schema.arguments), args)), **kwargs}
        q, key, v = args[0], args[1], args[2]
        seq_q, e, seq_k, e_v = q.shape[-2], q.shape[-1], key.shape[-2], v.shape[-1]
        batch = q.numel() // max(seq_q * e, 1)
        scope = self.scopes[-1]
        mask = bound.get("attn_mask", bound.get("attn_bias"))
        causal = bool(bound.get("is_causal", False)) or (mask is not None and _masks_the_future(mask))
        self.ops.append(Op("matmul", name + "/qk", scope, batch, seq_q, e, seq_k, causal=causal))
        self.ops.append(Op("elementwise", name + "/scale", scope, batch, seq_q, 0, seq_k))
        if mask is not None:
            self.ops.append(Op("elementwise", name + "/mask", scope, batch, seq_q, 0, seq_k))
        self.ops.append(Op("softmax", name + "/softmax", scope, batch, seq_q, 0, seq_k, causal=causal))
        self.ops.append(Op("matmul", name + "/av", scope, batch, seq_q, seq_k, e_v, causal=causal))

    def _softmax(self, name, x, dim):
        dim = dim % max(x.dim(), 1)
        n = x.shape[dim] if x.dim() else 1
        if x.dim() >= 2 and dim == x.dim() - 1:
            m = x.shape[-2]
            batch = x.numel() // max(m * n, 1)
            causal = _masks_the_future(x)  # eager attention: the scores already carry the mask
            self._add("softmax", name, batch=batch, m=m, n=n, causal=causal)
            if causal:  # the product that made these scores, and the next one that reads them
                made = [i for i, op in enumerate(self.ops) if op.kind == "matmul" and not op.static]
                made = [i for i in made if (self.ops[i].batch, self.ops[i].m, self.ops[i].n) == (batch, m, n)]
                if made:
                    self.ops[made[-1]] = dataclasses.replace(self.ops[made[-1]], causal=True)
                self._causal_next = (batch, m, n)
        else:
            self._add("softmax", name, m=x.numel() // max(n, 1), n=n)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        base = func.overloadpacket.__name__
        product = base in _MATMULS or base in _CONVS or base in _SDPA
        out = (
            _placeholder_result(func, args, kwargs, self._zeros)
            if product and not self.execute_products
            else func(*args, **kwargs)
        )
        if not self.suppress and not func.is_view and base not in _FREE:
            self._record(func, args, kwargs, out[0] if base in _SDPA else out)
        return out


class _Unfused(TorchFunctionMode):
    """Passes every call through. Active, it makes ``has_torch_function`` true, which turns off the fused
    fast paths of ``nn.MultiheadAttention`` and ``nn.TransformerEncoder(Layer)`` in eval mode: their
    products are then recorded (a fused kernel would be recorded as no work)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


MASKED = -1e4
"""A score at or below this (after an additive mask: -inf, or the dtype's minimum as Hugging Face
uses) counts as masked out; a boolean mask marks masked scores False."""


def _masks_the_future(scores: torch.Tensor) -> bool:
    """True if every position above the diagonal of the last two dimensions (aligned to the last
    key, so a query attends to at most its own position) is masked out, and there is one."""
    if scores.dim() < 2 or scores.is_meta:
        return False
    seq_q, seq_k = scores.shape[-2], scores.shape[-1]
    future = torch.ones(seq_q, seq_k, dtype=torch.bool, device=scores.device).triu(seq_k - seq_q + 1)
    if not future.any():
        return False
    masked = ~scores if scores.dtype == torch.bool else scores <= MASKED
    return bool(masked[..., future].all())


def _repeated(modules: dict) -> list[str]:
    """Names of the children of containers whose children all share one class."""
    out = []
    for name, mod in modules.items():
        if isinstance(mod, (torch.nn.ModuleList, torch.nn.Sequential)):
            children = list(mod.named_children())
            if children and len({type(child) for _, child in children}) == 1:
                out += [f"{name}.{child}" if name else child for child, _ in children]
    return out


def _blocks(ops: list[Op], candidates: list[str], min_products: int) -> list[Op]:
    """`ops` with ``block`` set: the innermost candidate around each op's scope running at least
    `min_products` products, numbered in order of first execution."""
    inside = lambda scope, c: scope == c or scope.startswith(c + ".")  # noqa: E731
    products = Counter(c for op in ops if op.kind == "matmul" for c in candidates if inside(op.scope, c))
    kept = [c for c in candidates if products[c] >= min_products]
    if not kept:  # no repeated structure (a plain MLP): the scope rule, as for ops built by hand
        return ops
    numbers: dict[str, int] = {}
    out = []
    for op in ops:
        around = [c for c in kept if inside(op.scope, c)]
        block = max(around, key=len) if around else None
        if block is not None:
            numbers.setdefault(block, len(numbers))
        out.append(dataclasses.replace(op, block=None if block is None else numbers[block]))
    return out


def trace(model, *inputs, execute_products: bool = False, blocks=None, **kwargs) -> Workload:
    """Run `model(*inputs, **kwargs)` once (no grad) and return the executed operations.

    `model` is any callable; when it is an `nn.Module`, its parameters mark static weights, its
    submodule names give each op a scope and its structure the repeated blocks (the module
    docstring; `blocks`: a list of ``fnmatch`` patterns of module names overrides them, e.g.
    ``["encoder.layer.*"]``). Products are not computed unless
    `execute_products=True` (see the module docstring). The model is left unchanged. An emulated
    model is traced in reference arithmetic (its own operations; the stored weights of modules that
    emulate themselves are static weights) and the workload records its target and options.
    """
    if not callable(model):
        raise TypeError(f"model must be callable (an nn.Module), got {type(model).__name__}")
    if blocks is not None and (isinstance(blocks, str) or not all(isinstance(b, str) for b in blocks)):
        raise TypeError(f"blocks must be a list of module-name patterns, got {blocks!r}")
    modules = dict(model.named_modules()) if isinstance(model, torch.nn.Module) else {}
    names = {id(mod): name for name, mod in modules.items()}
    fused = {id(mod) for mod in modules.values() if _FUSED_MODULE_PATTERN.search(type(mod).__name__)}
    weights = list(model.parameters()) if modules else []
    weights += [
        b
        for mod in modules.values()
        if getattr(type(mod), "emulates_itself", False)
        for b in mod.buffers(recurse=False)
    ]  # e.g. a crossbar Linear's dequantized weight
    static = {_storage_key(p) for p in weights} - {0}
    recorder = _Recorder(static, execute_products)
    emulation = getattr(model, "emulation", None) if modules else None

    owner = threading.get_ident()  # the hooks are process-wide: other threads' forwards are not ours

    def pre(mod, _inputs):
        if id(mod) in names and threading.get_ident() == owner:
            recorder.enter(names[id(mod)], id(mod) in fused)

    def post(mod, _inputs, output):
        if id(mod) in names and threading.get_ident() == owner:
            recorder.leave(names[id(mod)], id(mod) in fused, output)

    tensors = [x for x in (*inputs, *kwargs.values()) if isinstance(x, torch.Tensor)]
    batch = int(tensors[0].shape[0]) if tensors and tensors[0].dim() else 1
    handles = [
        torch.nn.modules.module.register_module_forward_pre_hook(pre),
        torch.nn.modules.module.register_module_forward_hook(post),
    ]
    try:
        with torch.no_grad(), reference_arithmetic(), recorder, _Unfused():
            model(*inputs, **kwargs)
    finally:
        for handle in handles:
            handle.remove()
    ops = recorder.ops
    if modules and blocks is None:
        ops = _blocks(ops, _repeated(modules), min_products=2)
    elif modules:
        named = [name for name in modules if name and any(fnmatch.fnmatchcase(name, b) for b in blocks)]
        if not named:
            raise ValueError(f"blocks {list(blocks)} match no module of {type(model).__name__}")
        ops = _blocks(ops, named, min_products=0)
    return Workload(
        tuple(ops),
        batch=batch,
        name=type(model).__name__,
        target=getattr(emulation, "target", None),
        hardware=getattr(emulation, "config", None),
    )


def off_chip(workload: Workload, heads) -> tuple[Workload, list[Op]]:
    """``workload`` without the static products of its heads (``heads`` as the targets' option,
    :mod:`numerics.heads`), and those products: what a target that keeps heads on the host runs."""
    from numerics.heads import head_rule

    rule = head_rule(heads)
    host = [op for op in workload.ops if op.kind == "matmul" and op.static and rule(op.scope, None)]
    if not host:
        return workload, []
    kept = tuple(op for op in workload.ops if not any(op is h for h in host))
    return dataclasses.replace(workload, ops=kept), host
