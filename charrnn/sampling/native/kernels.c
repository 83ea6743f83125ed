/* Native kernels for sampling: the LSTM step for one or many streams, the LSTM cell, and the exact sampler.
 *
 * Built on first use by build.py (cc -O3 -march=native -fopenmp) and loaded with ctypes;
 * without a C compiler charrnn uses the torch path instead. Plain C: AVX-512 (bf16 dot products
 * where the CPU has them) when the compiler targets it, loops that vectorise elsewhere.
 *
 * Weights are packed in blocks of 16 rows so that one vector load holds one column (fp32) or one
 * column pair (bf16) of 16 rows and no horizontal sums are needed (and, in bf16, AMX's tile layout):
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

/* ---------------------------------------------------------------- matrix products, register-tiled */

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

/* A column of 16 rows in fp32: one AVX-512 register, two AVX2 registers, or an array the compiler
 * may vectorise. */
#if defined(__AVX512F__)
typedef __m512 v16;
static inline v16 v16_zero(void) { return _mm512_setzero_ps(); }
static inline v16 v16_load(const float *p) { return _mm512_loadu_ps(p); }
static inline v16 v16_fma(v16 w, float x, v16 acc) { return _mm512_fmadd_ps(w, _mm512_set1_ps(x), acc); }
static inline void v16_addto(float *y, v16 acc) { _mm512_storeu_ps(y, _mm512_add_ps(acc, _mm512_loadu_ps(y))); }
#define VECTOR_F32 1
#elif defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
typedef struct { __m256 lo, hi; } v16;
static inline v16 v16_zero(void) { return (v16){_mm256_setzero_ps(), _mm256_setzero_ps()}; }
static inline v16 v16_load(const float *p) { return (v16){_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8)}; }
static inline v16 v16_fma(v16 w, float x, v16 acc) {
    __m256 b = _mm256_set1_ps(x);
    return (v16){_mm256_fmadd_ps(w.lo, b, acc.lo), _mm256_fmadd_ps(w.hi, b, acc.hi)};
}
static inline void v16_addto(float *y, v16 acc) {
    _mm256_storeu_ps(y, _mm256_add_ps(acc.lo, _mm256_loadu_ps(y)));
    _mm256_storeu_ps(y + 8, _mm256_add_ps(acc.hi, _mm256_loadu_ps(y + 8)));
}
#define VECTOR_F32 1
#else
typedef struct { float r[16]; } v16;
static inline v16 v16_zero(void) { return (v16){{0}}; }
static inline v16 v16_load(const float *p) { v16 v; memcpy(v.r, p, sizeof v.r); return v; }
static inline v16 v16_fma(v16 w, float x, v16 acc) {
    for (int r = 0; r < 16; r++) acc.r[r] = fmaf(w.r[r], x, acc.r[r]);
    return acc;
}
static inline void v16_addto(float *y, v16 acc) { for (int r = 0; r < 16; r++) y[r] += acc.r[r]; }
#endif

/* Every product below keeps one fp32 accumulator per (16 rows, stream), sums the columns (or
 * column pairs) into it in order from zero, then adds it to y. A stream's numbers therefore do not
 * depend on how many streams run beside it nor on the tile it falls in: a batch row equals the
 * lone stream bit for bit. Tiles of NB row blocks x NS streams load each weight column once per
 * NS streams; always_inline with constant NB, NS keeps the accumulators in registers. */
#define MAXNB 8
#define MAXNS 8

/* fp32 W packed [R/16][K][16]; x (streams, ld ldx) fp32; y (streams, ld ldy). */
static inline __attribute__((always_inline)) void tile_f32(const float *w, int K, const float *x, int ldx, float *y,
                                                           int ldy, int NB, int NS) {
    v16 acc[MAXNB][MAXNS];
    for (int i = 0; i < NB; i++)
        for (int j = 0; j < NS; j++) acc[i][j] = v16_zero();
    for (int k = 0; k < K; k++) {
        v16 wr[MAXNB];
        for (int i = 0; i < NB; i++) wr[i] = v16_load(w + (size_t)i * 16 * K + 16 * k);
        for (int j = 0; j < NS; j++) {
            float xj = x[(size_t)j * ldx + k];
            for (int i = 0; i < NB; i++) acc[i][j] = v16_fma(wr[i], xj, acc[i][j]);
        }
    }
    for (int i = 0; i < NB; i++)
        for (int j = 0; j < NS; j++) v16_addto(y + (size_t)j * ldy + 16 * i, acc[i][j]);
}

