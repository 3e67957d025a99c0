/* edgenum's compiled CPU kernels, built at first use by numerics/kernels.py (which says why each exists):
 * FlexiSAGA's PE-order float32 GEMM, the lookup of a bfloat16 code's tabulated result, HASTILY's UCLM
 * softmax, and a crossbar Linear's input codes and scaled block sum. Each exported worker may run on
 * several threads at once, which claim pieces of the work from a shared counter (claim below).
 *
 * PE-order GEMM (docs/hardware/flexisaga.md, section 2.2): y[g] = x[g] . w[g] with x (G, M, K),
 * w (G, K, N) and y (G, M, N), contiguous float32. A weight is stored unless its bits are those of +0
 * (the zero the decompression unit injects). Column block
 * q = g*nb + b holds columns 16b .. 16b+15 of group g; its steps are the k where it stores any weight,
 * increasing. Each output starts at +0 and, step by step, adds the product:
 * acc = fl(acc + fl(x*w)), or fl(acc + x*w) with one rounding when fused. A step listed as ~k (negative)
 * must leave acc unchanged where the weight is not stored; at every other step adding that product,
 * x*(+0), is exact: acc is never -0 without a fused MAC, and x is finite.
 *
 * Bit-exactness rests on C's evaluation rules: compile with -ffp-contract=off and without -ffast-math,
 * so that every + and * rounds once, in the order written. The floating-point environment is reset to
 * the default (round to nearest even, subnormals kept) for the duration of a call.
 */
#include <fenv.h>
#include <sched.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define MB 4     /* output rows per tile: 4 x 16 accumulators, 8 of 16 AVX registers (measured: 6 and 8 are slower) */
#define NB 16    /* output columns per tile and per column block */
#define CHUNK 4  /* tiles claimed at a time: small, so that a busy core holds little work back */

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

typedef float v8 __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));

