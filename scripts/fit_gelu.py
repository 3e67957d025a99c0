"""Fit the SoftEx GELU coefficients (spec softex.md 4.3) and write numerics/gelu_coefficients.json.

Deterministic (fixed starts, no randomness). Stage 1, real-valued: for fixed a the minimax b is a
linear program on a grid of 1601 points of [0, 8]; log a is optimised by Nelder-Mead from fixed
starts (Craig-formula quadrature nodes and geometric spreads) and, for n terms, separately from warm
starts built on the stored (n-1)-term fit. Stage 2, bit-exact: a and b rounded to BF16, then
coordinate search over +-4 BF16 codes per coefficient on E_S from the emulated datapath, keeping
sum_i floor(b_i 2^14 + 1/2) = 2^13; of the two stage-1 results the one with the better E_S is kept.
Run the terms in increasing order. Takes about half an hour on one core (stage 1 dominates;
--reuse-stage1 reruns stage 2 only); its output is data, and the tests recompute every figure from
the datapath.

    python scripts/fit_gelu.py [--terms 2 3 4 5 6]
"""

import argparse
import functools
import itertools
import json
import math
import pathlib
import sys

import numpy as np
import torch
from scipy.optimize import linprog, minimize
from scipy.special import ndtr

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from numerics.formats import bf16_to_bits, bits_to_bf16, round_to_bfloat16  # noqa: E402
from numerics.softex_gelu import ACC_FRAC_BITS, GeluCoefficients, gelu, gelu_datapath  # noqa: E402

OUT = pathlib.Path(__file__).resolve().parents[1] / "numerics" / "gelu_coefficients.json"
GRID = np.linspace(0.0, 8.0, 1601)
PHI = ndtr(-GRID)  # Phi(-u)
BOX = 4  # stage 2: codes within +-4 of the rounded stage-1 value
HALF = 1 << (ACC_FRAC_BITS - 1)  # sum of the q_i at w = 0, so that S(0) = 1/2

# stage 2 evaluation set: every finite BF16 x with 0 <= x <= 8 (S depends on |x| only)
X_POS = bits_to_bf16(torch.arange(0, 0x4101, dtype=torch.int32))
W_POS = -(X_POS * X_POS)
U_POS = X_POS.double()
PHI_POS = torch.special.ndtr(-U_POS)


def best_b(a: np.ndarray):
    """Minimax b >= 0 with sum 1/2 for fixed a: (E, b)."""
    n = len(a)
    g = GRID[:, None] * np.exp(-np.outer(GRID**2, a))
    rhs = GRID * PHI
    a_ub = np.block([[g, -np.ones((len(GRID), 1))], [-g, -np.ones((len(GRID), 1))]])
    res = linprog(
        np.r_[np.zeros(n), 1.0],
        A_ub=a_ub,
        b_ub=np.r_[rhs, -rhs],
        A_eq=np.r_[np.ones(n), 0.0][None],
        b_eq=[0.5],
        bounds=[(0, None)] * (n + 1),
        method="highs",
    )
    return res.fun, res.x[:n]


def grid_error(a: np.ndarray, b: np.ndarray) -> float:
    """E: max over the grid of u |sum b_i exp(-a_i u^2) - Phi(-u)| (evaluated directly: the LP optimum
    may differ by its feasibility tolerance)."""
    return float(np.max(GRID * np.abs(np.exp(-np.outer(GRID**2, a)) @ b - PHI)))


def cold_starts(n: int) -> list:
    """Fixed starts for log a: Craig-formula quadrature nodes and geometric spreads."""
    starts = []
    for offset in (0.5, 0.25, 0.75):  # Craig: Phi(-u) = (1/pi) int_0^{pi/2} exp(-u^2 / (2 sin^2 t)) dt
        theta = (np.arange(n) + offset) * (np.pi / 2) / n
        starts.append(np.log(0.5 / np.sin(theta) ** 2))
    for ratio in (4.0, 6.0):  # geometric spreads like those of the fitted a (0.55 up to a few hundred)
        starts.append(np.log(0.55 * ratio ** np.arange(n)))
    return starts


def warm_starts(fewer: np.ndarray) -> list:
    """Starts from the stored a of the (n-1)-term fit plus one term above, below or between them
    (cold starts alone left the 6-term fit in a local optimum worse than the 5-term one)."""
    extras = (fewer[-1] * 4, fewer[0] / 4, *np.sqrt(fewer[1:] * fewer[:-1]))
    return [np.log(np.sort(np.append(fewer, extra))) for extra in extras]