/* bf16 W packed [R/16][K/2][16][2]. With AVX512-BF16, a: the streams' inputs rounded to bf16
 * (lda in pairs) and one vdpbf16ps per column pair; elsewhere a: the fp32 inputs themselves
 * (lda in pairs) and the weights widened exactly. */
static inline __attribute__((always_inline)) void tile_bf16(const uint16_t *w, int K, const void *a, int lda, float *y,
                                                            int ldy, int NB, int NS) {
#if defined(__AVX512BF16__)
    const uint32_t *ap = a;
    __m512 acc[MAXNB][MAXNS];
    for (int i = 0; i < NB; i++)
        for (int j = 0; j < NS; j++) acc[i][j] = _mm512_setzero_ps();
    for (int p = 0; p < K / 2; p++) {
        __m512i wr[MAXNB];
        for (int i = 0; i < NB; i++) wr[i] = _mm512_loadu_si512(w + (size_t)i * 16 * K + 32 * p);
        for (int j = 0; j < NS; j++) {
            __m512bh xj = (__m512bh)_mm512_set1_epi32(ap[(size_t)j * lda + p]);
            for (int i = 0; i < NB; i++) acc[i][j] = _mm512_dpbf16_ps(acc[i][j], (__m512bh)wr[i], xj);
        }
    }
    for (int i = 0; i < NB; i++)
        for (int j = 0; j < NS; j++) {
            float *yy = y + (size_t)j * ldy + 16 * i;
            _mm512_storeu_ps(yy, _mm512_add_ps(acc[i][j], _mm512_loadu_ps(yy)));
        }
#else
    const float *x = a;
    v16 acc[MAXNB][MAXNS];
    for (int i = 0; i < NB; i++)
        for (int j = 0; j < NS; j++) acc[i][j] = v16_zero();
    for (int p = 0; p < K / 2; p++) {
        v16 even[MAXNB], odd[MAXNB];
        for (int i = 0; i < NB; i++) {
            float e[16], o[16];
            const uint16_t *wp = w + (size_t)i * 16 * K + 32 * p;
            for (int r = 0; r < 16; r++) e[r] = bf16_to_f32(wp[2 * r]), o[r] = bf16_to_f32(wp[2 * r + 1]);
            even[i] = v16_load(e), odd[i] = v16_load(o);
        }
        for (int j = 0; j < NS; j++) {
            float x0 = x[(size_t)j * 2 * lda + 2 * p], x1 = x[(size_t)j * 2 * lda + 2 * p + 1];
            for (int i = 0; i < NB; i++) acc[i][j] = v16_fma(odd[i], x1, v16_fma(even[i], x0, acc[i][j]));
        }
    }
    for (int i = 0; i < NB; i++)
        for (int j = 0; j < NS; j++) v16_addto(y + (size_t)j * ldy + 16 * i, acc[i][j]);
#endif
}

/* Which tile sizes a product uses. One stream: ONE_NB row blocks at a time (independent sums hide
 * the latency of the multiply-adds). Several: MANY_NB row blocks x MANY_NS streams (each weight
 * load serves MANY_NS streams). Sized to the registers: 32 AVX-512 ones, 16 AVX2 ones holding
 * half a column each. The caller pads several streams to a multiple of 8 (tile_streams). */
