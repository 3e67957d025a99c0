/* edgenum's compiled CPU kernels, built at first use by numerics/kernels.py (which says why each exists):
 * FlexiSAGA's PE-order float32 GEMM, the lookup of a bfloat16 code's tabulated result, SoftEx's softmax and its
 * denominator, HASTILY's UCLM softmax, a crossbar Linear's input codes and scaled block sum (and a whole small
 * one that cannot clip), and the bit counts behind a crossbar product's clipping candidates. Each exported
 * worker may run on
 * several threads at once, which claim pieces of the work from a shared counter (claim below).
 *
 * PE-order GEMM (docs/hardware/flexisaga.md, section 2.2): y[g] = x[g] . w[g] with x (G, M, K),
 * w (G, K, N) and y (G, M, N), contiguous float32. A weight is stored unless its bits are those of +0
 * (the zero the decompression unit injects). Each output starts at +0 and adds the products of its column's
 * stored weights in increasing k: acc = fl(acc + fl(x*w)), or fl(acc + x*w) with one rounding when fused.
 * Two ways to run it: column blocks of 16 columns sharing one list of steps (the k where the block stores any
 * weight; fast where whole rows of a block are pruned, row-vector sparsity), or column by column, each
 * skipping exactly what it does not store (column-vector sparsity). In a block, adding x*(+0) for an unstored
 * weight is exact while x is finite and acc is never -0 (only a fused MAC makes -0); elsewhere those steps
 * are masked.
 *
 * Bit-exactness rests on C's evaluation rules: compile with -ffp-contract=off and without -ffast-math,
 * so that every + and * rounds once, in the order written. The floating-point environment is reset to
 * the default (round to nearest even, subnormals kept) for the duration of a call.
 */
#include <fenv.h>
#if defined(__AVX512F__) || defined(__FMA__)
#include <immintrin.h>
#endif
#include <sched.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

/* The GEMMs' vectors hold VW floats, as wide as the CPU's registers. A block tile keeps MB rows x NB columns of
 * sums in registers: 8 x 16 in 8 of AVX-512's 32, 4 x 16 in 8 of AVX2's 16 (measured: other MB are slower). */
#ifdef __AVX512F__
#define VW 16
#define MB 8
#else
#define VW 8
#define MB 4
#endif
#define NB 16    /* output columns per tile and per column block */
#define CHUNK 4  /* tiles claimed at a time: small, so that a busy core holds little work back */

/* Every kernel that rounds runs in the default floating-point environment (round to nearest even, subnormals
 * kept, whatever the caller set: e.g. torch.set_flush_denormal) and gives the caller's back when it returns:
 * fenv_t env = default_rounding(); ... fesetenv(&env). */
static inline fenv_t default_rounding(void)
{
    fenv_t env;
    fegetenv(&env);
    fesetenv(FE_DFL_ENV);
    return env;
}

/* Work sharing. next[0] counts the work items handed out, next[1] those done, next[2] holds their total.
 * claim() reports the piece [*begin, *end) it handed out last as done (start with both 0), then hands out the
 * next `chunk` of `total` items; 0 once none is left. The caller waits (edgenum_wait) for the items, not for
 * the helper threads: a helper that starts late, on a busy core, finds nothing to claim and holds nothing up. */
static inline int claim(int64_t *next, int64_t chunk, int64_t total, int64_t *begin, int64_t *end)
{
    if (*end > *begin)
        __atomic_fetch_add(next + 1, *end - *begin, __ATOMIC_RELEASE); /* its writes before the count */
    __atomic_store_n(next + 2, total, __ATOMIC_RELAXED);
    *begin = __atomic_fetch_add(next, chunk, __ATOMIC_RELAXED);
    *end = *begin + chunk < total ? *begin + chunk : total;
    return *begin < total;
}

/* claim() over `total` items in pieces of `chunk` on the calling thread, doing nothing with them: `next` as a
 * kernel leaves it, for the tests. */
void edgenum_claim_all(int64_t total, int64_t chunk, int64_t *next)
{
    int64_t begin = 0, end = 0;
    while (claim(next, chunk, total, &begin, &end))
        ;
}

/* Returns once every item handed out through `next` is done (the calling thread has run its share first). */
void edgenum_wait(int64_t *next)
{
    while (__atomic_load_n(next + 1, __ATOMIC_ACQUIRE) < __atomic_load_n(next + 2, __ATOMIC_RELAXED))
        sched_yield();
}

