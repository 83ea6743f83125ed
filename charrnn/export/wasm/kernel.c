/* charrnn.js's matrix-vector product in WebAssembly SIMD: 13-15x its plain JavaScript loop on an
 * AMD EPYC in Node 20 (bench/export_speed.py), where the product is nearly all of a token's time.
 *
 * Built by build.py (Debian's clang and wasm-ld: apt-get install clang lld) and embedded in
 * web/charrnn.js as base64; charrnn.js runs its own JavaScript product where the browser has no
 * WebAssembly SIMD (both agree with the native kernel to float rounding).
 *
 * The weights are packed as the native kernel packs them in fp32 (kernels.c): blocks of 16 rows,
 * [R/16][K][16], so one column of 16 rows is four vector loads and no horizontal sums are needed.
 * Each row's sum runs over the columns in order from zero, then is added to y, as there; the
 * difference is that WebAssembly SIMD has no fused multiply-add (a product and a sum each round).
 */
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