#if defined(__AVX512F__)
#define ONE_NB 8
#define MANY_NB 2
#define MANY_NS 8
#else
#define ONE_NB 4
#define MANY_NB 1
#define MANY_NS 4
#endif
#define TILED(TILE, W_OF, X_OF, LDX)                                                                          \
    do {                                                                                                       \
        int blocks = R / 16, nbt = B == 1 ? ONE_NB : MANY_NB, tiles = (blocks + nbt - 1) / nbt;                \
        _Pragma("omp parallel for num_threads(nthreads) schedule(static) if (tiles >= 4 && nthreads > 1)")   \
        for (int t = 0; t < tiles; t++) {                                                                      \
            int b0 = t * nbt, nb = blocks - b0 < nbt ? blocks - b0 : nbt, s = 0;                               \
            for (; B > 1 && s + MANY_NS <= B; s += MANY_NS) {                                                  \
                if (nb == MANY_NB) TILE(W_OF(b0), K, X_OF(s), LDX, y + (size_t)s * ldy + 16 * b0, ldy, MANY_NB, MANY_NS); \
                else                                                                                           \
                    for (int i = 0; i < nb; i++)                                                               \
                        TILE(W_OF(b0 + i), K, X_OF(s), LDX, y + (size_t)s * ldy + 16 * (b0 + i), ldy, 1, MANY_NS); \
            }                                                                                                  \
            for (; s < B; s++) {                                                                               \
                if (nb == ONE_NB) TILE(W_OF(b0), K, X_OF(s), LDX, y + (size_t)s * ldy + 16 * b0, ldy, ONE_NB, 1); \
                else                                                                                           \
                    for (int i = 0; i < nb; i++)                                                               \
                        TILE(W_OF(b0 + i), K, X_OF(s), LDX, y + (size_t)s * ldy + 16 * (b0 + i), ldy, 1, 1);   \
            }                                                                                                  \
        }                                                                                                      \
    } while (0)

/* y (B, ld ldy) += x (B, K, ld ldx) @ W.T, W fp32 packed with R rows (padded to 16). */
static void gemm_f32(const float *w, int R, int K, const float *x, int ldx, int B, float *y, int ldy, int nthreads) {
#define W_F32(b) (w + (size_t)(b) * 16 * K)
#define X_F32(s) (x + (size_t)(s) * ldx)
    TILED(tile_f32, W_F32, X_F32, ldx);
}

/* The same with W bf16 packed; scratch: B * K halves (or unused). x's ld is K. */
static void gemm_bf16(const uint16_t *w, int R, int K, const float *x, int B, float *y, int ldy, void *scratch,
                      int nthreads) {
#if defined(__AVX512BF16__)
    uint16_t *xb = scratch;
    for (size_t i = 0; i < (size_t)B * K; i++) xb[i] = f32_to_bf16(x[i]);
    const void *a = xb;
#else
    const void *a = x;
    (void)scratch;
#endif
#define W_BF16(b) (w + (size_t)(b) * 16 * K)
#if defined(__AVX512BF16__)
#define X_BF16(s) ((const uint32_t *)a + (size_t)(s) * (K / 2))
#else
#define X_BF16(s) ((const float *)a + (size_t)(s) * K)
#endif
    TILED(tile_bf16, W_BF16, X_BF16, K / 2);
}

/* What several streams can use here (Kernel.supports): 1 AMX tiles (once granted), 2 bf16 dot
 * products, 4 vector fp32 multiply-adds. */
static int amx_ready;
int charrnn_batch_caps(void) {
    int caps = amx_ready;
#if defined(__AVX512BF16__)
    caps |= 2;
#endif
#if defined(VECTOR_F32)
    caps |= 4;
#endif
    return caps;
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
int charrnn_amx_init(void) {
    amx_ready = syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XTILEDATA */) == 0;
    return amx_ready;
}

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

/* ---------------------------------------------------------------- the LSTM, B streams */

typedef struct {
    int32_t layers, H, V, bf16, amx, nthreads, rows; /* amx: AMX tiles for several streams; rows: 4H padded to 16 */
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

/* Several streams are computed in whole tiles of 8: the padding rows (zeros in, ignored out) cost
 * less than the narrow tiles a remainder would need. Bp >= that, as kernel.py pads to 16. */
static int tile_streams(const Net *n) { return n->B == 1 ? 1 : (n->B + 7) / 8 * 8; }

static void products(const Net *n, const void *w, int K, const float *x) {
#if defined(HAVE_AMX)
    if (n->B > 1 && n->bf16 && n->amx && amx_ready) {
        uint16_t *a = n->scratch;
        for (size_t i = 0; i < (size_t)n->Bp * K; i++) a[i] = f32_to_bf16(x[i]);
        gemm_amx(w, n->rows, K, a, n->Bp, n->gates, n->nthreads);
        return;
    }
#endif
    int B = tile_streams(n);
    if (n->bf16) gemm_bf16(w, n->rows, K, x, B, n->gates, n->rows, n->scratch, n->nthreads);
    else gemm_f32(w, n->rows, K, x, K, B, n->gates, n->rows, n->nthreads);
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
    gemm_f32(n->head_w, n->head_rows, n->head_K, h, n->K[n->layers - 1], tile_streams(n), n->logits, n->head_rows,
             n->nthreads);
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