/* Row kernels claim about ROW_CHUNK_ELEMENTS elements' worth of rows at a time: rows_per_claim(per_row) rows,
 * at least one. */
#define ROW_CHUNK_ELEMENTS (1 << 15)

static inline int64_t rows_per_claim(int64_t per_row)
{
    return per_row > 0 && per_row < ROW_CHUNK_ELEMENTS ? ROW_CHUNK_ELEMENTS / per_row : 1;
}

typedef float vf __attribute__((vector_size(4 * VW)));
typedef int32_t vfi __attribute__((vector_size(4 * VW)));
typedef int32_t v8i __attribute__((vector_size(32)));

static inline vf loadv(const float *p)
{
    vf v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* fl(acc + x*w) lane by lane, rounded once: the CPU's fused multiply-add where it has one (the compiler does
 * not always turn the fmaf loop into it), else fmaf. */
static inline vf fmav(float x, vf w, vf acc)
{
#if VW == 16
    return (vf)_mm512_fmadd_ps(_mm512_set1_ps(x), (__m512)w, (__m512)acc);
#elif defined(__FMA__)
    return (vf)_mm256_fmadd_ps(_mm256_set1_ps(x), (__m256)w, (__m256)acc);
#else
    vf r;
    for (int c = 0; c < VW; c++)
        r[c] = fmaf(x, w[c], acc[c]);
    return r;
#endif
}

static inline vf macv(vf acc, float x, vf w, int fused)
{
    return fused ? fmav(x, w, acc) : acc + x * w;
}

/* new where the weight w is stored (its bits are not all zero), old elsewhere */
static inline vf keep_stored(vf old, vf new, vf w)
{
    vfi m = (vfi)w != (vfi){0};
    return (vf)(((vfi)new & m) | ((vfi)old & ~m));
}

static inline int stored(const float *w)
{
    int32_t bits;
    memcpy(&bits, w, sizeof bits);
    return bits != 0;
}

/* How many of the 16 weights from w on are stored. */
static inline int stored16(const float *w)
{
    v8i lo, hi;
    memcpy(&lo, w, sizeof lo);
    memcpy(&hi, w + 8, sizeof hi);
    v8i minus = (lo != (v8i){0}) + (hi != (v8i){0}); /* -1 per stored weight */
    int count = 0;
    for (int c = 0; c < 8; c++)
        count -= minus[c];
    return count;
}

/* A full tile: MB rows of x from x0 (row stride ldx) by NB columns, whose weights at step s are wp[s*NB ..]
 * (packed by the plan: a block's weights are read in order, never a row of N apart). The plain steps run in a
 * tight loop that keeps the MB·NB/VW accumulator vectors in registers; with `masking`, a step listed as ~k
 * blends its sums with the old ones, and without, it runs as a plain step on k (e ^ (e >> 31) is ~e for a
 * negative e). */
static inline __attribute__((always_inline)) void tile16(const float *x0, int64_t ldx, const float *wp,
                                                         const int32_t *steps, int64_t ns, int fused, int masking,
                                                         float *y, int64_t n)
{
    enum { V = NB / VW };
    vf a[MB][V];
    for (int r = 0; r < MB; r++)
        for (int v = 0; v < V; v++)
            a[r][v] = (vf){0};
    int64_t s = 0;
    for (;;) {
        for (; s < ns && (!masking || steps[s] >= 0); s++) {
            int32_t e = steps[s];
            int64_t k = e ^ (e >> 31);
            vf w[V];
            for (int v = 0; v < V; v++)
                w[v] = loadv(wp + s * NB + v * VW);
            for (int r = 0; r < MB; r++) {
                float xv = x0[r * ldx + k];
                for (int v = 0; v < V; v++)
                    a[r][v] = macv(a[r][v], xv, w[v], fused);
            }
        }
        if (s == ns)
            break;
        int64_t k = ~steps[s];
        vf w[V];
        for (int v = 0; v < V; v++)
            w[v] = loadv(wp + s * NB + v * VW);
        s++;
        for (int r = 0; r < MB; r++) {
            float xv = x0[r * ldx + k];
            for (int v = 0; v < V; v++)
                a[r][v] = keep_stored(a[r][v], macv(a[r][v], xv, w[v], fused), w[v]);
        }
    }
    for (int r = 0; r < MB; r++)
        memcpy(y + r * n, a[r], sizeof a[r]);
}