def stage1(starts: list):
    """Best (E, a, b) over Nelder-Mead runs from ``starts`` (log a); a sorted ascending."""
    n = len(starts[0])

    def objective(log_a):
        # a in [0.05, 1e4]: a larger a only acts at |x| < 0.01, a delta at 0 that buys grid error
        # at the price of S != 1/2 for tiny x; a smaller one needs b ~ 0
        if np.any(log_a < math.log(0.05)) or np.any(log_a > math.log(1e4)):
            return 1.0
        return best_b(np.exp(log_a))[0]

    best = None
    for start in starts:
        res = minimize(
            objective, start, method="Nelder-Mead", options={"xatol": 1e-6, "fatol": 1e-9, "maxfev": 400 * n}
        )
        res = minimize(
            objective,
            res.x,
            method="Nelder-Mead",  # restart: NM stalls
            options={"xatol": 1e-7, "fatol": 1e-10, "maxfev": 200 * n},
        )
        if best is None or res.fun < best[0]:
            best = (res.fun, res.x)
    a = np.exp(best[1])
    e, b = best_b(a)
    order = np.argsort(a)
    return e, a[order], b[order]


def to_code(v: float) -> int:
    return int(bf16_to_bits(round_to_bfloat16(torch.tensor([v], dtype=torch.float64)))[0])


def value(code: int) -> float:
    return float(bits_to_bf16(torch.tensor([code], dtype=torch.int32))[0])


@functools.lru_cache(maxsize=None)
def q_code(code: int) -> int:
    """The accumulator code of b at w = 0: floor(b 2^14 + 1/2)."""
    return math.floor(value(code) * 2**ACC_FRAC_BITS + 0.5)


def q0(b_codes) -> int:
    return sum(q_code(c) for c in b_codes)


def score(a_codes, b_codes):
    """(E_S max, E_S mean) over every finite BF16 x with |x| <= 8."""
    s = gelu_datapath(W_POS, GeluCoefficients(tuple(a_codes), tuple(b_codes))).double()
    err = U_POS * (s - PHI_POS).abs()
    return err.max().item(), err.mean().item()


def neighbours(a_codes, b_codes, a0, b0):
    """Single moves on a; moves on b that keep sum q = 2^13, alone or with one compensating b."""
    n = len(a_codes)
    steps = [d for d in range(-BOX, BOX + 1) if d]
    for i, d in itertools.product(range(n), steps):
        if abs(a_codes[i] + d - a0[i]) <= BOX:
            yield a_codes[:i] + (a_codes[i] + d,) + a_codes[i + 1 :], b_codes
    for i, d in itertools.product(range(n), steps):
        if abs(b_codes[i] + d - b0[i]) > BOX:
            continue
        moved = b_codes[:i] + (b_codes[i] + d,) + b_codes[i + 1 :]
        if q0(moved) == HALF:
            yield a_codes, moved
            continue
        for j, e in itertools.product(range(n), steps):
            if j != i and abs(moved[j] + e - b0[j]) <= BOX:
                pair = moved[:j] + (moved[j] + e,) + moved[j + 1 :]
                if q0(pair) == HALF:
                    yield a_codes, pair


def absorb(a0, b0):
    """Candidates where one b_j takes the code nearest to b0_j whose q makes the sum 2^13, after no
    move or one move of +-1..4 codes on another b_i."""
    starts = [b0] + [b0[:i] + (b0[i] + d,) + b0[i + 1 :] for i in range(len(b0)) for d in range(-BOX, BOX + 1) if d]
    for b in starts:
        for j in range(len(b)):
            need = HALF - (q0(b) - q_code(b[j]))
            if need <= 0:
                continue
            code = to_code(need / 2**ACC_FRAC_BITS)  # q of an exact multiple of 2^-14 is that multiple
            if q_code(code) == need:
                yield a0, b[:j] + (code,) + b[j + 1 :]


def valid(a_codes, b_codes) -> bool:
    try:
        GeluCoefficients(tuple(a_codes), tuple(b_codes))
    except ValueError:
        return False
    return True


def stage2(a: np.ndarray, b: np.ndarray):
    a0, b0 = tuple(to_code(v) for v in a), tuple(to_code(v) for v in b)
    rounded = score(a0, b0)
    cur = (a0, b0)
    if q0(b0) != HALF:  # repair the sum: the best of the smallest b moves within the box that restore it
        options = [
            [(abs(d), b0[i] + d) for d in range(-BOX, BOX + 1) if 0 < b0[i] + d < 0x7F80] for i in range(len(b0))
        ]
        fixes = sorted(
            (sum(m for m, _ in combo), tuple(c for _, c in combo))
            for combo in itertools.product(*options)
            if q0(tuple(c for _, c in combo)) == HALF
        )
        cands = [(a0, b) for _, b in fixes if valid(a0, b)][:40]
        if not cands:  # the box cannot fix the residue (e.g. steps of 4 and a tiny b_j): b_j absorbs it,
            cands = [c for c in absorb(a0, b0) if valid(*c)]  # beyond the box, after at most one box move
        if not cands:
            raise RuntimeError(f"no b gives sum q = {HALF}")
        cur = min(cands, key=lambda c: score(*c))
    best = score(*cur)
    while True:
        cands = [c for c in neighbours(*cur, a0, b0) if valid(*c)]
        scored = min(((score(*c), c) for c in cands), default=None)
        if scored is None or scored[0] >= best:
            return cur, best, rounded
        best, cur = scored


