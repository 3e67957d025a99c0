"""einsum / tensordot / inner lowered to batched products: same results as torch, every product through matmul."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from numerics.einsum import Unsupported, einsum_products, inner_product, tensordot_product

TOL = {"rtol": 1e-12, "atol": 1e-12}


def randn(*shape, seed=0):
    g = torch.Generator().manual_seed(seed + 17 * len(shape) + sum(shape))
    return torch.randn(shape, generator=g, dtype=torch.float64)


class Recorder:
    """A matmul that checks the (Bt, M, K) @ (Bt, K, N) contract and counts its calls."""

    def __init__(self):
        self.calls = []

    def __call__(self, a, b):
        assert a.dim() == 3 and b.dim() == 3, (a.shape, b.shape)
        assert a.shape[0] == b.shape[0] and a.shape[2] == b.shape[1], (a.shape, b.shape)
        self.calls.append((tuple(a.shape), tuple(b.shape)))
        return torch.matmul(a, b)


CASES = [
    ("ij,jk->ik", [(3, 4), (4, 5)]),  # matmul
    ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)]),  # bmm
    ("bhqd,bhkd->bhqk", [(2, 3, 5, 4), (2, 3, 6, 4)]),  # attention scores
    ("bhqk,bhkd->bhqd", [(2, 3, 5, 6), (2, 3, 6, 4)]),  # attention values
    ("ij,jk", [(3, 4), (4, 5)]),  # implicit output
    ("ba,ca", [(3, 4), (5, 4)]),  # implicit output, sorted
    ("aB,c", [(2, 3), (4,)]),  # implicit: upper case sorts first
    ("...ij,...jk->...ik", [(2, 1, 3, 4), (5, 4, 2)]),  # ellipsis broadcasting, different ranks
    ("...ij,jk", [(5, 2, 3), (3, 4)]),  # implicit with ellipsis
    ("a...b,b", [(2, 3, 4), (4,)]),  # ellipsis in the middle
    ("ab...,b->...a", [(2, 3, 4, 5), (3,)]),
    ("...i,...i->...", [(3, 1, 4), (2, 4)]),
    ("...i->i", [(2, 3, 4)]),  # ellipsis dims summed when the output omits them
    ("i,j->ij", [(3,), (4,)]),  # outer product
    ("i,i->i", [(4,), (4,)]),  # elementwise
    ("i,i", [(4,), (4,)]),  # dot
    ("ii", [(4, 4)]),  # trace
    ("ii->i", [(4, 4)]),  # diagonal
    ("iij,jk->ik", [(3, 3, 4), (4, 2)]),
    ("iii->i", [(3, 3, 3)]),
    ("ij->ji", [(3, 4)]),  # transpose, no product
    ("ij->", [(3, 4)]),
    ("ij,jk,kl->il", [(2, 3), (3, 4), (4, 5)]),  # 3-operand chain
    ("ab,bc,cd,de->ae", [(2, 3), (3, 4), (4, 2), (2, 3)]),
    ("ij,jk,ik->i", [(2, 3), (3, 4), (2, 4)]),  # batch index needed by a later operand
    ("ijk,jl->il", [(2, 3, 4), (3, 5)]),  # k summed out before the product
    ("ij,kl->", [(2, 3), (4, 5)]),
    ("ij,jk->ki", [(3, 4), (4, 5)]),  # transposed output
    ("bqd,bkd->bkq", [(2, 3, 4), (2, 5, 4)]),
    (",ij->ij", [(), (3, 4)]),  # scalar operand
    ("ij,->ji", [(3, 4), ()]),
    (",", [(), ()]),
    ("AB,BC->CA", [(2, 3), (3, 4)]),  # capital letters
    ("aA,Aa->aA", [(3, 4), (4, 3)]),
    (" i j , j k -> i k ", [(3, 4), (4, 5)]),  # spaces
    ("ij,jk->ik", [(3, 1), (4, 5)]),  # size-1 contracted index broadcasts
    ("bij,bjk->bik", [(1, 3, 4), (2, 4, 5)]),  # size-1 batch index broadcasts
    ("ij,jk->ik", [(0, 4), (4, 5)]),  # empty dim
]


@pytest.mark.parametrize(("equation", "shapes"), CASES, ids=[c[0] for c in CASES])
def test_matches_torch_einsum(equation, shapes):
    ops = [randn(*s, seed=i) for i, s in enumerate(shapes)]
    rec = Recorder()
    got = einsum_products(equation, ops, rec)
    want = torch.einsum(equation, *ops)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, **TOL)
    assert len(rec.calls) == (len(ops) - 1 if len(ops) >= 2 else 0)


@st.composite
def two_operand_equations(draw):
    letters = draw(st.lists(st.sampled_from("abcdefgXYZ"), min_size=1, max_size=6, unique=True))
    size = {c: draw(st.integers(1, 4)) for c in letters}
    terms = [draw(st.lists(st.sampled_from(letters), max_size=4)) for _ in range(2)]
    used = sorted(set(terms[0]) | set(terms[1]))
    explicit = draw(st.booleans())
    out = draw(st.permutations(used)) if used else []
    out = out[: draw(st.integers(0, len(out)))]
    eq = ",".join("".join(t) for t in terms) + ("->" + "".join(out) if explicit else "")
    shapes = [[size[c] for c in t] for t in terms]
    # Broadcasting: a non-repeated index may be size 1 in one operand.
    for t, shape in zip(terms, shapes):
        for i, c in enumerate(t):
            if t.count(c) == 1 and draw(st.booleans()) and draw(st.booleans()):
                shape[i] = 1
    return eq, shapes


@settings(max_examples=300, deadline=None)
@given(two_operand_equations(), st.integers(0, 2**16))
def test_random_two_operand_equations(case, seed):
    eq, shapes = case
    ops = [randn(*s, seed=seed + i) for i, s in enumerate(shapes)]
    rec = Recorder()
    got = einsum_products(eq, ops, rec)
    want = torch.einsum(eq, *ops)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, **TOL)
    assert len(rec.calls) == 1


def test_matmul_shapes_recorded():
    rec = Recorder()
    einsum_products("bhqd,bhkd->bhqk", [randn(2, 3, 5, 4), randn(2, 3, 6, 4)], rec)
    assert rec.calls == [((6, 5, 4), (6, 4, 6))]
    rec = Recorder()
    einsum_products("i,j->ij", [randn(3), randn(4)], rec)
    assert rec.calls == [((1, 3, 1), (1, 1, 4))]  # outer product: K = 1
    rec = Recorder()
    einsum_products("i,i->i", [randn(4), randn(4)], rec)
    assert rec.calls == [((4, 1, 1), (4, 1, 1))]  # elementwise: batch only


def test_products_go_through_matmul():
    def biased(a, b):
        return torch.matmul(a, b) + 1000

    for eq, shapes in [("ij,jk->ik", [(3, 4), (4, 5)]), ("i,j->ij", [(3,), (4,)]), (",ij->ij", [(), (2, 3)])]:
        ops = [randn(*s, seed=i) for i, s in enumerate(shapes)]
        want = torch.einsum(eq, *ops)
        got = einsum_products(eq, ops, biased)
        torch.testing.assert_close(got, want + 1000, **TOL)
    # Three operands: two calls, the bias of the first is carried into the second product.
    a, b, c = randn(2, 3), randn(3, 4), randn(4, 5)
    got = einsum_products("ij,jk,kl->il", [a, b, c], biased)
    torch.testing.assert_close(got, ((a @ b + 1000) @ c) + 1000, **TOL)


def test_single_operand_never_calls_matmul():
    def forbidden(a, b):
        raise AssertionError("no product expected")

    x = randn(3, 3, 4)
    torch.testing.assert_close(einsum_products("iij->j", [x], forbidden), torch.einsum("iij->j", x), **TOL)


def test_dtype_follows_matmul():
    ops = [randn(3, 4).float(), randn(4, 2).float()]
    got = einsum_products("ij,jk->ik", ops, lambda a, b: torch.matmul(a.double(), b.double()))
    assert got.dtype == torch.float64
    ints = [torch.arange(12, dtype=torch.int32).reshape(3, 4), torch.ones(4, 2, dtype=torch.int32)]
    assert einsum_products("ijk->i", [ints[0].reshape(3, 2, 2)], torch.matmul).dtype == torch.int32
    assert torch.equal(einsum_products("ij,jk->ik", ints, torch.matmul), torch.einsum("ij,jk->ik", *ints))


@pytest.mark.parametrize(
    ("a", "b", "dims"),
    [
        ((3, 4), (4, 5), 1),
        ((2, 3, 4), (3, 4, 5), 2),
        ((2, 3), (4, 5), 0),
        ((2, 3, 4), (4, 3, 5), ([1, 2], [1, 0])),
        ((2, 3, 4), (5, 2), ([-3], [-1])),
        ((2, 3), (2, 3), ((0, 1), (0, 1))),
        ((3, 4), (4, 5), [[1], [0]]),
        ((3, 4), (4, 5), torch.tensor([[1], [0]])),
        ((3, 4), (4, 5), torch.tensor(1)),
        ((), (3,), 0),
    ],
)
def test_tensordot_matches_torch(a, b, dims):
    x, y = randn(*a), randn(*b, seed=1)
    rec = Recorder()
    got = tensordot_product(x, y, dims, rec)
    want = torch.tensordot(x, y, dims)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, **TOL)
    assert len(rec.calls) == 1


@pytest.mark.parametrize(
    ("a", "b"), [((4,), (4,)), ((3, 4), (5, 4)), ((2, 3, 4), (4,)), ((), (2, 3)), ((3,), ()), ((), ())]
)
def test_inner_matches_torch(a, b):
    x, y = randn(*a), randn(*b, seed=1)
    rec = Recorder()
    got = inner_product(x, y, rec)
    want = torch.inner(x, y)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, **TOL)
    assert len(rec.calls) == 1


@pytest.mark.parametrize(
    ("equation", "shapes", "match"),
    [
        ("ij,jk->ik", [(3, 4)], "2 operand terms but 1"),
        ("ij->ik", [(3, 4)], "'k' does not appear"),
        ("ij->ii", [(3, 4)], "'i' is repeated"),
        ("i1,1k", [(3, 4), (4, 5)], "invalid subscript"),
        ("i.j", [(3, 4)], "invalid subscript"),
        ("ij->i->j", [(3, 4)], "more than one"),
        ("ij,jk->ik", [(3, 4), (5, 6)], "subscript 'j' has size 5"),
        ("ii->i", [(3, 4)], "'i' is repeated in one operand"),
        ("ijk->i", [(3, 4)], "has 2 dims"),
        ("i", [(3, 4)], "has 2 dims"),
        ("...i,...i", [(2, 3), (4, 3)], "ellipsis dim has size 4"),
    ],
)
def test_invalid_equations(equation, shapes, match):
    with pytest.raises(ValueError, match=match):
        einsum_products(equation, [randn(*s) for s in shapes], torch.matmul)


def test_invalid_tensordot_and_inner():
    with pytest.raises(ValueError, match="size 4.*size 5"):
        tensordot_product(randn(3, 4), randn(5, 6), 1, torch.matmul)
    with pytest.raises(ValueError, match="out of range"):
        tensordot_product(randn(3, 4), randn(4, 6), 3, torch.matmul)
    with pytest.raises(ValueError, match="out of range"):
        tensordot_product(randn(3, 4), randn(4, 6), ([2], [0]), torch.matmul)
    with pytest.raises(ValueError, match="repeat"):
        tensordot_product(randn(3, 3), randn(3, 3), ([0, 0], [0, 1]), torch.matmul)
    with pytest.raises(Unsupported, match="pair of index lists"):
        tensordot_product(randn(3, 4), randn(4, 6), "x", torch.matmul)
    with pytest.raises(ValueError, match="sizes 4 and 5"):
        inner_product(randn(3, 4), randn(5), torch.matmul)
    with pytest.raises(Unsupported):
        einsum_products("ij", randn(3, 4), torch.matmul)