/* An edge tile (rows < MB or cols < NB), element by element; it always skips unstored weights. */
static void tile_edge(const float *x0, int64_t ldx, const float *wp, const int32_t *steps, int64_t ns, int fused,
                      float *y, int64_t n, int rows, int cols)
{
    float a[MB][NB] = {{0}};
    for (int64_t s = 0; s < ns; s++) {
        int32_t e = steps[s];
        int64_t k = e < 0 ? ~e : e;
        for (int r = 0; r < rows; r++) {
            float xv = x0[r * ldx + k];
            for (int c = 0; c < cols; c++) {
                const float *w = wp + s * NB + c;
                if (e < 0 && !stored(w))
                    continue;
                a[r][c] = fused ? fmaf(xv, *w, a[r][c]) : a[r][c] + xv * *w;
            }
        }
    }
    for (int r = 0; r < rows; r++)
        memcpy(y + r * n, a[r], cols * sizeof(float));
}

/* Lists the steps of every column block q = g*nb + b into steps[q*K ..] and their number into counts[q]: k
 * where the block stores all its weights, ~k where it stores some; step s's 16 weights go to
 * packed[(q*K + s)*NB ..] (zeros past the last column). totals gets the number of steps, of stored weights and
 * of ~k steps. It reads the weights once, row by row in memory order; the caller keeps the plan for a weight
 * that comes back. */
void edgenum_pe_plan(int64_t G, int64_t K, int64_t N, const float *w, int32_t *steps, int64_t *counts,
                     float *packed, int64_t *totals)
{
    int64_t nb = (N + NB - 1) / NB;
    totals[0] = totals[1] = totals[2] = 0;
    for (int64_t q = 0; q < G * nb; q++)
        counts[q] = 0;
    for (int64_t g = 0; g < G; g++) {
        for (int64_t k = 0; k < K; k++) {
            const float *wk = w + (g * K + k) * N;
            for (int64_t b = 0; b < nb; b++) {
                int64_t n0 = b * NB, cols = N - n0 < NB ? N - n0 : NB, q = g * nb + b;
                int count = cols == NB ? stored16(wk + n0) : 0;
                for (int64_t j = 0; cols < NB && j < cols; j++)
                    count += stored(wk + n0 + j);
                if (count == 0)
                    continue;
                totals[1] += count;
                totals[2] += count < cols;
                float *to = packed + (q * K + counts[q]) * NB;
                memcpy(to, wk + n0, cols * sizeof(float));
                memset(to + cols, 0, (NB - cols) * sizeof(float));
                steps[q * K + counts[q]++] = count < cols ? ~(int32_t)k : (int32_t)k;
            }
        }
    }
    for (int64_t q = 0; q < G * nb; q++)
        totals[0] += counts[q];
}

/* One worker: claims tiles (CHUNK at a time) from *next until none is left; each output is written by
 * the one worker that claimed its tile. `masking`: whether a step listed as ~k must skip the unstored
 * weights (adding x*(+0) instead is exact while x is finite and acc is never -0, which only a fused MAC can
 * make, so the caller sets it where x holds Inf or NaN, and a fused MAC always masks). */
void edgenum_pe_gemm_f32(int64_t G, int64_t M, int64_t K, int64_t N, const float *x, const float *packed,
                         int32_t fused, int32_t masking, const int32_t *steps, const int64_t *counts, float *y,
                         int64_t *next)
{
    fenv_t env = default_rounding();
    int64_t nb = (N + NB - 1) / NB, mb = (M + MB - 1) / MB, t0 = 0, t1 = 0;
    while (claim(next, CHUNK, G * nb * mb, &t0, &t1)) {
        for (int64_t t = t0; t < t1; t++) {
            int64_t i = t % mb, q = t / mb; /* tiles of one column block are consecutive: its weights stay cached */
            int64_t g = q / nb, m0 = i * MB, n0 = q % nb * NB;
            int rows = M - m0 < MB ? (int)(M - m0) : MB;
            int cols = N - n0 < NB ? (int)(N - n0) : NB;
            const float *xb = x + (g * M + m0) * K, *wb = packed + q * K * NB;
            const int32_t *sl = steps + q * K;
            int64_t ns = counts[q];
            float *yb = y + (g * M + m0) * N + n0;
            if (rows < MB || cols < NB)
                tile_edge(xb, K, wb, sl, ns, fused, yb, N, rows, cols);
            else if (fused)
                tile16(xb, K, wb, sl, ns, 1, 1, yb, N);
            else if (masking)
                tile16(xb, K, wb, sl, ns, 0, 1, yb, N);
            else
                tile16(xb, K, wb, sl, ns, 0, 0, yb, N);
        }
    }
    fesetenv(&env);
}

