"""FlexiSAGA numerics: tile-aligned structured pruning, the two-stage bitmap weight format, sparse GEMM.

Spec: ``docs/hardware/flexisaga.md`` sections 1-3 (M. M. Müller, K. Lübeck et al., "FlexiSAGA",
arXiv 2506.01566). The paper's full text was not available; every rule marked "reconstruction" or
"assumption" below is a named, overridable default.

Orientation: every weight here is the spec's W of shape ``(K, N)`` (K input features, N output
features) so that Y = X·W with X of shape ``(M, K)``. ``nn.Linear.weight`` stores Wᵀ, shape
``(N, K)``: pass ``linear.weight.T``.

A tile is ``(rows, cols)`` = (R, C), the PE array. Pruning vectors are aligned to it:

- ``"row"``: W[k, n0:n0+C], n0 a multiple of C (1×C). sOS, sWS and csOS skip these.
- ``"col"``: W[k0:k0+R, n], k0 a multiple of R (R×1). sIS skips these.
- ``"channel"``: W[:, n] (K×1), a whole output channel. csOS compacts these away.
- ``"auto"``: prune ``"row"`` and ``"col"`` and keep the one with fewer best-sparse cycles.

Edge vectors (at the bottom or right border of a matrix whose size is not a multiple of the
tile) are shorter, so they usually score lower.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F

from numerics.derived import derived
from numerics.formats import fma_f32
from numerics.kernels import pe_gemm, pe_plan
from numerics.validation import check_padded

VECTORS = ("row", "col", "channel", "auto")
CRITERIA = ("l2", "l1", "activation")
ALLOCATIONS = ("uniform", "global")
"""How a model's sparsity is shared among its layers: the same in each, or by :func:`global_allocation`."""
GLOBAL_CAP = 0.9
"""The most of one layer's vectors :func:`global_allocation` prunes (assumption: a layer with nothing left
would cut the model; 0.9 leaves every layer a tenth of its vectors)."""
DTYPES = ("float32", "int32")
ACCUMULATIONS = ("sequential", "fast")

CyclesFn = Callable[[torch.Tensor, int, int, int], int]
"""``cycles(pruned_weight_kn, m, rows, cols) -> int``: best sparse cycle count of a pruned layer
(spec §4.2), used only by ``vector="auto"``. The cost model lives in ``hwmodels``, which
``numerics`` must not import, so the caller passes it in."""


# --------------------------------------------------------------------------- validation


