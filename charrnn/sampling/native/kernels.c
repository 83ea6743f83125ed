/* Native kernels for sampling: the one-stream LSTM step, the LSTM cell, and the exact sampler.
 *
 * Built on first use by charrnn/native.py (cc -O3 -march=native -fopenmp) and loaded with ctypes;
 * without a C compiler charrnn uses the torch path instead. Plain C: AVX-512 (bf16 dot products
 * where the CPU has them) when the compiler targets it, loops that vectorise elsewhere.
 *
 * Weights are packed for matrix-vector products in blocks of 16 rows so that one vector load
 * holds one column (fp32) or one column pair (bf16) of 16 rows and no horizontal sums are needed:
 *   fp32: [R/16][K][16]        bf16: [R/16][K/2][16][2]
 * R is padded to a multiple of 16 and K to a multiple of 8, with zeros.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

/* ---------------------------------------------------------------- random numbers */

static inline uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* A uniform number in [0, 1) that depends only on (seed, stream index, step): sample i of a seed
 * is the same text whatever the number of samples, and Python computes the same numbers. */
double charrnn_uniform(uint64_t seed, uint64_t index, uint64_t step) {
    uint64_t z = mix64(seed + 0x9E3779B97F4A7C15ULL);
    z = mix64(z ^ (index * 0xD1B54A32D192ED03ULL));
    z = mix64(z + step * 0x9E3779B97F4A7C15ULL);
    return (double)(z >> 11) * 0x1.0p-53;
}

/* ---------------------------------------------------------------- the sampler */

typedef struct {
    double temperature; /* 0: greedy */
    double top_p;       /* 1: off */
    int32_t top_k;     /* 0: off */
    int32_t nbanned;
    const int64_t *banned;
    uint64_t seed;
    int64_t step;  /* advanced by one per token drawn */
    int64_t index; /* stream index of row 0 */
} Sampler;

typedef struct {
    float v;
    int32_t i;
} Pair;

static int by_value_desc(const void *a, const void *b) {
    const Pair *x = a, *y = b;
    if (x->v != y->v) return x->v > y->v ? -1 : 1;
    return x->i - y->i;
}

/* k-th largest of z[0..n) (k >= 1); reorders z. */
static float kth_largest(float *z, int n, int k) {
    int lo = 0, hi = n - 1, want = k - 1;
    while (lo < hi) {
        float pivot = z[lo + (hi - lo) / 2];
        int i = lo, j = hi;
        while (i <= j) {
            while (z[i] > pivot) i++;
            while (z[j] < pivot) j--;
            if (i <= j) {
                float t = z[i]; z[i] = z[j]; z[j] = t;
                i++; j--;
            }
        }
        if (want <= j) hi = j;
        else if (want >= i) lo = i;
        else return z[want];
    }
    return z[want];
}

/* One token from one row of logits. work: 2*V floats + V Pairs.
 * Temperature scales the logits; top-k keeps the tokens whose scaled logit is at least the k-th
 * largest; top-p keeps, most likely first, the tokens whose preceding mass is below p. The draw
 * inverts the cumulative distribution (in double) with one uniform number: token i is chosen with
 * probability w[i] / sum(w) exactly, and never when w[i] = 0. */