/* PE-order GEMM column by column, for weights whose columns store different k (column-vector sparsity): a
 * column block's steps are then nearly every k, and each column's own list skips what it does not store.
 * The plan lists column q = g*N + n's stored weights in increasing k: ks[offsets[q] .. offsets[q+1]) and
 * their values. offsets has G*N + 1 entries. */
void edgenum_pe_columns_plan(int64_t G, int64_t K, int64_t N, const float *w, int64_t *offsets, int32_t *ks,
                             float *values)
{
    memset(offsets, 0, (G * N + 1) * sizeof *offsets);
    for (int64_t g = 0; g < G; g++) /* offsets[q + 1] = column q's count */
        for (int64_t k = 0; k < K; k++)
            for (int64_t n = 0; n < N; n++)
                offsets[g * N + n + 1] += stored(w + (g * K + k) * N + n);
    for (int64_t q = 0, start = 0; q < G * N; q++) { /* offsets[q + 1] = column q's start */
        int64_t count = offsets[q + 1];
        offsets[q + 1] = start;
        start += count;
    }
    for (int64_t g = 0; g < G; g++) /* filling column q moves offsets[q + 1] on to its end: column q+1's start */
        for (int64_t k = 0; k < K; k++)
            for (int64_t n = 0; n < N; n++) {
                const float *wk = w + (g * K + k) * N + n;
                if (stored(wk)) {
                    int64_t at = offsets[g * N + n + 1]++;
                    ks[at] = (int32_t)k;
                    values[at] = *wk;
                }
            }
}

#define PANEL 64       /* rows of x per panel: 64 / VW accumulator vectors per column */
#define PANEL_COLS 16  /* columns per work item */

/* One column's stored steps [s0, s1) into its PANEL sums a, from the panel's rows at each step's k. */
static inline __attribute__((always_inline)) void column_steps(const float *panel, const int32_t *ks,
                                                               const float *values, int64_t s0, int64_t s1,
                                                               int fused, vf *a)
{
    for (int64_t s = s0; s < s1; s++)
        for (int r = 0; r < PANEL / VW; r++)
            a[r] = macv(a[r], values[s], loadv(panel + (int64_t)ks[s] * PANEL + VW * r), fused);
}

/* One worker of the column-wise PE-order GEMM. xp holds x as panels (G, P, K, PANEL): panel p of group g is
 * rows PANEL*p .. PANEL*p + PANEL - 1, transposed, padded with zero rows. A work item is PANEL_COLS columns of
 * one panel (consecutive items share the panel, which stays cached); each of its outputs adds fl(w*x), or
 * fl(acc + w*x) fused, over its column's stored k in increasing k: unstored weights are skipped, not added. */
void edgenum_pe_columns_f32(int64_t G, int64_t M, int64_t K, int64_t N, const float *xp, int32_t fused,
                            const int64_t *offsets, const int32_t *ks, const float *values, float *y, int64_t *next)
{
    fenv_t env = default_rounding();
    int64_t P = (M + PANEL - 1) / PANEL, nc = (N + PANEL_COLS - 1) / PANEL_COLS, t0 = 0, t1 = 0;
    float out[PANEL][PANEL_COLS];
    while (claim(next, 1, G * P * nc, &t0, &t1)) {
        for (int64_t t = t0; t < t1; t++) {
            int64_t c = t % nc, p = t / nc % P, g = t / nc / P, n0 = c * PANEL_COLS;
            int64_t cols = N - n0 < PANEL_COLS ? N - n0 : PANEL_COLS;
            int64_t rows = M - p * PANEL < PANEL ? M - p * PANEL : PANEL;
            const float *panel = xp + (g * P + p) * K * PANEL;
            for (int64_t j = 0; j < cols; j++) {
                int64_t q = g * N + n0 + j;
                vf a[PANEL / VW];
                for (int r = 0; r < PANEL / VW; r++)
                    a[r] = (vf){0};
                if (fused) /* a constant flag in each call: the loop is compiled once per kind of MAC */
                    column_steps(panel, ks, values, offsets[q], offsets[q + 1], 1, a);
                else
                    column_steps(panel, ks, values, offsets[q], offsets[q + 1], 0, a);
                for (int r = 0; r < PANEL; r++)
                    out[r][j] = a[r / VW][r % VW];
            }
            for (int64_t r = 0; r < rows; r++)
                memcpy(y + (g * M + p * PANEL + r) * N + n0, out[r], cols * sizeof(float));
        }
    }
    fesetenv(&env);
}