def gelu_figures(coeffs: GeluCoefficients):
    """max |y - GELU(x)| and the share of y == bf16(GELU(x)) over every finite BF16 |x| <= 8."""
    codes = torch.cat([torch.arange(0, 0x4101), torch.arange(0x8000, 0xC101)]).to(torch.int32)
    x = bits_to_bf16(codes)
    y = gelu(x, coefficients=coeffs)
    xd = x.double()
    truth = xd * torch.special.ndtr(xd)
    cr = round_to_bfloat16(truth)
    return (y.double() - truth).abs().max().item(), (bf16_to_bits(y) == bf16_to_bits(cr)).double().mean().item()


def fit(n: int, previous: dict | None, fewer: dict | None = None) -> dict:
    """Stage 1 from the cold starts and, given the stored (n-1)-term fit ``fewer``, from warm starts;
    each stage-1 result goes through stage 2 and the better bit-exact E_S (max, then mean) is kept,
    the cold one on a tie. ``previous`` (--reuse-stage1): the stored real-valued a, b from the LP."""
    if previous:
        a = np.array(previous["a_real"])
        candidates = [(a, best_b(a)[1])]
    else:
        candidates = [stage1(cold_starts(n))[1:]]
        if fewer:
            candidates.append(stage1(warm_starts(np.array(fewer["a_real"])))[1:])
    results = [(stage2(a, b), a, b) for a, b in candidates]
    ((a_codes, b_codes), (es_max, es_mean), rounded), a, b = min(results, key=lambda r: r[0][1])
    e = grid_error(a, b)
    coeffs = GeluCoefficients(a_codes, b_codes)
    gmax, share = gelu_figures(coeffs)
    return {
        "a_hex": [f"0x{c:04X}" for c in a_codes],
        "b_hex": [f"0x{c:04X}" for c in b_codes],
        "a": [value(c) for c in a_codes],
        "b": [value(c) for c in b_codes],
        "a_real": a.tolist(),
        "b_real": b.tolist(),
        "E": e,
        "E_S_rounded": rounded[0],
        "E_S_max": es_max,
        "E_S_mean": es_mean,
        "gelu_max_abs_error": gmax,
        "gelu_exact_share": share,
    }


META = {
    "provenance": "scripts/fit_gelu.py (spec softex.md 4.3)",
    "definitions": {
        "a, b": "BF16 coefficients of S(w) = sum_i b_i expp(a_i w), w = -bf16(x^2); hex codes and values",
        "a_real, b_real": "stage 1 real-valued fit (float64)",
        "E": "stage 1: max over 1601 grid points u in [0, 8] of u |sum b_i exp(-a_i u^2) - Phi(-u)|",
        "E_S_rounded": "E_S of the stage-1 values rounded to BF16, before the search (sum q not enforced)",
        "E_S_max, E_S_mean": "max and mean over every finite BF16 x, |x| <= 8, of |x| |S(x) - Phi(-|x|)|",
        "gelu_max_abs_error": "max over every finite BF16 x, |x| <= 8, of |y - x Phi(x)| (float64 erf GELU)",
        "gelu_exact_share": "share of those x with y == bf16(x Phi(x)) (correctly rounded)",
    },
}


def main() -> None:
    torch.set_num_threads(1)  # small tensors: threads only add overhead
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--terms", type=int, nargs="+", default=[2, 3, 4, 5, 6])
    ap.add_argument("--reuse-stage1", action="store_true", help="start stage 2 from the stored a_real")
    args = ap.parse_args()
    for n in args.terms:
        stored = json.loads(OUT.read_text())["fits"] if OUT.exists() else {}
        result = fit(n, stored.get(str(n)) if args.reuse_stage1 else None, stored.get(str(n - 1)))
        print(
            n,
            {
                k: result[k]
                for k in (
                    "a_hex",
                    "b_hex",
                    "E",
                    "E_S_rounded",
                    "E_S_max",
                    "E_S_mean",
                    "gelu_max_abs_error",
                    "gelu_exact_share",
                )
            },
            flush=True,
        )
        data = json.loads(OUT.read_text()) if OUT.exists() else {"fits": {}}  # re-read: runs may share the file
        data.update(META)
        data["fits"] = dict(sorted({**data["fits"], str(n): result}.items()))
        OUT.write_text(json.dumps(data, indent=1) + "\n")


if __name__ == "__main__":
    main()
