"""Scalar reference of SoftEx expp (spec softex.md 2.1), plain integers, step by step. Tests only."""


def correction(f: int) -> int:
    """Step 6: f' from the 7-bit fraction f, with alpha_q=4, beta_q=7, gamma1_q=363, gamma2_q=278."""
    if f < 64:
        return ((2 * f * 4) * (f + 363)) >> 12
    return 127 - ((((255 - 2 * f) * 7) * (f + 278)) >> 12)


def expp_code(b: int, correct: bool = True) -> int:
    """expp of one BF16 code; ``correct=False`` gives the bare Schraudolph stage (f' = f)."""
    s, E, m = b >> 15, (b >> 7) & 255, b & 127
    if E >= 134:  # |x| >= 128, Inf, NaN
        return 0x7F80 if s == 0 else 0x0000
    M = 128 + m  # implicit 1, even for E = 0
    P = M * 23637
    T = P // 2 ** (140 - E)
    R = T // 2 + T % 2
    I = -R if s else R  # noqa: E741  (the spec's name)
    k = I // 128  # Python's // floors
    f = I - 128 * k
    Eo = k + 127
    if Eo >= 255:
        return 0x7F80
    if Eo <= 0:
        return 0x0000
    g = correction(f) if correct else f
    return (Eo << 7) | g