/* Lookup: out[i] = table[codes[i]] for i in [0, n), with elements of `size` bytes (2 or 4). Workers claim
 * LOOKUP_CHUNK codes at a time. Each block of 16 codes is looked up before any of it is stored: the compiler
 * cannot know that `out` aliases neither table nor codes, and a store between every two lookups of a plain
 * loop costs about twice the time per code. */
#define LOOKUP_CHUNK (1 << 15)
#define LOOKUP_BLOCK 16
#define GATHER(T)                                                                                                  \
    do {                                                                                                           \
        const T *t = table;                                                                                        \
        T *o = out, block[LOOKUP_BLOCK];                                                                           \
        int64_t i = i0;                                                                                            \
        for (; i + LOOKUP_BLOCK <= i1; i += LOOKUP_BLOCK) {                                                        \
            for (int j = 0; j < LOOKUP_BLOCK; j++)                                                                 \
                block[j] = t[codes[i + j]];                                                                        \
            memcpy(o + i, block, sizeof block);                                                                    \
        }                                                                                                          \
        for (; i < i1; i++)                                                                                        \
            o[i] = t[codes[i]];                                                                                    \
    } while (0)

void edgenum_lookup16(const uint16_t *codes, int64_t n, const void *table, int32_t size, void *out, int64_t *next)
{
    int64_t i0 = 0, i1 = 0;
    while (claim(next, LOOKUP_CHUNK, n, &i0, &i1)) {
        if (size == 2)
            GATHER(uint16_t);
        else
            GATHER(uint32_t);
    }
}

/* floor(num / den) for 0 <= num, 0 < den, num + den < 2^63 and a quotient below 2^20, given inv = 1.0 / den:
 * num * inv has a relative error of at most 3 * 2^-53, under 2^-30 for such a quotient, so truncating it
 * lands at most one away from the true floor, and one integer step each way makes it exact. */
static inline int64_t small_quotient(int64_t num, int64_t den, double inv)
{
    int64_t q = (int64_t)((double)num * inv);
    q -= q * den > num;
    q += (q + 1) * den <= num;
    return q;
}

/* small_quotient on n pairs, for the tests. */
void edgenum_small_quotients(int64_t n, const int64_t *num, const int64_t *den, int64_t *out)
{
    for (int64_t i = 0; i < n; i++)
        out[i] = small_quotient(num[i], den[i], 1.0 / (double)den[i]);
}

/* UCLM softmax codes (docs/hardware/hastily.md, section 2.4, er_mode "one"), row by row: x is (rows, length)
 * float64 logits; a row with NaN or +inf sets *bad and is left (the caller then takes the path that reports
 * it). Per row: top = max; a row whose top is -inf gets zero codes. Else per
 * entry: t = clamp(floor((x - top) * c), -2^62, 2^62) (step 1; c = scale * log2(e) * 2^F, computed by the
 * caller), n = t >> F, d = (t mod 2^F) >> (F - k), M = lut[d] << (P - 1 - lut_frac_bits), e = M >> -n if
 * -n < P else 0 (step 2), S = the row's sum of e (step 3, exact) and the code floor((2 Q e + S) / (2 S)),
 * or floor(Q e / S) (step 4). The caller ensures no int64 product can overflow. Workers claim rows. */
void edgenum_uclm_softmax(int64_t rows, int64_t length, const double *x, double c, const int64_t *lut,
                          int32_t frac_bits, int32_t index_bits, int32_t lut_frac_bits, int32_t exp_bits,
                          int64_t out_max, int32_t half_up, int64_t *codes, int64_t *bad, int64_t *next)
{
    fenv_t env = default_rounding();
    const double limit = 4611686018427387904.0; /* 2^62 */
    int64_t f_mask = ((int64_t)1 << frac_bits) - 1, lift = exp_bits - 1 - lut_frac_bits;
    int64_t r = 0, r_end = 0;
    while (claim(next, 1, rows, &r, &r_end)) {
        const double *xr = x + r * length;
        int64_t *out = codes + r * length;
        double top = -INFINITY;
        int valid = 1;
        for (int64_t j = 0; j < length; j++) {
            valid &= xr[j] < INFINITY; /* false for +inf and NaN */
            top = xr[j] > top ? xr[j] : top;
        }
        if (!valid) {
            __atomic_store_n(bad, 1, __ATOMIC_RELAXED);
            continue;
        }
        if (top == -INFINITY) {
            memset(out, 0, length * sizeof *out);
            continue;
        }
        int64_t total = 0;
        for (int64_t j = 0; j < length; j++) {
            double v = floor((xr[j] - top) * c);
            v = v < -limit ? -limit : (v > limit ? limit : v);
            int64_t t = (int64_t)v, n = t >> frac_bits;
            int64_t m = lut[(t & f_mask) >> (frac_bits - index_bits)] << lift;
            int64_t e = -n < exp_bits ? m >> -n : 0; /* n <= 0: the row maximum has t = 0 */
            out[j] = e;
            total += e;
        }
        int64_t den = half_up ? 2 * total : total;
        double inv = 1.0 / (double)den; /* one division per row, not per entry: it would cost more than the rest */
        for (int64_t j = 0; j < length; j++)
            out[j] = small_quotient(half_up ? 2 * out_max * out[j] + total : out_max * out[j], den, inv);
    }
    fesetenv(&env);
}

