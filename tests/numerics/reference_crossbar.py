"""Scalar reference of the crossbar MVM, step by step as atleus.md §2.3 states it.

Plain Python ints (floats only where noise makes the analog sum real). Slow on purpose:
it loops over every row block, input bit, slice and column so each step is visible.
Random draws are passed in as nested lists in the spec's physical layout.
"""

from __future__ import annotations

import math


def _physical_column(j: int, m: int, n_pad: int, s: int, placement: str) -> int:
    return j * s + m if placement == "columns" else m * n_pad + j


def _adc(current: float, cfg) -> int:
    top = 2**cfg.adc_bits - 1
    if cfg.adc_mode == "exact":
        return max(round(current), 0)  # Python round() is round-half-even
    if cfg.adc_mode == "saturate":
        return min(max(round(current), 0), top)
    full = cfg.rows * cfg.levels
    i_max = full // 2 if cfg.flip_columns else full
    delta = 2 ** max(0, i_max.bit_length() - cfg.adc_bits)
    return delta * min(max(math.floor(current / delta), 0), top)


def crossbar_matmul_ref(x, w, cfg, *, fault_u=None, cell_z=None, adc_z=None, partials=False):
    """x: list of M input vectors (K ints); w: K lists of N ints. Returns M lists of N ints
    (or M lists of P lists of N ints with ``partials``).

    fault_u, cell_z: [set][p][row][physical column]; adc_z: [set][row m][p][t][physical column].
    """
    k, n = len(w), len(w[0])
    rows, bc, bw, bx = cfg.rows, cfg.cell_bits, cfg.weight_bits, cfg.input_bits
    big_l = 2**bc - 1
    s = -(-bw // bc)
    n_w = cfg.cols // s if cfg.slice_placement == "columns" else cfg.cols
    # Step 1: pad K to P*rows and N to a multiple of n_w.
    p_blocks = -(-k // rows)
    n_pad = -(-n // n_w) * n_w
    wp = [[w[i][j] if i < k and j < n else 0 for j in range(n_pad)] for i in range(p_blocks * rows)]
    # Step 2: encode to unsigned u per set, then slice.
    if cfg.weight_encoding == "offset":
        sets_u = [[[v + 2 ** (bw - 1) for v in r] for r in wp]]
    elif cfg.weight_encoding == "differential":
        sets_u = [[[max(v, 0) for v in r] for r in wp], [[max(-v, 0) for v in r] for r in wp]]
    else:
        sets_u = [[[v % 2**bw for v in r] for r in wp]]
    sig_m = [2 ** (bc * m) for m in range(s)]
    if cfg.weight_encoding == "twos_complement":
        sig_m[-1] = -sig_m[-1]
    sig_t = [2**t for t in range(bx)]
    if cfg.input_encoding == "twos_complement":
        sig_t[-1] = -sig_t[-1]

    results = []
    for mi, xv in enumerate(x):
        xpad = list(xv) + [0] * (p_blocks * rows - k)
        xbits = [[((v % 2**bx) >> t) & 1 for t in range(bx)] for v in xpad]
        block_results = []
        for p in range(p_blocks):
            block_rows = range(p * rows, (p + 1) * rows)
            per_set = []
            for set_i, u in enumerate(sets_u):
                out = [0] * n_pad
                for j in range(n_pad):
                    for m in range(s):
                        col = _physical_column(j, m, n_pad, s, cfg.slice_placement)
                        g = [(u[i][j] >> (bc * m)) & big_l for i in block_rows]
                        # Step 3: flip a column whose level sum exceeds rows*L/2.
                        flip = cfg.flip_columns and 2 * sum(g) > rows * big_l
                        if flip:
                            g = [big_l - v for v in g]
                        # Step 4: stuck-at faults.
                        if fault_u is not None:
                            p0, p1 = cfg.stuck_at_0_rate, cfg.stuck_at_1_rate
                            for r in range(rows):
                                nu = fault_u[set_i][p][r][col]
                                if nu < p0:
                                    g[r] = 0
                                elif nu < p0 + p1:
                                    g[r] = big_l
                        # Step 6 (cell part): programmed conductance with noise.
                        if cell_z is not None:
                            g = [g[r] + cfg.cell_noise_std * big_l * cell_z[set_i][p][r][col] for r in range(rows)]
                        for t in range(bx):
                            xt = [xbits[i][t] for i in block_rows]
                            current = sum(xt[r] * g[r] for r in range(rows))
                            if adc_z is not None:
                                current = current + cfg.adc_noise_std * adc_z[set_i][mi][p][t][col]
                            v = _adc(current, cfg)  # step 7
                            if flip:  # step 8: digital un-flip with the input popcount
                                v = big_l * sum(xt) - v
                            out[j] += sig_t[t] * sig_m[m] * v  # step 9: shift-and-add
                per_set.append(out)
            block = per_set[0] if len(per_set) == 1 else [a - b for a, b in zip(*per_set)]
            if cfg.weight_encoding == "offset":
                xsum = sum(xpad[i] for i in block_rows)
                block = [v - 2 ** (bw - 1) * xsum for v in block]
            block_results.append(block[:n])
        if partials:
            results.append(block_results)
        else:
            # Step 10: digital sum, wrapped to accumulator_bits.
            acc = cfg.accumulator_bits
            total = [sum(b[j] for b in block_results) for j in range(n)]
            results.append([(v + 2 ** (acc - 1)) % 2**acc - 2 ** (acc - 1) for v in total])
    return results
