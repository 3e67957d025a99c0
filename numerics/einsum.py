"""Lowering of tensor contractions to batched matrix products.

An emulator routes ``torch.einsum``, ``torch.tensordot`` and ``torch.inner`` through its own product
function so that they run in the target's arithmetic::

    from numerics.einsum import einsum_products
    scores = einsum_products("bhqd,bhkd->bhqk", [q, k], matmul=target_matmul)

Every contraction of two operands becomes exactly one ``matmul(A, B)`` call with ``A`` of shape
``(Bt, M, K)`` and ``B`` of shape ``(Bt, K, N)``; operands are contracted left to right. Everything else
(diagonals, permutes, broadcasting and summing out indices that occur in one operand only) is data movement
or a plain ``.sum()`` in the operands' dtype. Results match ``torch.einsum`` up to summation order.
"""

from __future__ import annotations

import math
import string
from collections import Counter
from collections.abc import Callable, Hashable, Sequence

from torch import Tensor

__all__ = ["Unsupported", "einsum_products", "inner_product", "tensordot_product"]

MatMul = Callable[[Tensor, Tensor], Tensor]
_LETTERS = frozenset(string.ascii_letters)


class Unsupported(ValueError):
    """A contraction form that cannot be lowered to batched matrix products."""


def _parse(equation: str, operands: Sequence[Tensor]) -> tuple[list[list[Hashable]], list[Hashable]]:
    """Turn an equation into label lists; ellipsis dims become int labels, right-aligned as they broadcast."""
    eq = equation.replace(" ", "")
    if eq.count("->") > 1:
        raise ValueError(f"einsum equation {equation!r} has more than one '->'")
    lhs, arrow, rhs = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(operands):
        raise ValueError(f"einsum equation {equation!r} has {len(terms)} operand terms but {len(operands)} were given")
    for term in [*terms, rhs]:
        letters = term.replace("...", "", 1)
        bad = sorted(set(letters) - _LETTERS)
        if bad:
            raise ValueError(f"einsum equation {equation!r} has invalid subscript characters {bad} (only a-z, A-Z)")
    n_ell = [op.dim() - len(term.replace("...", "")) for term, op in zip(terms, operands)]
    for i, (term, op, n) in enumerate(zip(terms, operands, n_ell)):
        if n < 0 or ("..." not in term and n != 0):
            raise ValueError(f"einsum operand {i} has {op.dim()} dims but subscripts {term!r}")
    width = max(n_ell, default=0)

    def labels(term: str, n: int) -> list[Hashable]:
        head, ell, tail = term.partition("...")
        return [*head, *(range(width - n, width) if ell else ()), *tail]

    inputs = [labels(t, n) for t, n in zip(terms, n_ell)]
    if not arrow:
        # Implicit output: ellipsis dims first, then letters seen exactly once, in ASCII order (as torch does).
        counts = Counter(lab for term in inputs for lab in term if isinstance(lab, str))
        return inputs, [*range(width), *sorted(lab for lab, c in counts.items() if c == 1)]
    output = labels(rhs, width)
    seen = {lab for term in inputs for lab in term}
    for lab in output:
        if lab not in seen:
            raise ValueError(f"einsum output subscript {lab!r} does not appear in any operand of {equation!r}")
        if output.count(lab) > 1:
            raise ValueError(f"einsum output subscript {lab!r} is repeated in {equation!r}")
    return inputs, output


def _diagonal(t: Tensor, labels: list[Hashable]) -> tuple[Tensor, list[Hashable]]:
    """Fold repeated labels within one operand into one dim by taking the diagonal."""
    labels = list(labels)
    while len(set(labels)) < len(labels):
        lab = next(lab for lab in labels if labels.count(lab) > 1)
        p = labels.index(lab)
        q = labels.index(lab, p + 1)
        if t.shape[p] != t.shape[q]:
            raise ValueError(
                f"einsum subscript {lab!r} is repeated in one operand with sizes {t.shape[p]} != {t.shape[q]}"
            )
        t = t.diagonal(dim1=p, dim2=q)  # drops dims p, q and appends the diagonal as the last dim
        labels = [x for i, x in enumerate(labels) if i not in (p, q)] + [lab]
    return t, labels


def _sum_out(t: Tensor, labels: list[Hashable], keep: set[Hashable]) -> tuple[Tensor, list[Hashable]]:
    """Sum dims whose labels are not kept: a reduction, so it needs no product."""
    dims = [i for i, lab in enumerate(labels) if lab not in keep]
    if dims:
        t = t.sum(dim=dims, dtype=t.dtype)  # keep the operand dtype (int sums would otherwise widen)
    return t, [lab for lab in labels if lab in keep]