/* SoftEx's denominator with one accumulator (docs/hardware/softex.md, section 3.2), row by row: d = fl(d * f_k),
 * then d = fl(d + s_k), for k = 0 .. beats-1 from d0; f and s are (rows, beats). Workers claim rows. */
void edgenum_mul_add_scan(int64_t rows, int64_t beats, const float *d0, const float *f, const float *s, float *d,
                          int64_t *next)
{
    fenv_t env = default_rounding();
    int64_t chunk = rows_per_claim(beats), r0 = 0, r1 = 0;
    while (claim(next, chunk, rows, &r0, &r1)) {
        for (int64_t r = r0; r < r1; r++) {
            float acc = d0[r];
            for (int64_t k = 0; k < beats; k++) {
                acc = acc * f[r * beats + k];
                acc = acc + s[r * beats + k];
            }
            d[r] = acc;
        }
    }
    fesetenv(&env);
}

/* SoftEx's softmax with one accumulator (docs/hardware/softex.md, section 3), row by row: what numerics/softex.py's
 * accumulate, finalize and normalize compute in torch, in two passes over the row. x and y are (rows, length)
 * bfloat16 codes, table the float32 expp of every code, lanes the beat width V (1..64; a last partial beat is
 * padded with -Inf). bfloat16 arithmetic is torch's: the FP32 result rounded to nearest even (to_bf16). A row
 * holding NaN or +Inf gives the canonical NaN everywhere; an all -Inf row gives +0. Workers claim rows. */
static inline float bf16_value(uint16_t code)
{
    uint32_t u = (uint32_t)code << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline uint16_t to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return f != f ? 0x7FC0 : (uint16_t)((u + 0x7FFF + ((u >> 16) & 1)) >> 16);
}

/* The adder tree (section 3.1 step 4): tree(first ceil(n/2)) + tree(last floor(n/2)), in FP32. */
static float adder_tree(float *e, int32_t n)
{
    if (n & (n - 1)) {
        int32_t half = (n + 1) / 2;
        return adder_tree(e, half) + adder_tree(e + half, n - half);
    }
    for (; n > 1; n /= 2) /* a power of two: the halves pair adjacent lanes, level by level */
        for (int32_t i = 0; i < n / 2; i++)
            e[i] = e[2 * i] + e[2 * i + 1];
    return e[0];
}

/* The seed (section 3.3 step 1), then two Newton-Raphson steps x = fl(x * fma(-d, x, 2)) (step 2). */
static inline float softex_reciprocal(float d)
{
    uint32_t u;
    memcpy(&u, &d, sizeof u);
    int64_t e = (u >> 23) & 0xFF, m7 = (u >> 16) & 0x7F, n = 127 - m7;
    uint32_t seed = m7 == 0 ? (uint32_t)((254 - e) << 23) : (uint32_t)(((253 - e) << 23) | (((n * (n >> 1)) >> 6) << 16));
    float x;
    memcpy(&x, &seed, sizeof x);
    for (int i = 0; i < 2; i++)
        x = x * fmaf(-d, x, 2.0f);
    return x;
}