def _check_choice(name: str, value, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def _check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def check_sparsity(value) -> float:
    """Return ``value`` as a float after checking it is a real number in [0, 1)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (0 <= value < 1):
        raise ValueError(f"sparsity must be a real number in [0, 1), got {value!r}")
    return float(value)


def check_tile(tile) -> tuple[int, int]:
    """Return ``tile`` as ``(rows, cols)`` after checking it holds two integers >= 1."""
    if not isinstance(tile, (tuple, list)) or len(tile) != 2:
        raise ValueError(f"tile must be (rows, cols), two integers >= 1, got {tile!r}")
    return _check_positive_int("tile rows", tile[0]), _check_positive_int("tile cols", tile[1])


def _check_matrix(name: str, t) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype == torch.bool or t.is_complex():
        raise TypeError(f"{name} must have a real floating or integer dtype, got {t.dtype}")
    if t.dim() != 2:
        raise ValueError(f"{name} must be 2-D (K, N), got shape {tuple(t.shape)}")
    if t.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(t.shape)}")
    return t


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class FlexiSAGAConfig:
    """What a FlexiSAGA array computes and how its weights are pruned (spec §2.1)."""

    rows: int = 16
    """R, PE rows; the length of a ``"col"`` pruning vector. Assumption: the evaluated sizes are
    unknown, the array is "configurable" (summary)."""
    cols: int = 16
    """C, PE columns; the length of a ``"row"`` pruning vector. Assumption, as ``rows``."""
    dtype: str = "float32"
    """PE data type, ``"float32"`` or ``"int32"`` (summary: 32-bit float or integer PEs).
    ``int32`` wraps modulo 2**32."""
    fused_mac: bool = False
    """True: acc <- fl(acc + x·w) with one rounding; False: the product is rounded, then the sum.
    Assumption: the PE ALU has separate multiply and add."""
    accumulation: str = "sequential"
    """``"sequential"``: bit-exact k-ordered accumulation (reconstruction, spec §2.2);
    ``"fast"``: ``torch.matmul``, equal within rounding (float32 only; int32 is exact either way)."""
    vector: str = "row"
    """Pruning vector, one of ``VECTORS`` (reconstruction, spec §2.3)."""
    sparsity: float = 0.5
    """Fraction of the pruning vectors zeroed in each layer, in [0, 1). Assumption."""
    criterion: str = "l2"
    """Vector score: ``"l2"`` or ``"l1"`` norm in float64 (assumption: magnitude pruning), or
    ``"activation"``, weights scaled by the input features' norms over calibration data."""
    word_bits: int = 32
    """Bits of one memory word and one stored weight value (summary)."""
    freq_hz: float = 1e9
    """Clock in Hz. Assumption: not stated; speedups do not depend on it."""
    auto_tokens: int = 128
    """M used by ``vector="auto"`` to compare cycle counts when no workload is traced.
    Assumption (spec §2.3)."""

    def __post_init__(self):
        _check_positive_int("rows", self.rows)
        _check_positive_int("cols", self.cols)
        _check_choice("dtype", self.dtype, DTYPES)
        if not isinstance(self.fused_mac, bool):
            raise ValueError(f"fused_mac must be a bool, got {self.fused_mac!r}")
        _check_choice("accumulation", self.accumulation, ACCUMULATIONS)
        _check_choice("vector", self.vector, VECTORS)
        check_sparsity(self.sparsity)
        _check_choice("criterion", self.criterion, CRITERIA)
        _check_positive_int("word_bits", self.word_bits)
        if (
            isinstance(self.freq_hz, bool)
            or not isinstance(self.freq_hz, numbers.Real)
            or not math.isfinite(self.freq_hz)
            or self.freq_hz <= 0
        ):
            raise ValueError(f"freq_hz must be a finite number > 0, got {self.freq_hz!r}")
        _check_positive_int("auto_tokens", self.auto_tokens)

    @property
    def tile(self) -> tuple[int, int]:
        """``(rows, cols)``."""
        return self.rows, self.cols


FLEXISAGA_16X16 = FlexiSAGAConfig()
"""The spec's defaults: a 16×16 float32 array, row vectors, 50 % sparsity, L2 criterion."""


# --------------------------------------------------------------------------- pruning


def pruned_count(sparsity: float, n_vectors: int) -> int:
    """Vectors to prune: floor(sparsity · n_vectors) (spec §2.3 step 2).

    The product is taken exactly on the shortest decimal form of ``sparsity`` so that 0.29 of 100
    vectors is 29, not the 28 that the binary value 0.28999... would give.
    """
    return math.floor(Fraction(repr(check_sparsity(sparsity))) * n_vectors)


def _vector_block(shape: tuple[int, int], tile: tuple[int, int], vector: str) -> tuple[int, int]:
    """Extent (along K, along N) of one pruning vector."""
    return {"row": (1, tile[1]), "col": (tile[0], 1), "channel": (shape[0], 1)}[vector]


def _pad_to(t: torch.Tensor, bk: int, bn: int) -> torch.Tensor:
    k, n = t.shape
    if k % bk == 0 and n % bn == 0:  # aligned: no copy
        return t
    check_padded(
        f"a {k}x{n} weight on {bk}x{bn} blocks",
        -(-k // bk) * bk * -(-n // bn) * bn,
        "use a tile no larger than the weight needs",
    )
    return F.pad(t, (0, -n % bn, 0, -k % bk))


def check_activation(activation, k: int, criterion: str) -> torch.Tensor | None:
    """The input activation norms ``criterion="activation"`` needs: a finite, non-negative (K,) tensor
    (float64); None for the other criteria, which take none."""
    if criterion != "activation":
        if activation is not None:
            raise ValueError(f"activation norms are used by criterion='activation' only, not {criterion!r}")
        return None
    if activation is None:
        raise ValueError(
            "criterion='activation' needs the input activation norms ||X_k|| of the layer, a (K,) tensor "
            "(emulate(..., criterion='activation', calibrate_with=batches) gathers them)"
        )
    if not isinstance(activation, torch.Tensor) or tuple(activation.shape) != (k,):
        raise ValueError(f"activation must be a tensor of shape ({k},), got {getattr(activation, 'shape', activation)}")
    a = activation.detach().to(torch.float64)
    if not bool(torch.isfinite(a).all()) or bool((a < 0).any()):
        raise ValueError("activation norms must be finite and >= 0")
    return a


def vector_scores(
    weight: torch.Tensor, tile=(16, 16), vector: str = "row", criterion: str = "l2", activation=None
) -> torch.Tensor:
    """Float64 score of each pruning vector, as a grid ``(ceil(K/bk), ceil(N/bn))``.

    The grid's row-major position is the vector's flat index, which breaks ties. Its block is 1×C
    for ``"row"``, R×1 for ``"col"`` and K×1 for ``"channel"``. ``"l2"``/``"l1"``: the vector's norm.
    ``"activation"``: the L2 norm of |W[k, n]|·||X_k|| over the vector, ``activation`` holding the norms
    ||X_k|| of the layer's input features over calibration data (Wanda's per-weight score, arXiv
    2306.11695, aggregated per vector; for a row vector it is ||X_k||·||W_vector||): a small weight on
    a feature of large magnitude can carry a large share of the output.
    """
    weight = _check_matrix("weight", weight)
    tile = check_tile(tile)
    _check_choice("vector", vector, ("row", "col", "channel"))
    _check_choice("criterion", criterion, CRITERIA)
    a = check_activation(activation, weight.shape[0], criterion)
    bk, bn = _vector_block(tuple(weight.shape), tile, vector)
    w = weight.to(torch.float64) if a is None else weight.to(torch.float64) * a[:, None]
    w = _pad_to(w, bk, bn)
    blocks = w.reshape(w.shape[0] // bk, bk, w.shape[1] // bn, bn)
    if criterion == "l1":
        return blocks.abs().sum(dim=(1, 3))
    return blocks.square().sum(dim=(1, 3)).sqrt()


def global_allocation(layers: dict, sparsity: float, *, tile=(16, 16), criterion: str = "l2", cap=GLOBAL_CAP) -> dict:
    """Per-layer sparsities that prune ``floor(sparsity · V)`` of the V pruning vectors of all ``layers``
    together, least important first.

    ``layers`` maps a name to ``(weight, vector, activation)``: the layer's ``(K, N)`` weight view, its
    orientation (``"row"``, ``"col"`` or ``"channel"``) and, for ``criterion="activation"``, its input
    feature norms. A vector's importance is its share of its layer's squared scores,
    ``score² / Σ_layer score²`` (:func:`vector_scores`): the fraction of the layer's output energy it
    carries, so layers compare on one scale and a layer whose weight is spread over few vectors is pruned
    less. Vectors are taken in ascending importance (ties: layer order, then flat index), skipping a layer
    once ``cap`` of its vectors are taken. Returns ``{name: s}`` with ``pruned_count(s, V_layer)`` equal to
    the vectors taken from the layer."""
    sparsity = check_sparsity(sparsity)
    if isinstance(cap, bool) or not isinstance(cap, numbers.Real) or not 0 < cap < 1:
        raise ValueError(f"cap must be a number in (0, 1), got {cap!r}")
    if not layers:
        return {}
    shares, owners, totals = [], [], []
    for index, (weight, vector, activation) in enumerate(layers.values()):
        if vector not in ("row", "col", "channel"):
            raise ValueError(
                f"vector must be row, col or channel here (auto is resolved per layer first); got {vector!r}"
            )
        squares = vector_scores(weight, tile, vector, criterion, activation).flatten().square()
        total = squares.sum()
        shares.append(squares / total if total > 0 else squares)
        owners.append(torch.full_like(squares, index, dtype=torch.long))
        totals.append(squares.numel())
    share, owner = torch.cat(shares).cpu(), torch.cat(owners).cpu()
    order = torch.argsort(share, stable=True)  # stable: ties by layer order, then flat index
    limits = [math.floor(cap * v) for v in totals]
    budget = pruned_count(sparsity, sum(totals))
    if budget > sum(limits):
        raise ValueError(f"sparsity {sparsity} exceeds what the cap {cap} allows over these layers")
    taken = [0] * len(totals)
    for layer in owner[order].tolist():
        if budget == 0:
            break
        if taken[layer] < limits[layer]:
            taken[layer] += 1
            budget -= 1
    # halfway between two counts, so that floor(s · V) gives the count back whatever the float's rounding
    return {name: (n + 0.5) / v if n else 0.0 for name, n, v in zip(layers, taken, totals)}


class PruneResult(NamedTuple):
    """One pruned layer."""

    weight: torch.Tensor
    """(K, N), the input with pruned elements set to +0."""
    mask: torch.Tensor
    """(K, N) bool, True where the element is kept."""
    vector: str
    """Orientation used (``"auto"`` resolved to ``"row"`` or ``"col"``)."""
    vectors_pruned: int
    """floor(sparsity · vectors_total), the vectors zeroed."""
    vectors_total: int
    """V_layer, the layer's tile-aligned vectors of that orientation."""


def prune_layer(
    weight: torch.Tensor,
    sparsity: float,
    *,
    tile=(16, 16),
    vector: str = "row",
    criterion: str = "l2",
    cycles: CyclesFn | None = None,
    auto_tokens: int = FLEXISAGA_16X16.auto_tokens,
    activation: torch.Tensor | None = None,
) -> PruneResult:
    """Structured pruning of a ``(K, N)`` weight; :func:`prune` with the bookkeeping.

    Steps (spec §2.3): score every tile-aligned vector (:func:`vector_scores`), sort by
    (score, flat index) ascending, zero the first ``pruned_count(sparsity, V)``. ``"auto"`` prunes
    ``"row"`` and ``"col"`` and keeps the one for which ``cycles(pruned, auto_tokens, R, C)`` is
    lower, ``"row"`` on a tie. ``activation``: the (K,) input norms ``criterion="activation"`` scores with.
    """
    weight = _check_matrix("weight", weight)
    sparsity = check_sparsity(sparsity)
    tile = check_tile(tile)
    _check_choice("vector", vector, VECTORS)
    _check_choice("criterion", criterion, CRITERIA)
    auto_tokens = _check_positive_int("auto_tokens", auto_tokens)
    check_activation(activation, weight.shape[0], criterion)
    if weight.is_floating_point() and not bool(torch.isfinite(weight).all()):
        raise ValueError("weight must be finite to be pruned (its scores would be NaN)")
    if vector == "auto":
        if not callable(cycles):
            raise ValueError(
                "cycles must be a callable (weight, m, rows, cols) -> int when "
                "vector='auto' (the spec §4.2 cost model, e.g. from hwmodels)"
            )
        row = prune_layer(weight, sparsity, tile=tile, vector="row", criterion=criterion, activation=activation)
        col = prune_layer(weight, sparsity, tile=tile, vector="col", criterion=criterion, activation=activation)
        if cycles(col.weight, auto_tokens, *tile) < cycles(row.weight, auto_tokens, *tile):
            return col
        return row
    scores = vector_scores(weight, tile, vector, criterion, activation)
    n_total = scores.numel()
    n_pruned = pruned_count(sparsity, n_total)
    order = torch.argsort(scores.flatten(), stable=True)  # stable: ties by flat index
    keep = torch.ones(n_total, dtype=torch.bool, device=weight.device)
    keep[order[:n_pruned]] = False
    bk, bn = _vector_block(tuple(weight.shape), tile, vector)
    k, n = weight.shape
    mask = keep.reshape(scores.shape).repeat_interleave(bk, dim=0).repeat_interleave(bn, dim=1)[:k, :n]
    pruned = torch.where(mask, weight, torch.zeros((), dtype=weight.dtype, device=weight.device))
    return PruneResult(pruned, mask, vector, n_pruned, n_total)


def prune(
    weight: torch.Tensor,
    sparsity: float,
    *,
    tile=(16, 16),
    vector: str = "row",
    criterion: str = "l2",
    cycles: CyclesFn | None = None,
    auto_tokens: int = FLEXISAGA_16X16.auto_tokens,
    activation: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Prune whole tile-aligned vectors of ``weight`` (K, N); return ``(pruned_weight, mask)``.

    Exactly ``pruned_count(sparsity, V)`` of the layer's V vectors are zeroed (set to +0), the
    lowest-scoring ones, ties broken by flat index. ``mask`` is bool (K, N), True where kept. The
    input is not modified; at sparsity 0 the result equals it bit for bit. See :func:`prune_layer`.
    """
    result = prune_layer(
        weight,
        sparsity,
        tile=tile,
        vector=vector,
        criterion=criterion,
        cycles=cycles,
        auto_tokens=auto_tokens,
        activation=activation,
    )
    return result.weight, result.mask


# --------------------------------------------------------------------------- bitmap format


def stored_elements(weight: torch.Tensor) -> torch.Tensor:
    """Bool mask of the elements the bitmap format stores: every one whose bit pattern is not 0.

    +0 is the zero the DecU injects; -0 and NaN are stored so that the round trip is bit exact.
    """
    if weight.is_floating_point():
        return (weight != 0) | torch.signbit(weight)
    return weight != 0


def _tiles(t: torch.Tensor, tile: tuple[int, int], vector: str) -> torch.Tensor:
    """(K, N) -> (TR, TC, V, L): tiles in row-major order, then vectors, then elements.

    ``"row"``: vectors are tile rows (V = R, L = C); ``"col"``: tile columns (V = C, L = R), the
    tile held output-major. Padding is +0.
    """
    r, c = tile
    p = _pad_to(t, r, c)
    grid = p.reshape(p.shape[0] // r, r, p.shape[1] // c, c)
    return grid.permute(0, 2, 1, 3) if vector == "row" else grid.permute(0, 2, 3, 1)


def _untiles(grid: torch.Tensor, shape: tuple[int, int], vector: str) -> torch.Tensor:
    """Inverse of :func:`_tiles`."""
    grid = grid.permute(0, 2, 1, 3) if vector == "row" else grid.permute(0, 3, 1, 2)
    tr, r, tc, c = grid.shape
    return grid.reshape(tr * r, tc * c)[: shape[0], : shape[1]]


def _ceil_div(a, b):
    return -(-a // b)


def _check_length(name: str, stream: torch.Tensor, want: int) -> None:
    if stream.numel() != want:
        raise ValueError(f"{name} has {stream.numel()} entries, the bitmap layout needs {want}")


def _layout(shape: tuple[int, int], tile: tuple[int, int], vector: str, device) -> torch.Tensor:
    """Bool (TR, TC, V, L): True at positions inside the matrix (edge tiles are smaller)."""
    return _tiles(torch.ones(shape, dtype=torch.bool, device=device), tile, vector)


class _StorageCounts:
    """Counts shared by the encoded formats; they define shape, nnz, word_bits, metadata_bits."""

    @property
    def storage_bits(self) -> int:
        """b · nnz + metadata bits."""
        return self.word_bits * self.nnz + self.metadata_bits

    @property
    def dense_bits(self) -> int:
        """b · K · N, the same weight stored dense."""
        return self.word_bits * self.shape[0] * self.shape[1]

    @property
    def compression_ratio(self) -> float:
        """Dense bits / encoded storage bits (> 1 means the format saves memory)."""
        return self.dense_bits / self.storage_bits

    @property
    def injected_zeros(self) -> int:
        """Elements the DecU fills with +0 instead of reading memory: K · N − nnz."""
        return self.shape[0] * self.shape[1] - self.nnz


@dataclass(frozen=True, eq=False)
class BitmapWeight(_StorageCounts):
    """A (K, N) weight in the two-stage bitmap format (spec §2.4; the bit layout is a reconstruction).

    For each aligned R×C tile (row-major tile order; edge tiles smaller), with V vectors of length
    L_v: a vector bit array (bit v = 1 iff vector v stores an element), then for each non-zero
    vector an element bitmap of L_v bits, then the stored values in vector then element order.
    ``"row"`` mode: V = R rows of length C; ``"col"`` mode: V = C columns of length R. The three
    streams below are those fields of every tile, concatenated in tile order.
    """

    shape: tuple[int, int]
    """(K, N) of the dense weight."""
    tile: tuple[int, int]
    """(R, C)."""
    vector: str
    """``"row"`` or ``"col"``: the bitmap's vector orientation."""
    vector_bits: torch.Tensor
    """1-D bool, V bits per tile."""
    element_bits: torch.Tensor
    """1-D bool, L_v bits per non-zero vector."""
    values: torch.Tensor
    """1-D, the nnz stored values; one word of ``values.element_size()`` bytes each."""

    def __post_init__(self):
        _check_choice("vector", self.vector, ("row", "col"))
        check_tile(self.tile)
        if len(self.shape) != 2 or min(self.shape) < 1:
            raise ValueError(f"shape must be (K, N) with K, N >= 1, got {self.shape!r}")
        for name in ("vector_bits", "element_bits"):
            bits = getattr(self, name)
            if not isinstance(bits, torch.Tensor) or bits.dtype != torch.bool or bits.dim() != 1:
                raise TypeError(f"{name} must be a 1-D bool tensor")
        if not isinstance(self.values, torch.Tensor) or self.values.dim() != 1:
            raise TypeError("values must be a 1-D tensor")
        self._tile_ids()

    def _tile_ids(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Tile index of every vector bit, element bit and value; checks the stream lengths."""
        valid = _layout(self.shape, self.tile, self.vector, self.vector_bits.device)
        tr, tc = valid.shape[:2]
        tile_id = torch.arange(tr * tc, device=valid.device).reshape(tr, tc, 1, 1).expand_as(valid)
        vector_valid = valid.any(-1)
        vector_tile = tile_id[..., 0][vector_valid]
        _check_length("vector_bits", self.vector_bits, vector_tile.numel())
        nonzero = torch.zeros_like(vector_valid)
        nonzero[vector_valid] = self.vector_bits
        element_tile = tile_id[nonzero][valid[nonzero]]
        _check_length("element_bits", self.element_bits, element_tile.numel())
        value_tile = element_tile[self.element_bits]
        _check_length("values", self.values, value_tile.numel())
        return vector_tile, element_tile, value_tile

    @property
    def nnz(self) -> int:
        """Stored values."""
        return self.values.numel()

    @property
    def word_bits(self) -> int:
        """b, bits of one stored value."""
        return self.values.element_size() * 8

    def tile_metadata_bits(self) -> torch.Tensor:
        """Per tile, in tile order: V + L_v · v_nz bits (spec §2.4)."""
        vector_tile, element_tile, _ = self._tile_ids()
        n_tiles = math.ceil(self.shape[0] / self.tile[0]) * math.ceil(self.shape[1] / self.tile[1])
        return torch.bincount(vector_tile, minlength=n_tiles) + torch.bincount(element_tile, minlength=n_tiles)

    @property
    def metadata_bits(self) -> int:
        """Σ over tiles of V + L_v · v_nz."""
        return self.vector_bits.numel() + self.element_bits.numel()

    @property
    def decu_words(self) -> int:
        """Words the DecU reads: Σ over tiles of nnz + ceil(metadata bits / b) (spec §2.4)."""
        _, _, value_tile = self._tile_ids()
        meta = self.tile_metadata_bits()
        nnz = torch.bincount(value_tile, minlength=meta.numel())
        return int((nnz + _ceil_div(meta, self.word_bits)).sum())

    def decode(self) -> torch.Tensor:
        """The dense (K, N) weight, bit for bit what was encoded (unstored elements are +0)."""
        valid = _layout(self.shape, self.tile, self.vector, self.vector_bits.device)
        vector_valid = valid.any(-1)
        nonzero = torch.zeros_like(vector_valid)
        nonzero[vector_valid] = self.vector_bits
        elements = torch.zeros_like(valid[nonzero])
        elements[valid[nonzero]] = self.element_bits
        stored = torch.zeros_like(valid)
        stored[nonzero] = elements
        grid = torch.zeros(valid.shape, dtype=self.values.dtype, device=self.values.device)
        grid[stored] = self.values
        return _untiles(grid, self.shape, self.vector)


@dataclass(frozen=True, eq=False)
class ChannelBitmapWeight(_StorageCounts):
    """The csOS format (spec §2.4, reconstruction): the list of non-zero output channels, then the
    packed columns (in index order) in the ``"row"``-mode bitmap, whose tiles group them by C."""

    shape: tuple[int, int]
    """(K, N) of the dense weight."""
    channels: torch.Tensor
    """1-D int64, ascending indices of the N_nz output channels that store an element."""
    packed: BitmapWeight | None
    """The (K, N_nz) packed weight in row mode; None when every channel is zero."""
    dtype: torch.dtype
    """dtype of the dense weight (one stored value is a word of its width)."""

    @property
    def index_bits(self) -> int:
        """ceil(log2 N) bits per channel index."""
        return (self.shape[1] - 1).bit_length()

    @property
    def nnz(self) -> int:
        return 0 if self.packed is None else self.packed.nnz

    @property
    def word_bits(self) -> int:
        return torch.empty((), dtype=self.dtype).element_size() * 8

    @property
    def metadata_bits(self) -> int:
        """N_nz · ceil(log2 N) + the packed bitmap's metadata."""
        packed = 0 if self.packed is None else self.packed.metadata_bits
        return self.channels.numel() * self.index_bits + packed

    @property
    def decu_words(self) -> int:
        """The packed bitmap's words plus ceil(channel-list bits / b) (assumption: read once)."""
        packed = 0 if self.packed is None else self.packed.decu_words
        return packed + _ceil_div(self.channels.numel() * self.index_bits, self.word_bits)

    def decode(self) -> torch.Tensor:
        out = torch.zeros(self.shape, dtype=self.dtype, device=self.channels.device)
        if self.packed is not None:
            out[:, self.channels] = self.packed.decode()
        return out


def encode_bitmap(weight: torch.Tensor, tile=(16, 16), *, vector: str = "row") -> BitmapWeight | ChannelBitmapWeight:
    """Encode a (K, N) weight: ``"row"``/``"col"`` bitmap, or the csOS ``"channel"`` format.

    An element is stored unless it is +0 (see :func:`stored_elements`); decoding is exact.
    """
    weight = _check_matrix("weight", weight)
    tile = check_tile(tile)
    _check_choice("vector", vector, ("row", "col", "channel"))
    if vector == "channel":
        channels = stored_elements(weight).any(0).nonzero().flatten()
        packed = encode_bitmap(weight[:, channels], tile) if channels.numel() else None
        return ChannelBitmapWeight(tuple(weight.shape), channels, packed, weight.dtype)
    grid = _tiles(weight, tile, vector)
    valid = _layout(tuple(weight.shape), tile, vector, weight.device)
    stored = stored_elements(grid)  # padding is +0, never stored
    nonzero = stored.any(-1)
    return BitmapWeight(
        shape=tuple(weight.shape),
        tile=tile,
        vector=vector,
        vector_bits=nonzero[valid.any(-1)],
        element_bits=stored[nonzero][valid[nonzero]],
        values=grid[stored],
    )


def _check_encoded(encoded):
    if not isinstance(encoded, (BitmapWeight, ChannelBitmapWeight)):
        raise TypeError(f"encoded must be a BitmapWeight or ChannelBitmapWeight, got {type(encoded).__name__}")
    return encoded


def decode_bitmap(encoded: BitmapWeight | ChannelBitmapWeight) -> torch.Tensor:
    """The dense (K, N) weight of an encoded one, bit for bit."""
    return _check_encoded(encoded).decode()


def metadata_bits(encoded: BitmapWeight | ChannelBitmapWeight) -> int:
    """Metadata bits of an encoded weight, as the spec counts them (§2.4)."""
    return _check_encoded(encoded).metadata_bits


# --------------------------------------------------------------------------- sparse GEMM


def _wrap_int32(t: torch.Tensor) -> torch.Tensor:
    return ((t + 2**31) & (2**32 - 1)) - 2**31


def sparse_gemm(x: torch.Tensor, weight, config: FlexiSAGAConfig = FLEXISAGA_16X16) -> torch.Tensor:
    """Y = X·W as FlexiSAGA's PEs compute it, skipping the weights that are not stored.

    ``x`` is (M, K); ``weight`` is a (K, N) tensor or an encoded one (decoded first, as the DecU
    does). Both must have ``config.dtype``. Per output, acc starts at +0 and for k = 0..K-1 adds
    fl(x·w) (``fused_mac``: one rounding) when W[k, n] is stored (spec §2.2); a k with no stored
    weight in any column is skipped as a whole temporal step. For finite X the float32 result
    equals the dense sequential product with the zeros, bit for bit; a non-finite X meeting a
    skipped weight gives no NaN. ``accumulation="fast"`` uses ``torch.matmul`` instead (float32;
    within rounding). ``int32`` wraps modulo 2**32 and is exact in any order.
    """
    if not isinstance(config, FlexiSAGAConfig):
        raise TypeError(f"config must be a FlexiSAGAConfig, got {type(config).__name__}")
    if isinstance(weight, (BitmapWeight, ChannelBitmapWeight)):
        weight = weight.decode()
    x = _check_matrix("x", x)
    weight = _check_matrix("weight", weight)
    dtype = getattr(torch, config.dtype)
    for name, t in (("x", x), ("weight", weight)):
        if t.dtype != dtype:
            raise TypeError(f"{name} must be {config.dtype} (config.dtype), got {t.dtype}")
    if x.shape[1] != weight.shape[0]:
        raise ValueError(f"x is (M, K) = {tuple(x.shape)} but weight is (K, N) = {tuple(weight.shape)}: K differs")
    if x.device != weight.device:
        raise ValueError(f"x is on {x.device} but weight is on {weight.device}")
    if config.dtype == "float32" and config.accumulation == "fast":
        return torch.matmul(x, weight)
    plan = derived(weight, "pe plan", None, lambda: pe_plan(weight[None]))  # kept for a weight that comes back
    compiled = pe_gemm(x[None], weight[None], config.fused_mac, plan)  # float32 CPU tensors only, else None
    if compiled is not None:
        return compiled[0]
    weight = weight.contiguous()  # rows W[k] are read once per step
    stored = stored_elements(weight)
    steps = stored.any(1).nonzero().flatten().tolist()
    if config.dtype == "int32":
        x64, w64 = x.long(), weight.long()
        acc = torch.zeros(x.shape[0], weight.shape[1], dtype=torch.int64, device=x.device)
        for k in steps:  # wrapped products are < 2**31, so K < 2**32 terms cannot overflow int64
            acc += _wrap_int32(x64[:, k, None] * w64[k])
        return _wrap_int32(acc).int()
    # Skipping W[k, n] is adding x·(+0) = ±0, which leaves acc unchanged while acc is never -0, unless
    # X[:, k] holds inf or NaN: only those steps need the explicit mask. A fused MAC can make acc -0
    # (a negative product below half the smallest subnormal, rounded once), which ±0 would turn into
    # +0: with fused_mac every step with an unstored weight is masked.
    unstored = ~stored.all(1)
    masked = (unstored if config.fused_mac else unstored & ~torch.isfinite(x).all(0)).tolist()
    x_cols = x.T.contiguous()
    acc = torch.zeros(x.shape[0], weight.shape[1], dtype=torch.float32, device=x.device)
    for k in steps:
        xk, wk = x_cols[k, :, None], weight[k]
        if config.fused_mac:
            new = fma_f32(xk, wk, acc)
            acc = torch.where(stored[k], new, acc) if masked[k] else new
        else:
            product = xk * wk
            if masked[k]:
                product.masked_fill_(~stored[k], 0.0)
            acc.add_(product)
    return acc