static int64_t sample_row(const float *x, int V, const Sampler *s, int64_t index, float *work) {
    float *z = work, *w = work + V;
    Pair *pairs = (Pair *)(work + 2 * V);
    for (int i = 0; i < V; i++) z[i] = x[i];
    for (int b = 0; b < s->nbanned; b++)
        if (s->banned[b] >= 0 && s->banned[b] < V) z[s->banned[b]] = -INFINITY;
    int best = 0;
    for (int i = 1; i < V; i++)
        if (z[i] > z[best]) best = i;
    if (!(s->temperature > 0)) return best; /* greedy */
    double m = z[best];
    if (m == -INFINITY || m != m) return best;
    /* Shift by the maximum before scaling, and divide (1/T overflows for tiny T): the scaled
     * logits are <= 0, the most likely token's is 0, so any positive temperature gives the right
     * distribution, down to the argmax (its limit) when T is tiny; never inf - inf. */
    for (int i = 0; i < V; i++) z[i] = (float)(((double)z[i] - m) / s->temperature);
    if (s->top_k > 0 && s->top_k < V) {
        memcpy(w, z, sizeof(float) * V);
        float kth = kth_largest(w, V, s->top_k);
        for (int i = 0; i < V; i++)
            if (z[i] < kth) z[i] = -INFINITY;
    }
    double total = 0;
    for (int i = 0; i < V; i++) {
        w[i] = z[i] == -INFINITY ? 0.0f : expf(z[i]);
        total += w[i];
    }
    if (s->top_p < 1.0) {
        int n = 0;
        for (int i = 0; i < V; i++)
            if (w[i] > 0) pairs[n].v = w[i], pairs[n++].i = i;
        qsort(pairs, n, sizeof(Pair), by_value_desc);
        double before = 0, limit = s->top_p * total, kept = 0;
        for (int j = 0; j < n; j++) {
            if (before >= limit) w[pairs[j].i] = 0;
            else kept += pairs[j].v;
            before += pairs[j].v;
        }
        total = kept;
    }
    double target = charrnn_uniform(s->seed, (uint64_t)index, (uint64_t)s->step) * total, acc = 0;
    int last = best;
    for (int i = 0; i < V; i++) {
        if (w[i] <= 0) continue;
        acc += w[i];
        last = i;
        if (target < acc) return i;
    }
    return last; /* rounding put target at the very top: the last kept token */
}

/* Rows b of logits (B, V) with leading dimension ld; stream index s->index + b. */
void charrnn_sample(int B, int V, const float *logits, int ld, const Sampler *s, int64_t *out, float *work) {
    for (int b = 0; b < B; b++) out[b] = sample_row(logits + (size_t)b * ld, V, s, s->index + b, work);
}

/* ---------------------------------------------------------------- the LSTM cell */

/* exp to about 2 ulp, written so that the compiler vectorises loops that call it. */
static inline float fexp(float x) {
    x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
    float n = __builtin_floorf(x * 1.44269504088896341f + 0.5f);
    float r = x - n * 0.693359375f + n * 2.12194440e-4f;
    float y = 1.9875691500e-4f;
    y = y * r + 1.3981999507e-3f;
    y = y * r + 8.3334519073e-3f;
    y = y * r + 4.1665795894e-2f;
    y = y * r + 1.6666665459e-1f;
    y = y * r + 5.0000001201e-1f;
    y = y * r * r + r + 1.0f;
    int32_t e = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &e, 4);
    return y * scale;
}

static inline float fsigmoid(float x) { return 1.0f / (1.0f + fexp(-x)); }
static inline float ftanh(float x) { return 2.0f / (1.0f + fexp(-2.0f * x)) - 1.0f; }

/* gates (H*4, order i f o g) -> new c and h, in place. */
static void lstm_cell_row(int H, const float *restrict g, float *restrict c, float *restrict h) {
    for (int j = 0; j < H; j++) {
        float i = fsigmoid(g[j]), f = fsigmoid(g[H + j]), o = fsigmoid(g[2 * H + j]), gg = ftanh(g[3 * H + j]);
        float cj = f * c[j] + i * gg;
        c[j] = cj;
        h[j] = o * ftanh(cj);
    }
}

/* B rows: gates (B, 4H) ld ldg; c (B, H) ld ldc; h (B, H) ld ldh; h also copied to h2 when given. */
void charrnn_lstm_cell(int B, int H, const float *gates, int ldg, float *c, int ldc, float *h, int ldh, float *h2,
                       int ldh2, int nthreads) {
#pragma omp parallel for num_threads(nthreads) schedule(static) if (B > 1)
    for (int b = 0; b < B; b++) {
        lstm_cell_row(H, gates + (size_t)b * ldg, c + (size_t)b * ldc, h + (size_t)b * ldh);
        if (h2) memcpy(h2 + (size_t)b * ldh2, h + (size_t)b * ldh, sizeof(float) * H);
    }
}

/* ---------------------------------------------------------------- matrix-vector products */