void edgenum_softex_softmax(int64_t rows, int64_t length, int32_t lanes, const uint16_t *x, const float *table,
                            uint16_t *y, int64_t *next)
{
    fenv_t env = default_rounding();
    int64_t chunk = rows_per_claim(length), r0 = 0, r1 = 0;
    float e[64];
    while (claim(next, chunk, rows, &r0, &r1)) {
        for (int64_t r = r0; r < r1; r++) {
            const uint16_t *xr = x + r * length;
            uint16_t *yr = y + r * length;
            float m = -INFINITY, d = 0.0f; /* the running max M (a bfloat16 value) and the denominator D */
            int bad = 0;
            for (int64_t k = 0; k < length; k += lanes) {
                int32_t n = length - k < lanes ? (int32_t)(length - k) : lanes;
                float top = -INFINITY;
                for (int32_t i = 0; i < n; i++) {
                    float v = bf16_value(xr[k + i]);
                    bad |= v != v || v == INFINITY;
                    top = v > top ? v : top;
                }
                float before = m;
                m = top > m ? top : m;
                float factor = m > before ? table[to_bf16(before - m)] : 1.0f; /* expp(-Inf) = 0 on the first beat */
                float shift = m == -INFINITY ? 0.0f : m; /* leading all -Inf beats: their lanes give expp(-Inf) */
                for (int32_t i = 0; i < lanes; i++)
                    e[i] = table[to_bf16((i < n ? bf16_value(xr[k + i]) : -INFINITY) - shift)];
                d = d * factor;
                d = d + adder_tree(e, lanes);
            }
            if (bad) {
                for (int64_t j = 0; j < length; j++)
                    yr[j] = 0x7FC0;
                continue;
            }
            float shift = m == -INFINITY ? 0.0f : m;
            float rcp = m == -INFINITY ? 0.0f : bf16_value(to_bf16(softex_reciprocal(d))); /* bf16(X) */
            for (int64_t j = 0; j < length; j++)
                yr[j] = to_bf16(table[to_bf16(bf16_value(xr[j]) - shift)] * rcp);
        }
    }
    fesetenv(&env);
}

/* Bit counts for a crossbar product's clipping candidates (docs/hardware/atleus.md, section 2.3): codes is
 * (groups, rows) uint8 with rows <= 255; counts[g*bits + t] = how many of group g's codes have bit t set, for
 * t < bits <= 8. The multiply moves bit t of a code to the lowest bit of byte 7 - t, so that one add per code
 * counts all eight bits (a byte cannot carry into the next below 256 codes). Workers claim groups. */
void edgenum_bit_counts(int64_t groups, int64_t rows, int32_t bits, const uint8_t *codes, int64_t *counts,
                        int64_t *next)
{
    int64_t chunk = rows_per_claim(rows), g0 = 0, g1 = 0;
    while (claim(next, chunk, groups, &g0, &g1)) {
        for (int64_t g = g0; g < g1; g++) {
            const uint8_t *c = codes + g * rows;
            uint64_t lanes = 0;
            for (int64_t r = 0; r < rows; r++)
                lanes += ((c[r] * 0x8040201008040201ULL) & 0x8080808080808080ULL) >> 7;
            for (int t = 0; t < bits; t++)
                counts[g * bits + t] = (int64_t)((lanes >> (8 * (7 - t))) & 255);
        }
    }
}

/* One row's codes into out and its scale into *scale; 0 (and nothing written) where the row holds NaN or Inf. */
static inline int row_codes(const float *xr, int64_t length, double q_m, float *out, double *scale)
{
    float a = 0.0f;
    int finite = 1;
    for (int64_t j = 0; j < length; j++) {
        float v = fabsf(xr[j]);
        finite &= v <= 3.4028234663852886e38f; /* false for Inf and NaN */
        a = v > a ? v : a;
    }
    if (!finite)
        return 0;
    double s = a > 0.0f ? (double)a / q_m : 1.0;
    *scale = s;
    for (int64_t j = 0; j < length; j++) {
        double q = nearbyint((double)xr[j] / s);
        out[j] = (float)(q < -q_m ? -q_m : (q > q_m ? q_m : q));
    }
    return 1;
}

/* Input codes of a crossbar Linear (docs/hardware/hastily.md, section 2.2; atleus.md, section 2.1 step 4), row
 * by row: x is (rows, length) float32; a = max |x| (float32, then double), s = a / q_m (1 for a zero row) and
 * code = clamp(round_half_even((double)x / s), -q_m, q_m), stored as float32 (exact for up to 16 bits). A row
 * with NaN or Inf sets *bad and is left: the caller then takes the path that reports it. Workers claim
 * ROW_CHUNK_ELEMENTS worth of rows at a time. */