static inline v8 load8(const float *p)
{
    v8 v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline v8 mac8(v8 acc, float x, v8 w, int fused)
{
    if (!fused)
        return acc + x * w;
    v8 r;
    for (int c = 0; c < 8; c++)
        r[c] = fmaf(x, w[c], acc[c]);
    return r;
}

/* new where the weight w is stored (its bits are not all zero), old elsewhere */
static inline v8 keep_stored(v8 old, v8 new, v8 w)
{
    v8i m = (v8i)w != (v8i){0};
    return (v8)(((v8i)new & m) | ((v8i)old & ~m));
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

/* A full tile: MB rows of x from x0 (row stride ldx) by NB columns. The plain steps run in a tight loop
 * that keeps the 2·MB accumulator vectors in registers; a masked step blends its sums with the old ones. */
static inline __attribute__((always_inline)) void tile16(const float *x0, int64_t ldx, const float *w, int64_t n,
                                                         const int32_t *steps, int64_t ns, int fused, float *y)
{
    v8 a[MB][2];
    for (int r = 0; r < MB; r++)
        a[r][0] = a[r][1] = (v8){0};
    int64_t s = 0;
    for (;;) {
        for (; s < ns && steps[s] >= 0; s++) {
            int64_t k = steps[s];
            v8 w0 = load8(w + k * n), w1 = load8(w + k * n + 8);
            for (int r = 0; r < MB; r++) {
                float xv = x0[r * ldx + k];
                a[r][0] = mac8(a[r][0], xv, w0, fused);
                a[r][1] = mac8(a[r][1], xv, w1, fused);
            }
        }
        if (s == ns)
            break;
        int64_t k = ~steps[s++];
        v8 w0 = load8(w + k * n), w1 = load8(w + k * n + 8);
        for (int r = 0; r < MB; r++) {
            float xv = x0[r * ldx + k];
            a[r][0] = keep_stored(a[r][0], mac8(a[r][0], xv, w0, fused), w0);
            a[r][1] = keep_stored(a[r][1], mac8(a[r][1], xv, w1, fused), w1);
        }
    }
    for (int r = 0; r < MB; r++) {
        memcpy(y + r * n, &a[r][0], sizeof(v8));
        memcpy(y + r * n + 8, &a[r][1], sizeof(v8));
    }
}

/* An edge tile (rows < MB or cols < NB), element by element. */
static void tile_edge(const float *x0, int64_t ldx, const float *w, int64_t n, const int32_t *steps, int64_t ns,
                      int fused, float *y, int rows, int cols)
{
    float a[MB][NB] = {{0}};
    for (int64_t s = 0; s < ns; s++) {
        int32_t e = steps[s];
        int64_t k = e < 0 ? ~e : e;
        for (int r = 0; r < rows; r++) {
            float xv = x0[r * ldx + k];
            for (int c = 0; c < cols; c++) {
                if (e < 0 && !stored(w + k * n + c))
                    continue;
                a[r][c] = fused ? fmaf(xv, w[k * n + c], a[r][c]) : a[r][c] + xv * w[k * n + c];
            }
        }
    }
    for (int r = 0; r < rows; r++)
        memcpy(y + r * n, a[r], cols * sizeof(float));
}

/* Lists the steps of every column block q = g*nb + b into steps[q*K ..] and their number into counts[q].
 * finite is K bytes of scratch. Single-threaded, before the workers: it reads the weights once, row by
 * row in memory order, and no worker ever waits on another's share of it (on a busy core that share
 * could be held back for a whole time slice). */
void edgenum_pe_plan(int64_t G, int64_t M, int64_t K, int64_t N, const float *x, const float *w, int32_t fused,
                     int32_t *steps, int64_t *counts, uint8_t *finite)
{
    int64_t nb = (N + NB - 1) / NB;
    for (int64_t g = 0; g < G; g++) {
        int have_finite = 0;
        for (int64_t b = 0; b < nb; b++)
            counts[g * nb + b] = 0;
        for (int64_t k = 0; k < K; k++) {
            const float *wk = w + (g * K + k) * N;
            for (int64_t b = 0; b < nb; b++) {
                int64_t n0 = b * NB, cols = N - n0 < NB ? N - n0 : NB, q = g * nb + b;
                int count = cols == NB ? stored16(wk + n0) : 0;
                for (int64_t j = 0; cols < NB && j < cols; j++)
                    count += stored(wk + n0 + j);
                if (count == 0)
                    continue;
                int masked = count < cols && fused;
                if (count < cols && !fused) {
                    if (!have_finite) { /* whether each column of x[g] is finite, once per group */
                        memset(finite, 1, K);
                        for (int64_t m = 0; m < M; m++)
                            for (int64_t i = 0; i < K; i++)
                                finite[i] &= isfinite(x[(g * M + m) * K + i]) != 0;
                        have_finite = 1;
                    }
                    masked = !finite[k];
                }
                steps[q * K + counts[q]++] = masked ? ~(int32_t)k : (int32_t)k;
            }
        }
    }
}

/* One worker: claims tiles (CHUNK at a time) from *next until none is left; each output is written by
 * the one worker that claimed its tile. */
void edgenum_pe_gemm_f32(int64_t G, int64_t M, int64_t K, int64_t N, const float *x, const float *w, int32_t fused,
                         const int32_t *steps, const int64_t *counts, float *y, int64_t *next)
{
    fenv_t env;
    fegetenv(&env);
    fesetenv(FE_DFL_ENV);
    int64_t nb = (N + NB - 1) / NB, mb = (M + MB - 1) / MB, t0 = 0, t1 = 0;
    while (claim(next, CHUNK, G * nb * mb, &t0, &t1)) {
        for (int64_t t = t0; t < t1; t++) {
            int64_t i = t % mb, q = t / mb; /* tiles of one column block are consecutive: its weights stay cached */
            int64_t g = q / nb, m0 = i * MB, n0 = q % nb * NB;
            int rows = M - m0 < MB ? (int)(M - m0) : MB;
            int cols = N - n0 < NB ? (int)(N - n0) : NB;
            const float *xb = x + (g * M + m0) * K, *wb = w + g * K * N + n0;
            const int32_t *sl = steps + q * K;
            int64_t ns = counts[q];
            float *yb = y + (g * M + m0) * N + n0;
            if (rows < MB || cols < NB)
                tile_edge(xb, K, wb, N, sl, ns, fused, yb, rows, cols);
            else if (fused)
                tile16(xb, K, wb, N, sl, ns, 1, yb);
            else
                tile16(xb, K, wb, N, sl, ns, 0, yb);
        }
    }
    fesetenv(&env);
}

/* Lookup: out[i] = table[codes[i]] for i in [0, n), with elements of `size` bytes (2 or 4). Workers claim
 * LOOKUP_CHUNK codes at a time. */
#define LOOKUP_CHUNK (1 << 15)

void edgenum_lookup16(const uint16_t *codes, int64_t n, const void *table, int32_t size, void *out, int64_t *next)
{
    int64_t i0 = 0, i1 = 0;
    while (claim(next, LOOKUP_CHUNK, n, &i0, &i1)) {
        if (size == 2) {
            const uint16_t *t = table;
            uint16_t *o = out;
            for (int64_t i = i0; i < i1; i++)
                o[i] = t[codes[i]];
        } else {
            const uint32_t *t = table;
            uint32_t *o = out;
            for (int64_t i = i0; i < i1; i++)
                o[i] = t[codes[i]];
        }
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
 * float64 logits without NaN or +inf. Per row: top = max; a row whose top is -inf gets zero codes. Else per
 * entry: t = clamp(floor((x - top) * c), -2^62, 2^62) (step 1; c = scale * log2(e) * 2^F, computed by the
 * caller), n = t >> F, d = (t mod 2^F) >> (F - k), M = lut[d] << (P - 1 - lut_frac_bits), e = M >> -n if
 * -n < P else 0 (step 2), S = the row's sum of e (step 3, exact) and the code floor((2 Q e + S) / (2 S)),
 * or floor(Q e / S) (step 4). The caller ensures no int64 product can overflow. Workers claim rows. */
void edgenum_uclm_softmax(int64_t rows, int64_t length, const double *x, double c, const int64_t *lut,
                          int32_t frac_bits, int32_t index_bits, int32_t lut_frac_bits, int32_t exp_bits,
                          int64_t out_max, int32_t half_up, int64_t *codes, int64_t *next)
{
    fenv_t env;
    fegetenv(&env);
    fesetenv(FE_DFL_ENV);
    const double limit = 4611686018427387904.0; /* 2^62 */
    int64_t f_mask = ((int64_t)1 << frac_bits) - 1, lift = exp_bits - 1 - lut_frac_bits;
    int64_t r = 0, r_end = 0;
    while (claim(next, 1, rows, &r, &r_end)) {
        const double *xr = x + r * length;
        int64_t *out = codes + r * length;
        double top = -INFINITY;
        for (int64_t j = 0; j < length; j++)
            top = xr[j] > top ? xr[j] : top;
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

/* Input codes of a crossbar Linear (docs/hardware/hastily.md, section 2.2; atleus.md, section 2.1 step 4), row
 * by row: x is (rows, length) float32; a = max |x| (float32, then double), s = a / q_m (1 for a zero row) and
 * code = clamp(round_half_even((double)x / s), -q_m, q_m), stored as float32 (exact for up to 16 bits). A row
 * with NaN or Inf sets *bad and is left: the caller then takes the path that reports it. Workers claim
 * ROW_CHUNK_ELEMENTS worth of rows at a time. */
#define ROW_CHUNK_ELEMENTS (1 << 15)

/* Rows claimed at a time when each row holds `per_row` elements: about ROW_CHUNK_ELEMENTS, at least one. */
static inline int64_t rows_per_claim(int64_t per_row)
{
    return per_row > 0 && per_row < ROW_CHUNK_ELEMENTS ? ROW_CHUNK_ELEMENTS / per_row : 1;
}

void edgenum_input_codes(int64_t rows, int64_t length, const float *x, double q_m, float *codes, double *scales,
                         int64_t *bad, int64_t *next)
{
    fenv_t env;
    fegetenv(&env);
    fesetenv(FE_DFL_ENV);
    int64_t chunk = rows_per_claim(length), r0 = 0, r1 = 0;
    while (claim(next, chunk, rows, &r0, &r1)) {
        for (int64_t r = r0; r < r1; r++) {
            const float *xr = x + r * length;
            float *out = codes + r * length;
            float a = 0.0f;
            int finite = 1;
            for (int64_t j = 0; j < length; j++) {
                float v = fabsf(xr[j]);
                finite &= v <= 3.4028234663852886e38f; /* false for Inf and NaN */
                a = v > a ? v : a;
            }
            if (!finite) {
                __atomic_store_n(bad, 1, __ATOMIC_RELAXED);
                continue;
            }
            double s = a > 0.0f ? (double)a / q_m : 1.0;
            scales[r] = s;
            for (int64_t j = 0; j < length; j++) {
                double q = nearbyint((double)xr[j] / s);
                out[j] = (float)(q < -q_m ? -q_m : (q > q_m ? q_m : q));
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
    fenv_t env;
    fegetenv(&env);
    fesetenv(FE_DFL_ENV);
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