static inline float bf16_to_f32(uint16_t v) {
    uint32_t u = (uint32_t)v << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline uint16_t f32_to_bf16(float f) { /* round to nearest even, as torch does */
    uint32_t u;
    memcpy(&u, &f, 4);
    u += 0x7FFF + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

/* y[blk*16 .. +16] += W_blk x */
static void block_f32(const float *restrict w, int K, const float *restrict x, float *restrict y) {
#if defined(__AVX512F__)
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (int k = 0; k < K; k += 4) {
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w + 16 * k), _mm512_set1_ps(x[k]), a0);
        a1 = _mm512_fmadd_ps(_mm512_loadu_ps(w + 16 * (k + 1)), _mm512_set1_ps(x[k + 1]), a1);
        a2 = _mm512_fmadd_ps(_mm512_loadu_ps(w + 16 * (k + 2)), _mm512_set1_ps(x[k + 2]), a2);
        a3 = _mm512_fmadd_ps(_mm512_loadu_ps(w + 16 * (k + 3)), _mm512_set1_ps(x[k + 3]), a3);
    }
    __m512 s = _mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3));
    _mm512_storeu_ps(y, _mm512_add_ps(s, _mm512_loadu_ps(y)));
#else
    float acc[16] = {0};
    for (int k = 0; k < K; k++)
        for (int r = 0; r < 16; r++) acc[r] += w[16 * k + r] * x[k];
    for (int r = 0; r < 16; r++) y[r] += acc[r];
#endif
}

/* xb: x rounded to bf16 (AVX512-BF16) or x itself as floats (elsewhere). */
static void block_bf16(const uint16_t *restrict w, int K, const void *restrict xb, float *restrict y) {
#if defined(__AVX512BF16__)
    const uint32_t *xp = xb;
    const __m512i *wv = (const __m512i *)w;
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (int p = 0; p < K / 2; p += 4) {
        a0 = _mm512_dpbf16_ps(a0, (__m512bh)_mm512_loadu_si512(wv + p), (__m512bh)_mm512_set1_epi32(xp[p]));
        a1 = _mm512_dpbf16_ps(a1, (__m512bh)_mm512_loadu_si512(wv + p + 1), (__m512bh)_mm512_set1_epi32(xp[p + 1]));
        a2 = _mm512_dpbf16_ps(a2, (__m512bh)_mm512_loadu_si512(wv + p + 2), (__m512bh)_mm512_set1_epi32(xp[p + 2]));
        a3 = _mm512_dpbf16_ps(a3, (__m512bh)_mm512_loadu_si512(wv + p + 3), (__m512bh)_mm512_set1_epi32(xp[p + 3]));
    }
    __m512 s = _mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3));
    _mm512_storeu_ps(y, _mm512_add_ps(s, _mm512_loadu_ps(y)));
#else
    const float *x = xb;
    float acc[16] = {0};
    for (int p = 0; p < K / 2; p++)
        for (int r = 0; r < 16; r++)
            acc[r] += bf16_to_f32(w[32 * p + 2 * r]) * x[2 * p] + bf16_to_f32(w[32 * p + 2 * r + 1]) * x[2 * p + 1];
    for (int r = 0; r < 16; r++) y[r] += acc[r];
#endif
}

/* y (R padded) += W x, W packed (see the top of this file). scratch: K floats. */
static void gemv(const void *w, int bf16, int R, int K, const float *x, float *y, void *scratch, int nthreads) {
    int blocks = R / 16;
    if (bf16) {
#if defined(__AVX512BF16__)
        uint16_t *xb = scratch;
        for (int k = 0; k < K; k++) xb[k] = f32_to_bf16(x[k]);
#else
        const float *xb = x;
#endif
#pragma omp parallel for num_threads(nthreads) schedule(static) if (blocks >= 16)
        for (int b = 0; b < blocks; b++) block_bf16((const uint16_t *)w + (size_t)b * 16 * K, K, xb, y + 16 * b);
    } else {
#pragma omp parallel for num_threads(nthreads) schedule(static) if (blocks >= 16)
        for (int b = 0; b < blocks; b++) block_f32((const float *)w + (size_t)b * 16 * K, K, x, y + 16 * b);
    }
    (void)scratch;
}

