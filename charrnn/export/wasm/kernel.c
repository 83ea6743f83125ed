/* charrnn.js's hot loops in WebAssembly SIMD: the matrix-vector product (10-15x its plain
 * JavaScript loop alone on an AMD EPYC in Node 20, about 6x for a whole token: docs/export.md,
 * bench/export_speed.py) and the placing of the
 * weights on loading (widened from fp16 and packed), which runs in a fresh Web Worker where
 * JavaScript is still cold: these loops cost 30-40 ms there in JavaScript, about 1 ms here.
 *
 * Built by build.py (Debian's clang and wasm-ld: apt-get install clang lld) and embedded in
 * web/charrnn.js as base64; charrnn.js runs its own JavaScript loops where the browser has no
 * WebAssembly SIMD. Both agree with charrnn's native kernel to float rounding.
 *
 * The weights are packed as the native kernel packs them in fp32 (kernels.c): blocks of 16 rows,
 * [R/16][K][16], so one column of 16 rows is four vector loads and no horizontal sums are needed.
 * Each row's sum runs over the columns in order from zero, then is added to y, as there; the
 * difference is that WebAssembly SIMD has no fused multiply-add (a product and a sum each round).
 * (Row-major dot products with horizontal sums measured 30% slower.)
 */
#include <stdint.h>
#include <wasm_simd128.h>

#define EXPORT(name) __attribute__((export_name(name)))

/* y[0..R) += W x, W packed [R/16][K][16] (R a multiple of 16), x (K), y (R); all byte offsets in
 * the module's memory. Two row blocks at a time: eight independent sums hide the add latency. */
EXPORT("matvec") void matvec(const float *w, int R, int K, const float *x, float *y) {
    int blocks = R / 16, b = 0;
    for (; b + 1 < blocks; b += 2) {
        const float *p = w + (long)b * 16 * K, *q = p + 16 * K;
        v128_t a0 = wasm_f32x4_splat(0.0f), a1 = a0, a2 = a0, a3 = a0, c0 = a0, c1 = a0, c2 = a0, c3 = a0;
        for (int k = 0; k < K; k++, p += 16, q += 16) {
            v128_t xk = wasm_f32x4_splat(x[k]);
            a0 = wasm_f32x4_add(a0, wasm_f32x4_mul(wasm_v128_load(p), xk));
            a1 = wasm_f32x4_add(a1, wasm_f32x4_mul(wasm_v128_load(p + 4), xk));
            a2 = wasm_f32x4_add(a2, wasm_f32x4_mul(wasm_v128_load(p + 8), xk));
            a3 = wasm_f32x4_add(a3, wasm_f32x4_mul(wasm_v128_load(p + 12), xk));
            c0 = wasm_f32x4_add(c0, wasm_f32x4_mul(wasm_v128_load(q), xk));
            c1 = wasm_f32x4_add(c1, wasm_f32x4_mul(wasm_v128_load(q + 4), xk));
            c2 = wasm_f32x4_add(c2, wasm_f32x4_mul(wasm_v128_load(q + 8), xk));
            c3 = wasm_f32x4_add(c3, wasm_f32x4_mul(wasm_v128_load(q + 12), xk));
        }
        float *yb = y + 16 * b;
        wasm_v128_store(yb, wasm_f32x4_add(wasm_v128_load(yb), a0));
        wasm_v128_store(yb + 4, wasm_f32x4_add(wasm_v128_load(yb + 4), a1));
        wasm_v128_store(yb + 8, wasm_f32x4_add(wasm_v128_load(yb + 8), a2));
        wasm_v128_store(yb + 12, wasm_f32x4_add(wasm_v128_load(yb + 12), a3));
        wasm_v128_store(yb + 16, wasm_f32x4_add(wasm_v128_load(yb + 16), c0));
        wasm_v128_store(yb + 20, wasm_f32x4_add(wasm_v128_load(yb + 20), c1));
        wasm_v128_store(yb + 24, wasm_f32x4_add(wasm_v128_load(yb + 24), c2));
        wasm_v128_store(yb + 28, wasm_f32x4_add(wasm_v128_load(yb + 28), c3));
    }
    if (b < blocks) {
        const float *p = w + (long)b * 16 * K;
        v128_t a0 = wasm_f32x4_splat(0.0f), a1 = a0, a2 = a0, a3 = a0;
        for (int k = 0; k < K; k++, p += 16) {
            v128_t xk = wasm_f32x4_splat(x[k]);
            a0 = wasm_f32x4_add(a0, wasm_f32x4_mul(wasm_v128_load(p), xk));
            a1 = wasm_f32x4_add(a1, wasm_f32x4_mul(wasm_v128_load(p + 4), xk));
            a2 = wasm_f32x4_add(a2, wasm_f32x4_mul(wasm_v128_load(p + 8), xk));
            a3 = wasm_f32x4_add(a3, wasm_f32x4_mul(wasm_v128_load(p + 12), xk));
        }
        float *yb = y + 16 * b;
        wasm_v128_store(yb, wasm_f32x4_add(wasm_v128_load(yb), a0));
        wasm_v128_store(yb + 4, wasm_f32x4_add(wasm_v128_load(yb + 4), a1));
        wasm_v128_store(yb + 8, wasm_f32x4_add(wasm_v128_load(yb + 8), a2));
        wasm_v128_store(yb + 12, wasm_f32x4_add(wasm_v128_load(yb + 12), a3));
    }
}

static inline float half(uint32_t h) { /* an fp16 number as float32, exactly */
    uint32_t sign = (h & 0x8000u) << 16, e = (h >> 10) & 31, m = h & 1023, bits;
    if (e == 0) { /* zero or subnormal: m * 2^-24 */
        float v = (float)m * 0x1p-24f;
        __builtin_memcpy(&bits, &v, 4);
        bits |= sign;
    } else if (e == 31) {
        bits = sign | 0x7f800000u | (m << 13);
    } else {
        bits = sign | ((e + 112) << 23) | (m << 13);
    }
    float f;
    __builtin_memcpy(&f, &bits, 4);
    return f;
}

/* dst[0..n) = src[0..n), fp16 (f16 = 1) or float32 numbers, as float32: rows of a table. */
EXPORT("widen") void widen(const void *src, int f16, int n, float *dst) {
    if (f16)
        for (int i = 0; i < n; i++) dst[i] = half(((const uint16_t *)src)[i]);
    else
        for (int i = 0; i < n; i++) dst[i] = ((const float *)src)[i];
}

/* A matrix src (rows, cols) row-major, fp16 or float32, into columns col0.. of dst, a matrix of
 * K columns packed for matvec ([rows/16][K][16]; its padding rows are left as they are, zeros). */
EXPORT("pack") void pack(const void *src, int f16, int rows, int cols, float *dst, int K, int col0) {
    for (int r = 0; r < rows; r++) {
        float *d = dst + (long)(r >> 4) * 16 * K + (long)col0 * 16 + (r & 15);
        if (f16) {
            const uint16_t *s = (const uint16_t *)src + (long)r * cols;
            for (int k = 0; k < cols; k++) d[16 * k] = half(s[k]);
        } else {
            const float *s = (const float *)src + (long)r * cols;
            for (int k = 0; k < cols; k++) d[16 * k] = s[k];
        }
    }
}