void edgenum_input_codes(int64_t rows, int64_t length, const float *x, double q_m, float *codes, double *scales,
                         int64_t *bad, int64_t *next)
{
    fenv_t env = default_rounding();
    int64_t chunk = rows_per_claim(length), r0 = 0, r1 = 0;
    while (claim(next, chunk, rows, &r0, &r1))
        for (int64_t r = r0; r < r1; r++)
            if (!row_codes(x + r * length, length, q_m, codes + r * length, scales + r))
                __atomic_store_n(bad, 1, __ATOMIC_RELAXED);
    fesetenv(&env);
}

/* A whole small crossbar Linear none of whose conversions can clip, with one scale per column (hastily.md,
 * section 2.2): per row of x (rows, k), its codes as edgenum_input_codes makes them, their exact product with the
 * weight codes w (k, n, float32; every partial sum below 2^24, so float32 adds exactly in any order, k <= 1024),
 * then out = float32((P * c[j]) * s) (+ bias[j] in float32), as edgenum_scale_blocks rounds one block. A row with
 * NaN or Inf sets *bad. Workers claim rows. */
void edgenum_crossbar_linear(int64_t rows, int64_t k, int64_t n, const float *x, double q_m, const float *w,
                             const double *c, const float *bias, float *out, int64_t *bad, int64_t *next)
{
    fenv_t env = default_rounding();
    int64_t chunk = rows_per_claim(k * n), r0 = 0, r1 = 0;
    float codes[1024], acc[256];
    double s;
    while (claim(next, chunk, rows, &r0, &r1)) {
        for (int64_t r = r0; r < r1; r++) {
            if (!row_codes(x + r * k, k, q_m, codes, &s)) {
                __atomic_store_n(bad, 1, __ATOMIC_RELAXED);
                continue;
            }
            for (int64_t j0 = 0; j0 < n; j0 += 256) {
                int64_t width = n - j0 < 256 ? n - j0 : 256;
                for (int64_t j = 0; j < width; j++)
                    acc[j] = 0.0f;
                for (int64_t i = 0; i < k; i++) {
                    const float *wi = w + i * n + j0;
                    float q = codes[i];
                    for (int64_t j = 0; j < width; j++)
                        acc[j] = acc[j] + q * wi[j];
                }
                for (int64_t j = 0; j < width; j++) {
                    float v = (float)((double)acc[j] * c[j0 + j] * s);
                    out[r * n + j0 + j] = bias ? v + bias[j0 + j] : v;
                }
            }
        }
    }
    fesetenv(&env);
}

/* A crossbar Linear's digital tail (hastily.md, section 2.2; atleus.md, section 2.1 step 6): out[m, j] =
 * float32((sum over p, in increasing p, of c[p, j] * parts[p, m, j]) * s[m]), the products and the sum in double,
 * each rounded once; parts holds `blocks` pointers to (rows, n) arrays of float32 (is_double = 0) or double.
 * A bias (n floats, or NULL) is then added in float32. Workers claim rows. */
void edgenum_scale_blocks(int64_t blocks, int64_t rows, int64_t n, const void *const *parts, int32_t is_double,
                          const double *c, const double *s, const float *bias, float *out, int64_t *next)
{
    fenv_t env = default_rounding();
    int64_t chunk = rows_per_claim(n * blocks), r0 = 0, r1 = 0;
    double acc[256]; /* a row's sums, 256 columns at a time: the inner loops run along contiguous columns */
    while (claim(next, chunk, rows, &r0, &r1)) {
        for (int64_t r = r0; r < r1; r++) {
            for (int64_t j0 = 0; j0 < n; j0 += 256) {
                int64_t width = n - j0 < 256 ? n - j0 : 256;
                for (int64_t p = 0; p < blocks; p++) {
                    const double *cp = c + p * n + j0;
                    const float *pf = parts[p];
                    const double *pd = parts[p];
                    int64_t at = r * n + j0;
                    if (is_double)
                        for (int64_t j = 0; j < width; j++)
                            acc[j] = p ? acc[j] + pd[at + j] * cp[j] : pd[at + j] * cp[j];
                    else
                        for (int64_t j = 0; j < width; j++)
                            acc[j] = p ? acc[j] + (double)pf[at + j] * cp[j] : (double)pf[at + j] * cp[j];
                }
                for (int64_t j = 0; j < width; j++) {
                    float v = (float)(acc[j] * s[r]);
                    out[r * n + j0 + j] = bias ? v + bias[j0 + j] : v;
                }
            }
        }
    }
    fesetenv(&env);
}