/* ---------------------------------------------------------------- batched products */

#if defined(__AMX_TILE__) && defined(__AMX_BF16__) && defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#define HAVE_AMX 1

typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} TileConfig;

/* Linux hands out the AMX tile registers per process on request. */
int charrnn_amx_init(void) { return syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XTILEDATA */) == 0; }

/* y (Bp, R) fp32 += a (Bp, K) bf16 @ W.T with AMX tiles: 16 streams x 16 rows per accumulator,
 * 32 columns per step; W's bf16 packing is the tile layout. Bp % 16 == 0, K % 32 == 0. */
static void gemm_amx(const uint16_t *w, int R, int K, const uint16_t *a, int Bp, float *y, int nthreads) {
    int blocks = R / 16, groups = Bp / 16;
#pragma omp parallel num_threads(nthreads)
    {
        TileConfig cfg = {0};
        cfg.palette = 1;
        for (int t = 0; t < 8; t++) cfg.rows[t] = 16, cfg.colsb[t] = 64;
        _tile_loadconfig(&cfg);
#pragma omp for schedule(static)
        for (int b = 0; b < blocks; b++) {
            const uint16_t *wb = w + (size_t)b * 16 * K;
            for (int g = 0; g < groups; g += 2) {
                int two = g + 1 < groups;
                float *y0 = y + (size_t)g * 16 * R + b * 16, *y1 = y0 + (size_t)16 * R;
                const uint16_t *a0 = a + (size_t)g * 16 * K, *a1 = a0 + (size_t)16 * K;
                _tile_loadd(0, y0, R * 4);
                if (two) _tile_loadd(1, y1, R * 4);
                for (int k = 0; k < K; k += 32) {
                    _tile_loadd(4, wb + (size_t)k * 16, 64);
                    _tile_loadd(2, a0 + k, K * 2);
                    _tile_dpbf16ps(0, 2, 4);
                    if (two) {
                        _tile_loadd(3, a1 + k, K * 2);
                        _tile_dpbf16ps(1, 3, 4);
                    }
                }
                _tile_stored(0, y0, R * 4);
                if (two) _tile_stored(1, y1, R * 4);
            }
        }
        _tile_release();
    }
}
#else
int charrnn_amx_init(void) { return 0; }
#endif

/* y (Bp, R) += x (Bp, K, ld ldx) @ W.T for fp32 W packed; Bp % 8 == 0. Each weight column is
 * loaded once per 8 streams. */
static void gemm_f32(const float *w, int R, int K, const float *x, int ldx, int Bp, float *y, int nthreads) {
    int blocks = R / 16;
#pragma omp parallel for num_threads(nthreads) schedule(static) if (Bp * blocks >= 64)
    for (int b = 0; b < blocks; b++) {
        const float *wb = w + (size_t)b * 16 * K;
        for (int s0 = 0; s0 < Bp; s0 += 8) {
            const float *xs = x + (size_t)s0 * ldx;
#if defined(__AVX512F__)
            __m512 acc[8];
            for (int j = 0; j < 8; j++) acc[j] = _mm512_setzero_ps();
            for (int k = 0; k < K; k++) {
                __m512 wv = _mm512_loadu_ps(wb + 16 * k);
                for (int j = 0; j < 8; j++) acc[j] = _mm512_fmadd_ps(wv, _mm512_set1_ps(xs[(size_t)j * ldx + k]), acc[j]);
            }
            for (int j = 0; j < 8; j++) {
                float *yj = y + (size_t)(s0 + j) * R + b * 16;
                _mm512_storeu_ps(yj, _mm512_add_ps(acc[j], _mm512_loadu_ps(yj)));
            }
#else
            for (int j = 0; j < 8; j++) {
                float acc[16] = {0};
                for (int k = 0; k < K; k++)
                    for (int r = 0; r < 16; r++) acc[r] += wb[16 * k + r] * xs[(size_t)j * ldx + k];
                for (int r = 0; r < 16; r++) y[(size_t)(s0 + j) * R + b * 16 + r] += acc[r];
            }
#endif
        }
    }
}