def _pair(a: Tensor, la: list, b: Tensor, lb: list, needed: set, matmul: MatMul) -> tuple[Tensor, list]:
    """Contract two operands with one ``matmul`` call; returns the result with labels batch + left + right."""
    a, la = _sum_out(a, la, needed | set(lb))
    b, lb = _sum_out(b, lb, needed | set(la))
    batch = [lab for lab in la if lab in lb and lab in needed]
    contracted = [lab for lab in la if lab in lb and lab not in needed]
    left = [lab for lab in la if lab not in lb]
    right = [lab for lab in lb if lab not in la]
    sa, sb = dict(zip(la, a.shape)), dict(zip(lb, b.shape))
    # Size-1 dims broadcast against the other operand's size; torch.einsum does the same.
    size = {lab: sb[lab] if sa[lab] == 1 else sa[lab] for lab in batch + contracted}
    size |= {lab: sa[lab] for lab in left} | {lab: sb[lab] for lab in right}

    def sizes(labs: list) -> list[int]:
        return [size[lab] for lab in labs]

    bt, m, k, n = (math.prod(sizes(g)) for g in (batch, left, contracted, right))
    order_a, order_b = batch + left + contracted, batch + contracted + right
    a3 = a.permute([la.index(lab) for lab in order_a]).expand(sizes(order_a)).reshape(bt, m, k)
    b3 = b.permute([lb.index(lab) for lab in order_b]).expand(sizes(order_b)).reshape(bt, k, n)
    out = matmul(a3, b3)
    return out.reshape(sizes(batch + left + right)), batch + left + right


def _contract(
    inputs: list[list[Hashable]], output: list[Hashable], operands: Sequence[Tensor], matmul: MatMul
) -> Tensor:
    """Contract labelled operands left to right, one ``matmul`` per pair; ``output`` orders the result."""
    if not operands:
        raise ValueError("einsum needs at least one operand")
    ops = [_diagonal(op, term) for op, term in zip(operands, inputs)]
    sizes: dict[Hashable, int] = {}
    for i, (op, labels) in enumerate(ops):
        for lab, s in zip(labels, op.shape):
            prev = sizes.setdefault(lab, s)
            if s != prev and 1 not in (s, prev):
                what = "ellipsis dim" if isinstance(lab, int) else f"subscript {lab!r}"
                raise ValueError(f"einsum {what} has size {s} in operand {i}, which does not broadcast with {prev}")
            if prev == 1:
                sizes[lab] = s
    t, labels = ops[0]
    for j in range(1, len(ops)):
        needed = set(output).union(*(lb for _, lb in ops[j + 1 :]))
        t, labels = _pair(t, labels, *ops[j], needed, matmul)
    t, labels = _sum_out(t, labels, set(output))
    return t.permute([labels.index(lab) for lab in output])


def einsum_products(equation: str, operands: Sequence[Tensor], matmul: MatMul) -> Tensor:
    """``torch.einsum(equation, *operands)`` with every pairwise contraction done by ``matmul``."""
    if isinstance(operands, Tensor):
        raise Unsupported("einsum_products takes a sequence of operands, not a bare tensor")
    inputs, output = _parse(equation, operands)
    return _contract(inputs, output, operands, matmul)


def tensordot_product(a: Tensor, b: Tensor, dims, matmul: MatMul) -> Tensor:
    """``torch.tensordot(a, b, dims)`` through one ``matmul``; ``dims`` is an int or a pair of index lists."""
    if isinstance(dims, Tensor):
        dims = dims.tolist()  # torch also takes dims as a tensor (0-d for an int, or 2 x n)
    if isinstance(dims, int):
        if not 0 <= dims <= min(a.dim(), b.dim()):
            raise ValueError(f"tensordot dims={dims} out of range for operands of {a.dim()} and {b.dim()} dims")
        da, db = list(range(a.dim() - dims, a.dim())), list(range(dims))
    else:
        try:
            da, db = ([int(d) for d in ([x] if isinstance(x, int) else x)] for x in dims)
        except (TypeError, ValueError) as exc:
            raise Unsupported(f"tensordot dims {dims!r} must be an int or a pair of index lists") from exc
        if len(da) != len(db):
            raise ValueError(f"tensordot dims {dims!r} contract {len(da)} dims of a with {len(db)} of b")
        for d, t, name in [*((d, a, "a") for d in da), *((d, b, "b") for d in db)]:
            if not -t.dim() <= d < t.dim():
                raise ValueError(f"tensordot dim {d} out of range for {name} with {t.dim()} dims")
        da, db = [d % a.dim() for d in da], [d % b.dim() for d in db]  # non-empty lists imply dim() > 0
    if len(set(da)) < len(da) or len(set(db)) < len(db):
        raise ValueError(f"tensordot dims {dims!r} repeat a dim")
    for x, y in zip(da, db):
        if a.shape[x] != b.shape[y]:
            raise ValueError(
                f"tensordot contracts dim {x} of a (size {a.shape[x]}) with dim {y} of b (size {b.shape[y]})"
            )
    # Labels: ("a", i) for dims of a; b reuses a's label on contracted dims so they pair up.
    la = [("a", i) for i in range(a.dim())]
    lb = [la[da[db.index(j)]] if j in db else ("b", j) for j in range(b.dim())]
    output = [lab for i, lab in enumerate(la) if i not in da] + [lab for j, lab in enumerate(lb) if j not in db]
    return _contract([la, lb], output, [a, b], matmul)


def inner_product(a: Tensor, b: Tensor, matmul: MatMul) -> Tensor:
    """``torch.inner(a, b)`` through one ``matmul``: contracts the last dims; a 0-d operand multiplies."""
    if a.dim() == 0 or b.dim() == 0:
        # Scalar times tensor (torch.mul): the tensor's dims are all free, so the one product is (1, 1, 1) @ (1, 1, N).
        return einsum_products("...,...->...", [a, b], matmul)
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(f"inner contracts last dims of sizes {a.shape[-1]} and {b.shape[-1]}")
    return tensordot_product(a, b, ([a.dim() - 1], [b.dim() - 1]), matmul)