/* ---------------------------------------------------------------- the LSTM, B streams */

typedef struct {
    int32_t layers, H, V, bf16, nthreads, rows; /* rows: 4H padded to 16 */
    int32_t head_rows;                          /* V padded to 16 */
    int32_t B, Bp;                              /* streams; padded to 16 when B > 1 (AMX tiles) */
    const float *table;                         /* (V, rows): emb @ W_ih0.T + biases, gates i f o g */
    const void **w;                             /* per layer, packed: layer 0 W_hh, then [W_ih | W_hh] */
    const int32_t *K;                           /* per layer: columns, padded to 32 */
    const float **bias;                         /* per layer (rows); layer 0's is in the table */
    const void *head_w;                         /* packed fp32 (head_rows, head_K) */
    const float *head_b;                        /* (head_rows) */
    int32_t head_K;
    float **xh;     /* per layer (Bp, K): [input (layers > 0) | h | zeros] per stream, then 32 spare zeros */
    float **c;      /* per layer (B, H) */
    float *gates;   /* (Bp, rows) */
    float *logits;  /* (Bp, head_rows) */
    void *scratch;  /* Bp * max K floats */
    float *work;    /* 2V floats + V Pairs, for the sampler */
} Net;

static float *h_of(const Net *n, int l, int b) { return n->xh[l] + (size_t)b * n->K[l] + (l == 0 ? 0 : n->H); }

static void products(const Net *n, const void *w, int K, const float *x) {
#if defined(HAVE_AMX)
    if (n->B > 1) { /* Kernel.supports allows several streams only where AMX runs */
        uint16_t *a = n->scratch;
        for (size_t i = 0; i < (size_t)n->Bp * K; i++) a[i] = f32_to_bf16(x[i]);
        gemm_amx(w, n->rows, K, a, n->Bp, n->gates, n->nthreads);
        return;
    }
#endif
    for (int b = 0; b < n->B; b++)
        gemv(w, n->bf16, n->rows, K, x + (size_t)b * K, n->gates + (size_t)b * n->rows, n->scratch, n->nthreads);
}

/* Feed one token per stream; leaves next-token logits in n->logits. */
void charrnn_lstm_step(const Net *n, const int64_t *toks) {
    int H = n->H, R = n->rows;
    for (int l = 0; l < n->layers; l++) {
        for (int b = 0; b < n->B; b++)
            memcpy(n->gates + (size_t)b * R, l == 0 ? n->table + (size_t)toks[b] * R : n->bias[l], sizeof(float) * R);
        products(n, n->w[l], n->K[l], n->xh[l]);
#pragma omp parallel for num_threads(n->nthreads) schedule(static) if (n->B > 1)
        for (int b = 0; b < n->B; b++) {
            lstm_cell_row(H, n->gates + (size_t)b * R, n->c[l] + (size_t)b * H, h_of(n, l, b));
            if (l + 1 < n->layers) memcpy(n->xh[l + 1] + (size_t)b * n->K[l + 1], h_of(n, l, b), sizeof(float) * H);
        }
    }
    for (int b = 0; b < n->B; b++) memcpy(n->logits + (size_t)b * n->head_rows, n->head_b, sizeof(float) * n->head_rows);
    const float *h = h_of(n, n->layers - 1, 0);
    if (n->B == 1) gemv(n->head_w, 0, n->head_rows, n->head_K, h, n->logits, n->scratch, n->nthreads);
    else gemm_f32(n->head_w, n->head_rows, n->head_K, h, n->K[n->layers - 1], n->Bp, n->logits, n->nthreads);
}

/* Draw a token per stream from the current logits, feed them, repeat: out (B, count). */
void charrnn_lstm_generate(const Net *n, Sampler *s, int count, int64_t *out) {
    int64_t toks[n->B];
    for (int t = 0; t < count; t++) {
        for (int b = 0; b < n->B; b++) {
            toks[b] = sample_row(n->logits + (size_t)b * n->head_rows, n->V, s, s->index + b, n->work);
            out[(size_t)b * count + t] = toks[b];
        }
        s->step++;
        charrnn_lstm_step(n, toks);
    }
}
